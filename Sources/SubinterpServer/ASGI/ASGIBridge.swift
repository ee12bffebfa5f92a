import Foundation
import Logging
import NIOCore
import Subinterpreters
import Synchronization

/// An ASGI app as `AppServer` runs it: requests and WebSocket connections go from the HTTP layer
/// to the worker loops (`ASGIApplication`), and what the app sends comes back through a sink
/// per request (`ASGIHTTPResponder`, `ASGIWebSocketResponder`).
///
/// Per request, one hop each way: the request is posted to a worker's mailbox from the
/// connection's event loop, and the response goes back in the worker's send batch, which the
/// worker flushes once per turn of its loop (`onLoopIteration`), so the responses one turn made
/// reach each NIO event loop in one hop.
final class ASGIBridge: LoadedApp {
    let application: ASGIApplication
    /// One per worker slot, flushed by that slot's worker thread.
    let batches: [HTTPSendBatch]
    let webSocketMaxSize: Int
    let logger: Logger

    /// Bodies up to this size that arrive whole are read before the app starts, and given with
    /// the request (one event, no demand round trip); larger and chunked ones are streamed.
    static let collectedBodyLimit = 64 << 10

    private init(application: ASGIApplication, batches: [HTTPSendBatch], webSocketMaxSize: Int, logger: Logger) {
        self.application = application
        self.batches = batches
        self.webSocketMaxSize = webSocketMaxSize
        self.logger = logger
    }

    /// Starts the workers (see `ASGIApplication.init`).
    static func start(
        configuration: ASGIConfiguration, webSocketMaxSize: Int, runtime: PythonRuntime, logger: Logger
    ) async throws -> ASGIBridge {
        let batches = (0..<max(configuration.workers, 0)).map { _ in HTTPSendBatch() }
        var configuration = configuration
        configuration.onLoopIteration = { index in batches[index].flush() }
        let application = try await ASGIApplication(configuration: configuration, runtime: runtime, logger: logger)
        return ASGIBridge(application: application, batches: batches, webSocketMaxSize: webSocketMaxSize, logger: logger)
    }

    // MARK: - LoadedApp

    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery {
        // `Expect: 100-continue` is answered when the app first asks for the body, so such a
        // body is always streamed.
        if head.expectsContinue || head.isChunked { return .stream }
        return (head.contentLength ?? 0) > Self.collectedBodyLimit ? .stream : .collect
    }

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange, finished: @escaping @Sendable () -> Void) {
        if request.head.wantsUpgrade, let upgrade = request.head.field("upgrade"),
            upgrade.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "websocket" })
        {
            ASGIWebSocketResponder.handshake(request, exchange, bridge: self, finished: finished)
            return
        }
        let responder = ASGIHTTPResponder(exchange: exchange, body: request.bodyStream, bridge: self, finished: finished)
        let head = ASGIRequestHead(request, scheme: "http")
        let started = request.body.withUnsafeReadableBytes { body in
            application.startHTTP(head, body: body, more: request.bodyStream != nil, sink: responder)
        }
        // A client that leaves is told (http.disconnect), whatever the app is waiting for; one
        // that only stops sending is told too (EOF is all the server sees), yet still answered.
        if let started {
            exchange.onClose { started.disconnected() }
            exchange.onInputClosed { started.inputClosed() }
        }
    }

    var activity: (busy: Int, queued: Int) {
        (application.workers.filter { $0.active.load(ordering: .relaxed) > 0 }.count, 0)
    }

    func shutdown(cancelPending: Bool) async {
        await application.shutdown(grace: cancelPending ? .zero : application.configuration.stopLimit)
    }

    /// The batch the worker running `exchange` flushes.
    func batch(for exchange: ASGIExchange) -> HTTPSendBatch {
        batches[exchange.worker.index]
    }
}

extension ASGIRequestHead {
    /// The head of `request` in the worker's layout: the header bytes as received.
    init(_ request: HTTPRequest, scheme: String) {
        let head = request.head
        let connection = request.connection
        self.init(
            method: head.methodString, target: head.targetString, version: head.version.minor == 0 ? "1.0" : "1.1", scheme: scheme,
            server: (connection.localHost, connection.localPort), client: (connection.remoteHost, connection.remotePort))
        head.bytes.withUnsafeReadableBytes { raw in
            for field in head.fields {
                addHeader(
                    name: UnsafeRawBufferPointer(rebasing: raw[Int(field.name.start)..<Int(field.name.end)]),
                    value: UnsafeRawBufferPointer(rebasing: raw[Int(field.value.start)..<Int(field.value.end)]))
            }
        }
    }
}

/// One HTTP request's answer: what the worker sends goes to the request's `HTTPExchange`, in the
/// worker's send batch; what the app asks of the body is read from the connection.
final class ASGIHTTPResponder: ASGIHTTPSink {
    private let exchange: HTTPExchange
    private let body: HTTPRequestBodyStream?
    private let bridge: ASGIBridge
    private let onFinished: @Sendable () -> Void
    private struct State {
        var asgi: ASGIExchange?
        var batch: HTTPSendBatch?
    }
    private let state = Mutex(State())

    init(exchange: HTTPExchange, body: HTTPRequestBodyStream?, bridge: ASGIBridge, finished: @escaping @Sendable () -> Void) {
        self.exchange = exchange
        self.body = body
        self.bridge = bridge
        self.onFinished = finished
    }

    func started(_ exchange: ASGIExchange) {
        let batch = bridge.batch(for: exchange)
        state.withLock { state in
            state.asgi = exchange
            state.batch = batch
        }
    }

    func respond(status: Int?, headers: ASGIHeaderList, body: UnsafeRawBufferPointer, more: Bool) -> ASGIWriteState {
        let (asgi, batch) = state.withLock { ($0.asgi, $0.batch) }
        var head: HTTPResponseHead?
        if let status {
            do {
                head = try Self.head(status: status, headers: headers, bodyHint: more ? 0 : body.count)
            } catch {
                bridge.logger.error(
                    "the app's response cannot be sent: \(error); answered 500 instead", metadata: ["target": "\(asgi?.target ?? "")"])
                exchange.fail(status: 500, reason: "Internal Server Error")
                return .closed
            }
        }
        var bytes: ByteBuffer?
        if body.count > 0 {
            var buffer = ByteBufferAllocator().buffer(capacity: body.count)
            buffer.writeBytes(body)
            bytes = buffer
        }
        switch exchange.send(head: head, body: bytes, end: !more, batch: batch) {
        case .ready:
            return .ready
        case .closed:
            return .closed
        case .wait(let writable):
            writable.whenComplete { result in
                switch result {
                case .success: asgi?.writable()
                case .failure: asgi?.disconnected()
                }
            }
            return .full
        }
    }

    /// The app's status and headers, checked and encoded.
    private static func head(status: Int, headers: ASGIHeaderList, bodyHint: Int) throws -> HTTPResponseHead {
        var head = try HTTPResponseHead(
            status: status, reason: HTTPResponseHead.reasonPhrase(for: status), capacity: 96 + headers.count * 40 + min(bodyHint, 16 << 10))
        var failure: (any Error)?
        headers.forEach { name, value in
            guard failure == nil else { return }
            do { try head.add(rawName: name, rawValue: value) } catch { failure = error }
        }
        if let failure { throw failure }
        return head
    }

    func wantsBody() {
        guard let body, let asgi = state.withLock({ $0.asgi }) else { return }
        let exchange = self.exchange
        body.readAvailable().whenComplete { result in
            switch result {
            case .success(let (bytes, end)):
                bytes.withUnsafeReadableBytes { asgi.body($0, more: !end) }
            case .failure(let error):
                // Too large, malformed, or the client left: answered here if no response has
                // begun (the connection closes after it), and the app hears of a disconnect.
                if let refused = error as? HTTPParseError {
                    exchange.fail(status: refused.status, reason: HTTPResponseHead.reasonPhrase(for: refused.status))
                }
                asgi.disconnected()
            }
        }
    }

    func finished(_ outcome: ASGIOutcome) {
        // The exchange holds this sink: letting go of it here breaks the cycle. (Calls still in
        // flight, a body read or a writability wait, hold it on their own until they complete.)
        state.withLock { state in
            state.asgi = nil
            state.batch = nil
        }
        switch outcome {
        case .completed:
            break
        case .failed(let status):
            exchange.fail(status: status, reason: HTTPResponseHead.reasonPhrase(for: status))
        case .disconnected:
            // The client left, or the response was already cut short: nothing more can go out
            // (this closes the connection if it somehow still waits for the rest).
            exchange.fail(status: 500, reason: "Internal Server Error")
        }
        onFinished()
    }
}
