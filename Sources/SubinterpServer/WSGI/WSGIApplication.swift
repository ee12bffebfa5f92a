import Foundation
import Logging
import NIOCore
import Subinterpreters
import Synchronization

/// One request as the HTTP layer hands it over: head complete, body read (bounded by
/// `maxBody`).
struct WSGIRequest: Sendable {
    var method: String
    var target: String
    var version: String
    var headers: [(String, String)]
    var body: [UInt8]
    var server: (host: String, port: Int)
    var client: (host: String, port: Int)
    var isHead: Bool
}

/// Where a worker sends the response of one request. Implemented by the HTTP layer; called on
/// the worker's thread, in order.
protocol WSGIResponder: Sendable {
    /// Whether the client went away (the worker then stops iterating and closes the iterable).
    var isClosed: Bool { get }
    /// Sets the response head; it goes out with the first body chunk or the end.
    func head(status: Int, reason: String, headers: [(String, String)])
    /// Sends body chunks; returns once the connection has room for more.
    func body(_ chunks: [[UInt8]], waiting: (() -> Void) -> Void)
    /// Sends the last chunks and ends the response (with the head, if it has not gone out).
    func end(_ chunks: [[UInt8]])
    /// The request failed: an error response if nothing was sent yet, else the connection closes.
    func fail(status: Int, reason: String)
}

/// The app, loaded in a pool of worker interpreters, and the path of a request through it.
final class WSGIApplication: Sendable {
    let app: String
    let pool: InterpreterPool
    let logger: Logger
    let timeout: Duration?
    private let nextRequest = Atomic<Int>(1)

    /// Starts the workers; each imports the app once. An app that imports an extension module
    /// refusing sub-interpreters fails here, with `subinterp check`'s message.
    init(app: String, workers: Int, maxRequests: Int?, timeout: Duration?, path: [String], runtime: PythonRuntime, logger: Logger) async throws {
        self.app = app
        self.logger = logger
        self.timeout = timeout
        var configuration = InterpreterPool.Configuration(
            workers: workers, setup: WSGIAdapter.setup(app: app, multiprocess: workers > 1), path: path,
            maxTasksPerWorker: maxRequests)
        // Under load the event loops need every core; a spinning idle worker would take one
        // (measured here: hello world 26k req/s with a 50 µs spin, 28–31k without).
        configuration.idleSpin = .zero
        do {
            pool = try await InterpreterPool(configuration: configuration, runtime: runtime, logger: logger)
        } catch let error as SubinterpreterError {
            if error.code == .incompatibleExtensionModule, let module = error.moduleName {
                throw SubinterpreterError(
                    .incompatibleExtensionModule,
                    "\(app) cannot run in a sub-interpreter: extension module '\(module)' does not support loading in subinterpreters "
                        + "(it needs multi-phase init and per-interpreter GIL support). Check your imports with `subinterp check`.",
                    pythonException: error.pythonException, moduleName: module)
            }
            throw SubinterpreterError(
                error.code, "could not load \(app): \(error.pythonException?.description ?? error.message)",
                pythonException: error.pythonException, moduleName: error.moduleName)
        }
    }

    /// Runs the request on a free worker and streams the response to `responder`.
    func handle(_ request: WSGIRequest, responder: any WSGIResponder, finished: @escaping @Sendable (Int) -> Void) {
        let id = nextRequest.add(1, ordering: .relaxed).oldValue
        let logger = self.logger
        let arguments: [PythonValue] = [
            PythonValue(id), .string(request.method), .string(request.target), .string(request.version),
            .list(request.headers.map { .tuple([.string($0.0), .string($0.1)]) }), .bytes(request.body),
            .tuple([.string(request.server.host), PythonValue(request.server.port)]),
            .tuple([.string(request.client.host), PythonValue(request.client.port)]),
        ]
        let completion: @Sendable (Result<Int, any Error>) -> Void = { result in
            switch result {
            case .success(let status):
                finished(status)
            case .failure(let error as SubinterpreterError) where error.code == .timedOut:
                logger.error("request timed out; its Python code was interrupted", metadata: ["request": "\(id)", "target": "\(request.target)"])
                responder.fail(status: 504, reason: "Gateway Timeout")
                finished(504)
            case .failure(let error as SubinterpreterError) where error.code == .interpreterClosed || error.code == .cancelled:
                responder.fail(status: 503, reason: "Service Unavailable")
                finished(503)
            case .failure(let error):
                let detail = (error as? SubinterpreterError).map { $0.pythonException?.traceback ?? $0.message } ?? "\(error)"
                logger.error("application error\n\(detail)", metadata: ["request": "\(id)", "target": "\(request.target)"])
                responder.fail(status: 500, reason: "Internal Server Error")
                finished(500)
            }
        }
        do {
            try pool.submit(timeout: timeout, { python -> Int in
                try Self.run(python, id: id, arguments: arguments, isHead: request.isHead, responder: responder)
            }, completion: completion)
        } catch {
            responder.fail(status: 503, reason: "Service Unavailable")
            finished(503)
        }
    }

    /// On the worker's thread: start the app, send the head and each chunk, close the iterable.
    private static func run(
        _ python: PythonContext, id: Int, arguments: [PythonValue], isHead: Bool, responder: any WSGIResponder
    ) throws -> Int {
        let started = try python.resolve("_wsgi_start").call(arguments: arguments).value
        guard case .tuple(let parts) = started, parts.count == 5, let status = parts[0].intValue,
            let reason = parts[1].stringValue, let headerList = parts[2].arrayValue, let firstChunks = parts[3].arrayValue,
            let done = parts[4].boolValue
        else {
            throw SubinterpreterError(.runtimeFailed, "the WSGI adapter returned \(started)")
        }
        let headers = headerList.compactMap { header -> (String, String)? in
            guard let pair = header.arrayValue, pair.count == 2, let name = pair[0].stringValue, let value = pair[1].stringValue
            else { return nil }
            return (name, value)
        }
        responder.head(status: status, reason: reason, headers: headers)
        var chunks = firstChunks
        var finished = done
        while true {
            let bytes = isHead ? [] : chunks.compactMap { chunk -> [UInt8]? in
                if case .bytes(let b) = chunk { return b }
                return nil
            }
            if finished {
                // Head, body and end in one hop to the event loop: most responses are one chunk.
                responder.end(bytes)
                return status
            }
            if !bytes.isEmpty {
                responder.body(bytes) { wait in python.withGILReleased(wait) }
            }
            if responder.isClosed {
                _ = try python.resolve("_wsgi_close").call(arguments: [PythonValue(id)])
                return 499
            }
            let next = try python.resolve("_wsgi_next").call(arguments: [PythonValue(id)]).value
            guard case .tuple(let more) = next, more.count == 2, let list = more[0].arrayValue, let end = more[1].boolValue else {
                throw SubinterpreterError(.runtimeFailed, "the WSGI adapter returned \(next)")
            }
            chunks = list
            finished = end
        }
    }
}
