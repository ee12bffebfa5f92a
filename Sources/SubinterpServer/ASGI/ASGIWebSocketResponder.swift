import Logging
import NIOCore
import Synchronization

/// One ASGI WebSocket connection, from the handshake to the close. Until the app accepts, the
/// connection is still an HTTP exchange: a close then is a denial (403), an error a 500. Once it
/// accepts, the 101 goes out, the connection leaves HTTP for `WebSocketConnection`, and messages
/// flow both ways; the app's sends go out in its worker's send batch, like HTTP responses.
final class ASGIWebSocketResponder: ASGIWebSocketSink {
    private enum Phase {
        /// Still HTTP: the app has neither accepted nor denied.
        case handshake
        /// Accepted: the connection speaks WebSocket.
        case open(WebSocketConnection)
        /// Denied, or failed before accepting: an HTTP response went out.
        case refused
    }
    private struct State {
        var phase = Phase.handshake
        var asgi: ASGIExchange?
        var batch: HTTPSendBatch?
    }

    private let exchange: HTTPExchange
    private let key: String
    private let bridge: ASGIBridge
    private let onFinished: @Sendable () -> Void
    private let state = Mutex(State())

    private init(exchange: HTTPExchange, key: String, bridge: ASGIBridge, finished: @escaping @Sendable () -> Void) {
        self.exchange = exchange
        self.key = key
        self.bridge = bridge
        self.onFinished = finished
    }

    /// A request that asks for a WebSocket: an invalid handshake gets 400 (426 for another
    /// version) and never reaches the app; a valid one starts the app's connection.
    static func handshake(_ request: HTTPRequest, _ exchange: HTTPExchange, bridge: ASGIBridge, finished: @escaping @Sendable () -> Void) {
        let key: String
        switch WebSocketHandshake.validate(request.head) {
        case .failure(let refusal):
            refuse(exchange, refusal)
            finished()
            return
        case .success(let valid):
            key = valid
        }
        let responder = ASGIWebSocketResponder(exchange: exchange, key: key, bridge: bridge, finished: finished)
        let started = bridge.application.startWebSocket(ASGIRequestHead(request, scheme: "ws"), sink: responder)
        // A client that leaves during the handshake (after it, the WebSocket connection tells).
        if let started { exchange.onClose { started.disconnected(code: 1006) } }
    }

    private static func refuse(_ exchange: HTTPExchange, _ refusal: WebSocketHandshake.Refusal) {
        var head = HTTPResponseHead.server(status: refusal.status, reason: HTTPResponseHead.reasonPhrase(for: refusal.status))
        try! head.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        if refusal.status == 426 { try! head.add(name: "Sec-WebSocket-Version", value: "13") }
        let body = "\(refusal.status) \(HTTPResponseHead.reasonPhrase(for: refusal.status)): \(refusal.detail)\n"
        exchange.send(head: head, body: ByteBuffer(string: body), end: true)
    }

    func started(_ exchange: ASGIExchange) {
        let batch = bridge.batch(for: exchange)
        state.withLock { state in
            state.asgi = exchange
            state.batch = batch
        }
    }

    // MARK: - From the worker

    func accept(subprotocol: String?, headers: ASGIHeaderList) -> ASGIWriteState {
        guard let asgi = state.withLock({ $0.asgi }) else { return .closed }
        var head: HTTPResponseHead
        do {
            head = try HTTPResponseHead(status: 101, reason: "Switching Protocols")
            try head.add(name: "Upgrade", value: "websocket")
            try head.add(name: "Sec-WebSocket-Accept", value: WebSocketHandshake.accept(key: key))
            if let subprotocol { try head.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
            var failure: (any Error)?
            headers.forEach { name, value in
                guard failure == nil else { return }
                do { try head.add(rawName: name, rawValue: value) } catch { failure = error }
            }
            if let failure { throw failure }
        } catch {
            bridge.logger.error("the app's websocket.accept cannot be sent: \(error); answered 500 instead", metadata: ["target": "\(asgi.target)"])
            state.withLock { $0.phase = .refused }
            exchange.fail(status: 500, reason: "Internal Server Error")
            asgi.disconnected(code: 1006)
            return .closed
        }
        let connection = WebSocketConnection(
            eventLoop: exchange.eventLoop, maxMessageSize: bridge.webSocketMaxSize,
            events: .init(
                message: { message, text in message.withUnsafeReadableBytes { asgi.message($0, text: text) } },
                closed: { code, reason in asgi.disconnected(code: code, reason: reason) }))
        let proceed = state.withLock { state -> Bool in
            guard case .handshake = state.phase else { return false }
            state.phase = .open(connection)
            return true
        }
        guard proceed else { return .closed }
        exchange.upgrade(head: head) { channel in
            channel.eventLoop.makeCompletedFuture { try connection.addHandlers(to: channel) }
        }.whenFailure { _ in
            // The client left before the switch.
            connection.markClosed(code: 1006, reason: "")
        }
        return .ready
    }

    func send(_ message: UnsafeRawBufferPointer, text: Bool) -> ASGIWriteState {
        let (phase, asgi, batch) = state.withLock { ($0.phase, $0.asgi, $0.batch) }
        guard case .open(let connection) = phase else { return .closed }
        var buffer = ByteBufferAllocator().buffer(capacity: message.count)
        buffer.writeBytes(message)
        switch connection.send(buffer, text: text, batch: batch) {
        case .ready:
            return .ready
        case .closed:
            return .closed
        case .wait(let writable):
            writable.whenComplete { result in
                if case .success = result { asgi?.writable() }
            }
            return .full
        }
    }

    func close(code: Int, reason: String) {
        let (phase, asgi) = state.withLock { state -> (Phase, ASGIExchange?) in
            let phase = state.phase
            if case .handshake = phase { state.phase = .refused }
            return (phase, state.asgi)
        }
        switch phase {
        case .handshake:
            // websocket.close before websocket.accept: the connection is denied.
            exchange.fail(status: 403, reason: "Forbidden")
            asgi?.disconnected(code: 1006)
        case .open(let connection):
            connection.close(code: code, reason: reason)
        case .refused:
            break
        }
    }

    func wantsMessage() {
        if case .open(let connection) = state.withLock({ $0.phase }) { connection.demand() }
    }

    func finished(_ outcome: ASGIOutcome) {
        // The exchange holds this sink, and the connection's events hold the exchange: what this
        // sink holds is let go here, which breaks both cycles (the connection itself lives on
        // in its channel until it closes).
        let phase = state.withLock { state -> Phase in
            let phase = state.phase
            state.phase = .refused
            state.asgi = nil
            state.batch = nil
            return phase
        }
        switch (phase, outcome) {
        case (.handshake, .failed(let status)):
            exchange.fail(status: status, reason: HTTPResponseHead.reasonPhrase(for: status))
        case (.handshake, _):
            // Neither accepted nor closed, and not a failure: the client had left.
            exchange.fail(status: 500, reason: "Internal Server Error")
        case (.open(let connection), .failed):
            connection.close(code: 1011, reason: "")
        case (.open(let connection), _):
            // The app returned with the connection open: close it normally.
            connection.close(code: 1000, reason: "")
        case (.refused, _):
            break
        }
        onFinished()
    }
}
