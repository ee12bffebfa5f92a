import NIOCore
import Synchronization

/// What runs requests: the WSGI bridge, the metrics endpoint, later an ASGI bridge. The HTTP
/// layer (`HTTPConnectionHandler`) parses, frames, times and back-pressures; the application
/// only sees complete heads and an `HTTPExchange` to answer through.
protocol HTTPApplication: Sendable {
    /// How the connection delivers the body of this request: read whole first (bounded by the
    /// body limits; the default) or handed over as a stream right after the head.
    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery

    /// A request arrived. Called on the connection's event loop: return at once and answer
    /// through `exchange`, from any thread.
    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange)
}

extension HTTPApplication {
    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery { .collect }
}

enum HTTPBodyDelivery: Sendable {
    /// The whole body is read into memory before `handle` (WSGI).
    case collect
    /// `handle` is called after the head; the body arrives through `HTTPRequest.bodyStream`, read
    /// from the socket only as fast as it is consumed (ASGI).
    case stream
}

/// The two ends of a connection.
struct HTTPConnectionInfo: Sendable {
    var localHost: String
    var localPort: Int
    var remoteHost: String
    var remotePort: Int
}

struct HTTPRequest: Sendable {
    var head: HTTPRequestHead
    /// The whole body, for `.collect` (empty for `.stream`).
    var body: ByteBuffer
    /// The body as it arrives, for `.stream`.
    var bodyStream: HTTPRequestBodyStream?
    var connection: HTTPConnectionInfo
}

/// Why an exchange can take no more response bytes.
enum HTTPExchangeError: Error, Sendable {
    /// The connection closed: the client left, or a timeout dropped it.
    case connectionClosed
}

/// The response side of one request: a thread-safe handle that any thread (a worker, an async
/// task) uses to send the head, the body and the end, with back-pressure, or to fail the request.
///
/// Every `send` is one hop to the connection's event loop, in call order. Back-pressure follows
/// the channel's writability (its `WriteBufferWaterMark`): `send` answers `.wait(future)` while
/// the channel is above its high water mark, or while more than `maxInTransit` sends have not
/// reached the event loop yet, so little is queued behind what the channel has taken. A blocked
/// worker calls `future.wait()`; async code awaits `future.get()`. The future fails with
/// `HTTPExchangeError.connectionClosed` when the connection closes (the client left, or the write
/// timeout dropped a client that accepted nothing), which frees whoever waits.
final class HTTPExchange: Sendable {
    enum Readiness {
        /// Send more at once.
        case ready
        /// Send more once this succeeds; it fails if the connection closes meanwhile.
        case wait(EventLoopFuture<Void>)
        /// The connection is closed (or the response already ended): nothing more will be sent.
        case closed
    }

    private struct State {
        var inTransit = 0
        var writable: Bool
        var closed = false
        var ended = false
        var headSent = false
        var waiter: EventLoopPromise<Void>?
        var onClose: [@Sendable () -> Void] = []
        var inputClosed = false
        var onInputClosed: [@Sendable () -> Void] = []
        /// The response was written whole (or the protocol switched): callbacks are not kept.
        var finished = false
        /// A `fail` that waits for the sends made before it to reach the event loop.
        var pendingFail: (status: Int, reason: String)?
    }

    /// How many sends may be on their way to the event loop while the sender goes on: enough
    /// that a worker making chunks rarely waits for the loop to take them, few enough that the
    /// channel's writability reaches the worker within a few chunks.
    static let maxInTransit = 4

    let eventLoop: any EventLoop
    private let handler: NIOLoopBound<HTTPConnectionHandler>
    private let state: Mutex<State>
    /// Completes when the connection closes.
    let closeFuture: EventLoopFuture<Void>

    init(handler: HTTPConnectionHandler, eventLoop: any EventLoop, writable: Bool, closeFuture: EventLoopFuture<Void>) {
        self.eventLoop = eventLoop
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
        self.state = Mutex(State(writable: writable))
        self.closeFuture = closeFuture
    }

    /// Whether the connection closed (the client left, or a timeout dropped it).
    var isClosed: Bool { state.withLock { $0.closed } }

    /// Sends, in one hop: the head (once, before any body), body bytes (framed by the server:
    /// `Content-Length` or chunked), and with `end` the end of the response. When the head and
    /// the end come together, the server knows the whole body and sends its length.
    ///
    /// With a `batch`, the hop waits in it until its owner flushes it, together with the other
    /// sends gathered there (in call order: sends of one exchange must all go through the same
    /// batch, or none).
    @discardableResult
    func send(head: HTTPResponseHead? = nil, body: ByteBuffer? = nil, end: Bool = false, batch: HTTPSendBatch? = nil) -> Readiness {
        let readiness = state.withLock { state -> Readiness in
            guard !state.closed, !state.ended else { return .closed }
            precondition(head == nil || !state.headSent, "a response head was sent twice")
            precondition(head != nil || state.headSent, "response body sent before the head")
            state.headSent = true
            state.ended = end
            state.inTransit += 1
            if !end && (state.inTransit > Self.maxInTransit || !state.writable) {
                let promise = state.waiter ?? eventLoop.makePromise()
                state.waiter = promise
                return .wait(promise.futureResult)
            }
            return .ready
        }
        if case .closed = readiness { return .closed }
        let handler = self.handler
        let work: @Sendable () -> Void = {
            let writable = handler.value.send(from: self, head: head, body: body, end: end)
            self.hopArrived(writable: writable)
        }
        if let batch {
            batch.add(on: eventLoop, work)
        } else {
            eventLoop.execute(work)
        }
        return readiness
    }

    /// Fails the request: an error response (`Connection: close`) if no head went out yet,
    /// otherwise the connection closes, the only honest end of a response already begun. Sends
    /// made before it (still in a batch, say) reach the connection first.
    func fail(status: Int, reason: String) {
        let proceed = state.withLock { state -> Bool in
            guard !state.closed, !state.ended else { return false }
            state.ended = true
            if state.inTransit > 0 {
                state.pendingFail = (status, reason)
                return false
            }
            return true
        }
        guard proceed else { return }
        let handler = self.handler
        eventLoop.execute { handler.value.fail(from: self, status: status, reason: reason) }
    }

    /// Sends `head` (a 101) and hands the connection to another protocol: `configure` adds its
    /// handlers to the channel's pipeline (on the event loop), then the HTTP handler leaves the
    /// pipeline and passes on any bytes the client sent after the request.
    func upgrade(head: HTTPResponseHead, configure: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>) -> EventLoopFuture<Void> {
        let proceed = state.withLock { state -> Bool in
            guard !state.closed, !state.ended, !state.headSent else { return false }
            state.headSent = true
            state.ended = true
            return true
        }
        guard proceed else { return eventLoop.makeFailedFuture(HTTPExchangeError.connectionClosed) }
        let handler = self.handler
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute { handler.value.upgrade(from: self, head: head, configure: configure, promise: promise) }
        return promise.futureResult
    }

    /// Runs `callback` once when the connection closes before the response is done (at once if
    /// it has); it never runs once the response was written whole.
    func onClose(_ callback: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.closed { return true }
            if !state.finished { state.onClose.append(callback) }
            return false
        }
        if runNow { callback() }
    }

    /// Runs `callback` once when the client stops sending: it closed the connection, or only
    /// its sending side (EOF, which cannot be told apart), or the connection closed (at once if
    /// either happened).
    func onInputClosed(_ callback: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.inputClosed || state.closed { return true }
            if !state.finished { state.onInputClosed.append(callback) }
            return false
        }
        if runNow { callback() }
    }

    // MARK: - From the event loop

    /// The client stopped sending (EOF) while this exchange runs.
    func markInputClosed() {
        let callbacks = state.withLock { state -> [@Sendable () -> Void] in
            guard !state.inputClosed else { return [] }
            state.inputClosed = true
            defer { state.onInputClosed = [] }
            return state.onInputClosed
        }
        for callback in callbacks { callback() }
    }

    /// A `send` reached the event loop; `writable` is the channel's writability after it.
    private func hopArrived(writable: Bool) {
        let (waiter, failure) = state.withLock { state -> (EventLoopPromise<Void>?, (status: Int, reason: String)?) in
            state.inTransit -= 1
            state.writable = writable
            var failure: (status: Int, reason: String)?
            if state.inTransit == 0, let pending = state.pendingFail {
                state.pendingFail = nil
                failure = pending
            }
            return (Self.takeWaiterIfReady(&state), failure)
        }
        waiter?.succeed()
        if let failure { handler.value.fail(from: self, status: failure.status, reason: failure.reason) }
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

    /// The connection closed: wakes a waiting sender with an error and runs the close callbacks.
    func markClosed() {
        let (waiter, callbacks) = state.withLock { state -> (EventLoopPromise<Void>?, [@Sendable () -> Void]) in
            guard !state.closed else { return (nil, []) }
            state.closed = true
            let inputCallbacks = state.inputClosed ? [] : state.onInputClosed
            state.inputClosed = true
            defer {
                state.waiter = nil
                state.onClose = []
                state.onInputClosed = []
            }
            return (state.waiter, inputCallbacks + state.onClose)
        }
        waiter?.fail(HTTPExchangeError.connectionClosed)
        for callback in callbacks { callback() }
    }

    /// The response was written whole, or the connection switched protocols: later sends are
    /// refused, waiters released, and the close callbacks dropped unrun (what they hold, often
    /// something that holds this exchange, is let go).
    func markFinished() {
        let waiter = state.withLock { state -> EventLoopPromise<Void>? in
            state.ended = true
            state.finished = true
            state.onClose = []
            state.onInputClosed = []
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.succeed()
    }
}

/// A request body read from the socket only as fast as it is consumed (`.stream` delivery).
///
/// `read()` returns the next piece, or nil at the end; `readAvailable()` everything that has
/// arrived, with whether the body ends there. Both fail if the request cannot be read to its end
/// (a malformed chunk, too large, the client left). While more than `highWater` bytes wait
/// unread, the connection stops reading from the socket; it reads again once they are taken.
final class HTTPRequestBodyStream: Sendable {
    private struct State {
        var pieces: [ByteBuffer] = []
        var head = 0
        var buffered = 0
        var finished = false
        var error: (any Error)?
        var waiter: EventLoopPromise<ByteBuffer?>?
        /// The connection paused reading and wants to hear when there is room.
        var pausedReading = false
        /// A `readAvailable()` waiting for something to happen.
        var availableWaiter: EventLoopPromise<(ByteBuffer, end: Bool)>?
        var deliveryScheduled = false
        var askedForBody = false
    }

    let eventLoop: any EventLoop
    let highWater: Int
    private let state = Mutex(State())
    private let resume: @Sendable () -> Void
    private let onFirstRead: (@Sendable () -> Void)?

    /// - Parameters:
    ///   - resume: called when the reader made room after the connection paused reading.
    ///   - onFirstRead: called once, when the body is first asked for (where the connection
    ///     answers `Expect: 100-continue`).
    init(
        eventLoop: any EventLoop, highWater: Int = 64 << 10, resume: @escaping @Sendable () -> Void,
        onFirstRead: (@Sendable () -> Void)? = nil
    ) {
        self.eventLoop = eventLoop
        self.highWater = highWater
        self.resume = resume
        self.onFirstRead = onFirstRead
    }

    /// Whether this is the first time the body is asked for (then `onFirstRead` runs).
    private static func firstAsk(_ state: inout State) -> Bool {
        guard !state.askedForBody else { return false }
        state.askedForBody = true
        return true
    }

    /// Everything that has arrived and not been read yet, in one buffer, and whether the body
    /// ends with it; if nothing has, waits until something does. Fails as `read()` does.
    func readAvailable() -> EventLoopFuture<(ByteBuffer, end: Bool)> {
        enum Outcome {
            case value(ByteBuffer, end: Bool, resume: Bool)
            case failure(any Error)
            case wait(EventLoopFuture<(ByteBuffer, end: Bool)>)
        }
        let (outcome, first) = state.withLock { state -> (Outcome, Bool) in
            let first = Self.firstAsk(&state)
            if let taken = Self.takeAll(&state, highWater: highWater) { return (.value(taken.0, end: taken.end, resume: taken.resume), first) }
            if let error = state.error { return (.failure(error), first) }
            let promise = state.availableWaiter ?? eventLoop.makePromise()
            state.availableWaiter = promise
            return (.wait(promise.futureResult), first)
        }
        if first { onFirstRead?() }
        switch outcome {
        case .value(let buffer, let end, let resume):
            if resume { self.resume() }
            return eventLoop.makeSucceededFuture((buffer, end: end))
        case .failure(let error):
            return eventLoop.makeFailedFuture(error)
        case .wait(let future):
            return future
        }
    }

    /// Takes every buffered piece (joined), or the end; nil when there is nothing to take.
    private static func takeAll(_ state: inout State, highWater: Int) -> (ByteBuffer, end: Bool, resume: Bool)? {
        let count = state.pieces.count - state.head
        guard count > 0 || (state.finished && state.error == nil) else { return nil }
        var joined: ByteBuffer
        if count == 0 {
            joined = ByteBuffer()
        } else if count == 1 {
            joined = state.pieces[state.head]
        } else {
            joined = ByteBufferAllocator().buffer(capacity: state.buffered)
            for piece in state.pieces[state.head...] { joined.writeImmutableBuffer(piece) }
        }
        state.pieces.removeAll(keepingCapacity: true)
        state.head = 0
        state.buffered = 0
        let resume = state.pausedReading
        state.pausedReading = false
        return (joined, end: state.finished, resume: resume)
    }

    /// Something arrived for a waiting `readAvailable()`: answered once the connection is done
    /// with what it read now, so pieces that came together (a body and its end) go together.
    private func scheduleDelivery(_ state: inout State) -> Bool {
        guard state.availableWaiter != nil, !state.deliveryScheduled else { return false }
        state.deliveryScheduled = true
        return true
    }

    private func deliverAvailable() {
        enum Outcome {
            case value(EventLoopPromise<(ByteBuffer, end: Bool)>, ByteBuffer, Bool, resume: Bool)
            case failure(EventLoopPromise<(ByteBuffer, end: Bool)>, any Error)
        }
        let outcome = state.withLock { state -> Outcome? in
            state.deliveryScheduled = false
            guard let waiter = state.availableWaiter else { return nil }
            if let taken = Self.takeAll(&state, highWater: highWater) {
                state.availableWaiter = nil
                return .value(waiter, taken.0, taken.end, resume: taken.resume)
            }
            if let error = state.error {
                state.availableWaiter = nil
                return .failure(waiter, error)
            }
            return nil
        }
        switch outcome {
        case .value(let waiter, let buffer, let end, let resume):
            if resume { self.resume() }
            waiter.succeed((buffer, end: end))
        case .failure(let waiter, let error):
            waiter.fail(error)
        case nil:
            break
        }
    }

    private func wake(_ schedule: Bool) {
        guard schedule else { return }
        eventLoop.execute { self.deliverAvailable() }
    }

    /// The next piece of the body; nil at its end.
    func read() -> EventLoopFuture<ByteBuffer?> {
        let (outcome, first) = state.withLock { state -> (ReadOutcome, Bool) in
            let first = Self.firstAsk(&state)
            return (Self.takeOne(&state, highWater: highWater, eventLoop: eventLoop), first)
        }
        if first { onFirstRead?() }
        switch outcome {
        case .value(let piece, let resume):
            if resume { self.resume() }
            return eventLoop.makeSucceededFuture(piece)
        case .failure(let error):
            return eventLoop.makeFailedFuture(error)
        case .wait(let future, let resume):
            if resume { self.resume() }
            return future
        }
    }

    private enum ReadOutcome {
        case value(ByteBuffer?, resume: Bool)
        case failure(any Error)
        case wait(EventLoopFuture<ByteBuffer?>, resume: Bool)
    }

    private static func takeOne(_ state: inout State, highWater: Int, eventLoop: any EventLoop) -> ReadOutcome {
        if state.head < state.pieces.count {
            let piece = state.pieces[state.head]
            state.head += 1
            if state.head == state.pieces.count {
                state.pieces.removeAll(keepingCapacity: true)
                state.head = 0
            }
            state.buffered -= piece.readableBytes
            let resume = state.pausedReading && state.buffered < highWater
            if resume { state.pausedReading = false }
            return .value(piece, resume: resume)
        }
        if let error = state.error { return .failure(error) }
        if state.finished { return .value(nil, resume: false) }
        let promise = state.waiter ?? eventLoop.makePromise()
        state.waiter = promise
        let resume = state.pausedReading
        state.pausedReading = false
        return .wait(promise.futureResult, resume: resume)
    }

    // MARK: - From the connection (on the event loop)

    /// Adds a piece; false when the reader is behind by more than `highWater` (the connection
    /// then pauses reading until `resume` is called).
    func push(_ piece: ByteBuffer) -> Bool {
        let (waiter, full, schedule) = state.withLock { state -> (EventLoopPromise<ByteBuffer?>?, Bool, Bool) in
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, false, false)
            }
            state.pieces.append(piece)
            state.buffered += piece.readableBytes
            let full = state.buffered >= highWater
            if full { state.pausedReading = true }
            return (nil, full, scheduleDelivery(&state))
        }
        waiter?.succeed(piece)
        wake(schedule)
        return !full
    }

    /// Whether the connection should read more for this body now.
    var wantsMore: Bool { state.withLock { !$0.pausedReading } }

    func finish() {
        let (waiter, schedule) = state.withLock { state -> (EventLoopPromise<ByteBuffer?>?, Bool) in
            state.finished = true
            defer { state.waiter = nil }
            return (state.waiter, scheduleDelivery(&state))
        }
        waiter?.succeed(nil)
        wake(schedule)
    }

    func fail(_ error: any Error) {
        let (waiter, schedule) = state.withLock { state -> (EventLoopPromise<ByteBuffer?>?, Bool) in
            guard !state.finished, state.error == nil else { return (nil, false) }
            state.error = error
            defer { state.waiter = nil }
            return (state.waiter, scheduleDelivery(&state))
        }
        waiter?.fail(error)
        wake(schedule)
    }
}
