import CPython

/// How one request or WebSocket connection ended; its sink hears it exactly once.
enum ASGIOutcome: Sendable, Equatable {
    /// The response went out whole. WebSocket: the app returned after accepting; close the
    /// connection with 1000 if it is still open.
    case completed
    /// No complete response. Send `status` (500 app error, 503 unavailable, 504 timed out) if
    /// nothing went out yet; otherwise close the connection (WebSocket: close with 1011).
    case failed(status: Int)
    /// The client had gone; nothing more to send.
    case disconnected
}

/// What a sink says after taking bytes from the app.
enum ASGIWriteState: Sendable {
    /// Taken; the connection has room for more.
    case ready
    /// Taken; the app's next step waits until the sink's exchange is told `writable()`.
    case full
    /// The client is gone; nothing was sent (the app's `send` raises an OSError).
    case closed
}

/// Header fields as the app gave them: views valid only during the call they are passed to.
struct ASGIHeaderList {
    let base: UnsafePointer<cpy_asgi_header>?
    let count: Int

    /// Each name and value, in order.
    func forEach(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Void) {
        guard let base else { return }
        for i in 0..<count {
            let header = base[i]
            body(UnsafeRawBufferPointer(start: header.name, count: header.name_length),
                 UnsafeRawBufferPointer(start: header.value, count: header.value_length))
        }
    }

    /// A copy, as text (bytes that are not UTF-8 are repaired).
    var pairs: [(name: String, value: String)] {
        var pairs: [(name: String, value: String)] = []
        pairs.reserveCapacity(count)
        forEach { name, value in
            pairs.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return pairs
    }
}

/// Where an ASGI worker sends one HTTP response. Implemented by the HTTP layer. Every method
/// is called on the worker's thread, with the worker's GIL held: it must not block (queue the
/// bytes and return; flush them from the event loop).
protocol ASGIHTTPSink: AnyObject, Sendable {
    /// The exchange this sink answers for, before the worker hears of it: on the thread that
    /// started it, before any other call.
    func started(_ exchange: ASGIExchange)
    /// Response bytes: the head (`status` non-nil, once) with the first body bytes, then more
    /// body. `more` is false on the last call. `HEAD` requests get their body here too; the
    /// sink drops it. The views are valid only during the call.
    func respond(status: Int?, headers: ASGIHeaderList, body: UnsafeRawBufferPointer, more: Bool) -> ASGIWriteState
    /// The app awaits more request body and none is waiting: read the next chunk and give it to
    /// `ASGIExchange.body(_:more:)`. Also the moment to answer `Expect: 100-continue`.
    func wantsBody()
    /// The request ended; called exactly once, perhaps from another thread (a deadline).
    func finished(_ outcome: ASGIOutcome)
}

/// Where an ASGI worker sends what the app says on one WebSocket connection. Implemented by the
/// HTTP layer; same threading rules as `ASGIHTTPSink`.
protocol ASGIWebSocketSink: AnyObject, Sendable {
    /// As `ASGIHTTPSink.started`.
    func started(_ exchange: ASGIExchange)
    /// websocket.accept: complete the handshake with this subprotocol and extra headers.
    func accept(subprotocol: String?, headers: ASGIHeaderList) -> ASGIWriteState
    /// websocket.send: one whole message.
    func send(_ message: UnsafeRawBufferPointer, text: Bool) -> ASGIWriteState
    /// websocket.close: before `accept`, a denial (answer 403); after it, a close frame. Tell
    /// the exchange `disconnected(code:reason:)` once the connection is closed.
    func close(code: Int, reason: String)
    /// The app awaits a message and none is waiting: read the next and give it to
    /// `ASGIExchange.message(_:text:)`.
    func wantsMessage()
    /// The connection's app ended; called exactly once.
    func finished(_ outcome: ASGIOutcome)
}

extension ASGIHTTPSink {
    func started(_ exchange: ASGIExchange) {}
}

extension ASGIWebSocketSink {
    func started(_ exchange: ASGIExchange) {}
}
