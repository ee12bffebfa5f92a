import Foundation
import Logging
import NIOCore
import Subinterpreters
import Synchronization

/// The app, loaded in a pool of worker interpreters, and the path of a request through it: this
/// is the one place that uses the pool.
final class WSGIApplication: Sendable {
    let app: String
    let pool: InterpreterPool
    let logger: Logger
    let timeout: Duration?
    /// `--timeout` as the log says it, made once rather than per request.
    private let timeoutText: String
    private let nextRequest = Atomic<Int>(1)

    /// Starts the workers; each imports the app once. An app that imports an extension module
    /// refusing sub-interpreters fails here, with `subinterp check`'s message. With
    /// `kind: .main` the one worker runs the app in this process's main interpreter.
    /// `multiprocess`: other processes serve the same app too (`wsgi.multiprocess`).
    init(
        app: String, workers: Int, maxRequests: Int?, timeout: Duration?, path: [String], kind: InterpreterKind = .isolated,
        multiprocess: Bool = false, runtime: PythonRuntime, logger: Logger
    ) async throws {
        self.app = app
        self.logger = logger
        self.timeout = timeout
        self.timeoutText = timeout.map { String(format: "%g", $0.timeInterval) } ?? "?"
        var configuration = InterpreterPool.Configuration(
            workers: workers, setup: WSGIAdapter.setup(app: app, multiprocess: workers > 1 || multiprocess), path: path,
            maxTasksPerWorker: maxRequests)
        configuration.interpreterKind = kind
        // Under load the event loops need every core; a spinning idle worker would take one
        // (measured here: hello world 26k req/s with a 50 µs spin, 28–31k without).
        configuration.idleSpin = .zero
        do {
            pool = try await InterpreterPool(configuration: configuration, runtime: runtime, logger: logger)
        } catch let error as SubinterpreterError {
            throw AppLoadError.wrap(app: app, error)
        }
    }

    /// Runs the request on a free worker, which streams the response to `exchange`. `finished`
    /// runs once the worker is done with the request (whatever the outcome).
    ///
    /// `--timeout` counts from when the app starts; a request that waits that long in the queue
    /// without a free worker never runs and gets 503 (overloaded), not 504. The response's
    /// iterable is closed after the job whatever happened to it (a timeout or a cancel included):
    /// the pool runs that cleanup after the job, where no interrupt meant for the job can land.
    /// A worker that does not come back after its interrupt (blocked in C, or swallowing it) is
    /// abandoned and replaced by the pool; its log line names the request.
    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange, finished: @escaping @Sendable () -> Void) {
        let id = nextRequest.add(1, ordering: .relaxed).oldValue
        let logger = self.logger
        let environ = PythonValue.dict(WSGIEnvironment.items(for: request))
        let body = PythonValue.bytes(Array(request.body.readableBytesView))
        let target = request.head.targetString
        let limit = timeoutText
        let completion: @Sendable (Result<Void, any Error>) -> Void = { result in
            switch result {
            case .success:
                break
            case .failure(let error as SubinterpreterError) where error.code == .timedOut:
                logger.error(
                    "request timed out: its app ran longer than --timeout \(limit) s; its Python code was interrupted",
                    metadata: ["request": "\(id)", "target": "\(target)"])
                exchange.fail(status: 504, reason: "Gateway Timeout")
            case .failure(let error as SubinterpreterError) where error.code == .queueTimedOut:
                logger.warning(
                    "request refused with 503: it waited \(limit) s (--timeout) for a free worker and never ran",
                    metadata: ["request": "\(id)", "target": "\(target)"])
                exchange.fail(status: 503, reason: "Service Unavailable")
            case .failure(let error as SubinterpreterError) where error.code == .interpreterClosed || error.code == .cancelled:
                exchange.fail(status: 503, reason: "Service Unavailable")
            case .failure(let error):
                let detail = (error as? SubinterpreterError).map { $0.pythonException?.traceback ?? $0.message } ?? "\(error)"
                logger.error("application error\n\(detail)", metadata: ["request": "\(id)", "target": "\(target)"])
                exchange.fail(status: 500, reason: "Internal Server Error")
            }
            finished()
        }
        let response = ResponseState()
        let options = InterpreterPool.JobOptions(
            timeout: timeout, timeoutStart: .start, queueTimeout: timeout, label: "request \(id) \(request.head.methodString) \(target)",
            cleanup: { python in
                // Closes the iterable if the job did not end normally (a timeout, a cancel, an
                // error between two chunks); every normal end has closed it already.
                guard !response.settled else { return }
                _ = try? python.resolve("_wsgi_close").call(arguments: [PythonValue(id)])
            })
        do {
            try pool.submit(options: options, { python in
                try Self.run(python, id: id, environ: environ, body: body, exchange: exchange)
                response.settled = true
            }, completion: completion)
        } catch {
            exchange.fail(status: 503, reason: "Service Unavailable")
            finished()
        }
    }

    /// On the worker's thread: starts the app, sends the head with the first chunks (and the
    /// end, when the response is already whole: one hop to the event loop), then each further
    /// chunk, waiting with the GIL released while the connection is full, and closes the
    /// iterable if the client leaves.
    private static func run(_ python: PythonContext, id: Int, environ: PythonValue, body: PythonValue, exchange: HTTPExchange) throws {
        let started = try python.resolve("_wsgi_start").call(arguments: [PythonValue(id), environ, body]).value
        guard case .tuple(let parts) = started, parts.count == 5, let status = parts[0].intValue, let reason = parts[1].stringValue,
            let headerList = parts[2].arrayValue, let firstChunks = parts[3].arrayValue, let done = parts[4].boolValue
        else {
            throw SubinterpreterError(.runtimeFailed, "the WSGI adapter returned \(started)")
        }
        let head: HTTPResponseHead
        do {
            head = try responseHead(status: status, reason: reason, headers: headerList)
        } catch {
            if !done { _ = try? python.resolve("_wsgi_close").call(arguments: [PythonValue(id)]) }
            throw SubinterpreterError(.invalidArgument, "the app's response cannot be sent: \(error)")
        }
        var readiness = exchange.send(head: head, body: buffer(firstChunks), end: done)
        if done { return }
        while true {
            switch readiness {
            case .ready:
                break
            case .wait(let writable):
                let open = python.withGILReleased { (try? writable.wait()) != nil }
                if !open { readiness = .closed }
            case .closed:
                break
            }
            if case .closed = readiness {
                _ = try python.resolve("_wsgi_close").call(arguments: [PythonValue(id)])
                return
            }
            let next = try python.resolve("_wsgi_next").call(arguments: [PythonValue(id)]).value
            guard case .tuple(let more) = next, more.count == 2, let chunks = more[0].arrayValue, let end = more[1].boolValue else {
                throw SubinterpreterError(.runtimeFailed, "the WSGI adapter returned \(next)")
            }
            readiness = exchange.send(body: buffer(chunks), end: end)
            if end { return }
        }
    }

    /// The status line and headers the app gave, checked and encoded; throws (and the request
    /// gets 500) rather than drop or mangle a header.
    private static func responseHead(status: Int, reason: String, headers: [PythonValue]) throws -> HTTPResponseHead {
        var head = try HTTPResponseHead(status: status, reason: reason, capacity: 64 + headers.count * 48)
        for header in headers {
            guard let pair = header.arrayValue, pair.count == 2, let name = pair[0].stringValue, let value = pair[1].stringValue else {
                throw HTTPResponseHeaderError(description: "a response header is not a (str, str) pair: \(header)")
            }
            try head.add(name: name, value: value)
        }
        return head
    }

    private static func buffer(_ chunks: [PythonValue]) -> ByteBuffer? {
        var size = 0
        for case .bytes(let bytes) in chunks { size += bytes.count }
        guard size > 0 else { return nil }
        var buffer = ByteBufferAllocator().buffer(capacity: size)
        for case .bytes(let bytes) in chunks { buffer.writeBytes(bytes) }
        return buffer
    }
}

extension WSGIApplication: LoadedApp {
    /// A WSGI request reaches its worker only once it is whole.
    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery { .collect }

    var activity: (busy: Int, queued: Int) {
        let statistics = pool.statistics
        return (statistics.running, statistics.queued)
    }

    func shutdown(cancelPending: Bool) async {
        await pool.shutdown(cancelPending: cancelPending)
    }
}

/// Whether a request's job ended normally, so its response iterable is closed already.
/// `@unchecked Sendable`: only the request's worker thread touches it, in the job's body and
/// then in its cleanup, one after the other on that thread.
private final class ResponseState: @unchecked Sendable {
    var settled = false
}
