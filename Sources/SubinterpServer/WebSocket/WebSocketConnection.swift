import NIOCore
import NIOWebSocket
import Synchronization

/// One WebSocket connection after its opening handshake, as a thread-safe handle: any thread
/// sends messages and closes it, with back-pressure, as `HTTPExchange` does for a response. The
/// owner hears each whole message and the close through `Events`, on the connection's event
/// loop. The protocol itself (frames, fragments, control frames, limits) is `WebSocketHandler`'s.
final class WebSocketConnection: Sendable {
    struct Events: Sendable {
        /// One whole message, reassembled from its frames; text is valid UTF-8.
        var message: @Sendable (_ message: ByteBuffer, _ text: Bool) -> Void
        /// The connection closed, once: the close code and reason the client sent (1005 for a
        /// close frame without a code), the code the server closed with if the client broke the
        /// protocol, or 1006 if the connection dropped without a close frame.
        var closed: @Sendable (_ code: Int, _ reason: String) -> Void
    }

    enum Readiness {
        case ready
        /// Send more once this succeeds; it fails if the connection closes meanwhile.
        case wait(EventLoopFuture<Void>)
        case closed
    }

    private struct State {
        var handler: NIOLoopBound<WebSocketHandler>?
        var writable = true
        var inTransit = 0
        var waiter: EventLoopPromise<Void>?
        /// The connection is closed.
        var closed = false
        /// A close was asked for: nothing more is sent.
        var closing = false
        /// A close that waits for the sends before it to reach the event loop.
        var pendingClose: (code: Int, reason: String)?
    }

    /// As `HTTPExchange.maxInTransit`.
    static let maxInTransit = 4

    let eventLoop: any EventLoop
    /// Messages (and frames) larger than this close the connection with 1009.
    let maxMessageSize: Int
    let events: Events
    private let state = Mutex(State())

    init(eventLoop: any EventLoop, maxMessageSize: Int, events: Events) {
        self.eventLoop = eventLoop
        self.maxMessageSize = maxMessageSize
        self.events = events
    }

    /// The handlers that speak the protocol on `channel`, bound to this connection: add them
    /// once the handshake's response is written.
    func addHandlers(to channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxMessageSize)),
            WebSocketFrameEncoder(),
            WebSocketHandler(connection: self),
        ])
    }

    /// Sends one message in one frame (in `batch`, if given: see `HTTPExchange.send`).
    func send(_ message: ByteBuffer, text: Bool, batch: HTTPSendBatch? = nil) -> Readiness {
        let readiness = state.withLock { state -> Readiness in
            guard !state.closed, !state.closing else { return .closed }
            state.inTransit += 1
            if state.inTransit > Self.maxInTransit || !state.writable {
                let promise = state.waiter ?? eventLoop.makePromise()
                state.waiter = promise
                return .wait(promise.futureResult)
            }
            return .ready
        }
        if case .closed = readiness { return .closed }
        let work: @Sendable () -> Void = {
            let handler = self.state.withLock { $0.handler }
            let writable = handler?.value.sendMessage(message, text: text) ?? false
            self.hopArrived(writable: writable)
        }
        if let batch {
            batch.add(on: eventLoop, work)
        } else {
            eventLoop.execute(work)
        }
        return readiness
    }

    /// Closes with `code` and `reason` (once): a close frame after the messages sent before it,
    /// then the connection closes when the client answers, or after a few seconds.
    func close(code: Int, reason: String) {
        let now = state.withLock { state -> Bool in
            guard !state.closed, !state.closing else { return false }
            state.closing = true
            if state.inTransit > 0 {
                state.pendingClose = (code, reason)
                return false
            }
            return true
        }
        guard now else { return }
        eventLoop.execute {
            self.state.withLock { $0.handler }?.value.close(code: code, reason: reason)
        }
    }

    /// The owner took every message it was given: read more from the client.
    func demand() {
        eventLoop.execute {
            self.state.withLock { $0.handler }?.value.demand()
        }
    }

    // MARK: - From the event loop

    func attach(_ handler: NIOLoopBound<WebSocketHandler>) {
        state.withLock { $0.handler = handler }
    }

    private func hopArrived(writable: Bool) {
        let (waiter, close, handler) = state.withLock { state -> (EventLoopPromise<Void>?, (code: Int, reason: String)?, NIOLoopBound<WebSocketHandler>?) in
            state.inTransit -= 1
            state.writable = writable
            var close: (code: Int, reason: String)?
            if state.inTransit == 0, let pending = state.pendingClose {
                state.pendingClose = nil
                close = pending
            }
            return (Self.takeWaiterIfReady(&state), close, state.handler)
        }
        waiter?.succeed()
        if let close { handler?.value.close(code: close.code, reason: close.reason) }
    }

    func writabilityChanged(_ writable: Bool) {
        let waiter = state.withLock { state -> EventLoopPromise<Void>? in
            state.writable = writable
            return Self.takeWaiterIfReady(&state)
        }
        waiter?.succeed()
    }

    private static func takeWaiterIfReady(_ state: inout State) -> EventLoopPromise<Void>? {
        guard state.writable, state.inTransit <= Self.maxInTransit, let waiter = state.waiter else { return nil }
        state.waiter = nil
        return waiter
    }

    /// The connection closed (or never opened): later sends are refused, a waiting sender fails,
    /// and the owner hears `closed` once.
    func markClosed(code: Int, reason: String) {
        let (first, waiter) = state.withLock { state -> (Bool, EventLoopPromise<Void>?) in
            guard !state.closed else { return (false, nil) }
            state.closed = true
            state.handler = nil
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.fail(HTTPExchangeError.connectionClosed)
        if first { events.closed(code, reason) }
    }
}
