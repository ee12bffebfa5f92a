import CPython
import Synchronization

/// One HTTP request or WebSocket connection on an ASGI worker, as the host sees it: the HTTP
/// layer feeds it what the client sends (from any thread), the worker answers through its sink.
///
/// It ends exactly once, with the sink's `finished`: when the app's task ends on the worker,
/// when its deadline passes (504, and the task is cancelled), or when the server stops.
final class ASGIExchange: Sendable {
    enum Sink: Sendable {
        case http(any ASGIHTTPSink)
        case webSocket(any ASGIWebSocketSink)
    }

    /// A `cpy_asgi_stream`: what the worker finds this exchange's Python object by.
    struct Stream: @unchecked Sendable {
        // Safe: the pointer never changes, and the stream's reference count is atomic; its
        // other field is only touched on the worker's thread.
        let pointer: OpaquePointer
    }

    let id: UInt64
    let sink: Sink
    let worker: ASGIWorker
    /// The request target, for logs.
    let target: String
    /// When the host gives up on it (HTTP requests with a timeout only).
    let deadline: ContinuousClock.Instant?
    let stream: Stream
    private let running = Mutex(true)

    init(id: UInt64, sink: Sink, worker: ASGIWorker, target: String, deadline: ContinuousClock.Instant?, stream: Stream) {
        self.id = id
        self.sink = sink
        self.worker = worker
        self.target = target
        self.deadline = deadline
        self.stream = stream
        worker.exchangesAlive.add(1, ordering: .relaxed)
    }

    deinit {
        cpy_asgi_stream_release(stream.pointer)
        worker.exchangesAlive.subtract(1, ordering: .relaxed)
    }

    var isRunning: Bool { running.withLock { $0 } }

    // MARK: - From the HTTP layer (any thread)

    /// Request body bytes; `more` is false with the last of them. Give them when the sink was
    /// asked (`wantsBody`); bytes given earlier wait on the worker.
    func body(_ bytes: UnsafeRawBufferPointer, more: Bool) {
        worker.mailbox.post(CPY_ASGI_BODY, flags: more ? CPY_ASGI_MORE : 0, stream: stream.pointer, payload: bytes)
    }

    /// One whole WebSocket message (reassembled from its frames; text already checked as UTF-8).
    func message(_ bytes: UnsafeRawBufferPointer, text: Bool) {
        worker.mailbox.post(text ? CPY_ASGI_TEXT : CPY_ASGI_BINARY, stream: stream.pointer, payload: bytes)
    }

    /// The client went away (WebSocket: with this close code and reason; 1005 when its close
    /// frame had none, 1006 when the connection dropped without one).
    func disconnected(code: Int = 1005, reason: String = "") {
        var reason = reason
        reason.withUTF8 { text in
            _ = worker.mailbox.post(CPY_ASGI_DISCONNECT, number: Int64(code), stream: stream.pointer, payload: UnsafeRawBufferPointer(text))
        }
    }

    /// The client stopped sending (EOF). It may have closed the connection or only its sending
    /// side, which cannot be told apart: the app's `receive()` gives `http.disconnect`, as if it
    /// left, while what the app still sends goes out.
    func inputClosed() {
        worker.mailbox.post(CPY_ASGI_DISCONNECT, flags: CPY_ASGI_INPUT_ONLY, number: 1006, stream: stream.pointer)
    }

    /// The connection has room again after the sink answered `.full`.
    func writable() {
        worker.mailbox.post(CPY_ASGI_WRITABLE, stream: stream.pointer)
    }

    // MARK: - From the worker (its thread, GIL held)

    func send(_ message: UnsafePointer<cpy_asgi_message>) -> Int32 {
        // Under the lock, so a deadline cannot finish the exchange while bytes are going out.
        running.withLock { running -> ASGIWriteState in
            guard running else { return .closed }
            let m = message.pointee
            let headers = ASGIHeaderList(base: m.headers, count: m.header_count)
            let data = UnsafeRawBufferPointer(start: m.data, count: m.length)
            let text: String? = m.has_text != 0 ? String(decoding: UnsafeRawBufferPointer(start: m.text, count: m.text_length), as: UTF8.self) : nil
            switch (sink, m.kind) {
            case (.http(let sink), CPY_ASGI_RESPONSE):
                return sink.respond(status: m.status != 0 ? Int(m.status) : nil, headers: headers, body: data, more: m.more != 0)
            case (.webSocket(let sink), CPY_ASGI_ACCEPT):
                return sink.accept(subprotocol: text, headers: headers)
            case (.webSocket(let sink), CPY_ASGI_MESSAGE):
                return sink.send(data, text: m.more != 0)
            case (.webSocket(let sink), CPY_ASGI_CLOSE):
                sink.close(code: Int(m.status), reason: text ?? "")
                return .ready
            default:
                return .closed
            }
        }.code
    }

    func demand() {
        guard isRunning else { return }
        switch sink {
        case .http(let sink): sink.wantsBody()
        case .webSocket(let sink): sink.wantsMessage()
        }
    }

    // MARK: - Ending

    /// Ends the exchange with `outcome` unless it has ended; returns whether this call ended it.
    @discardableResult
    func end(_ outcome: ASGIOutcome) -> Bool {
        let ended = running.withLock { running -> Bool in
            guard running else { return false }
            running = false
            switch sink {
            case .http(let sink): sink.finished(outcome)
            case .webSocket(let sink): sink.finished(outcome)
            }
            return true
        }
        if ended { worker.exchangeEnded(self) }
        return ended
    }

    /// Ends the exchange from the host's side (deadline, shutdown) and cancels its task.
    func abandon(status: Int) {
        guard end(.failed(status: status)) else { return }
        worker.cancel(self)
    }
}

extension ASGIWriteState {
    var code: Int32 {
        switch self {
        case .ready: CPY_ASGI_READY
        case .full: CPY_ASGI_FULL
        case .closed: CPY_ASGI_CLOSED
        }
    }
}
