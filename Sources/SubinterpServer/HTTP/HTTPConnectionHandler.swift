import Logging
import NIOCore

/// One HTTP/1.1 connection, on its event loop: parses requests from the raw bytes
/// (`HTTPRequestParser`), hands each complete request to the application with an
/// `HTTPExchange`, frames and writes the response that comes back, and enforces the limits.
///
/// - **One request at a time.** Pipelined requests wait, unparsed, until the response before
///   them has been written whole; at most `maxReadAhead` bytes of them are read meanwhile.
///   After a response that closes the connection, bytes behind it are never answered.
/// - **Reading on demand.** The handler holds back the channel's `read()` while it does not want
///   bytes (a response in progress with enough read ahead, a streamed body nobody consumes).
/// - **Writes and back-pressure.** A response is done when its last write completed. The
///   channel's water marks drive `HTTPExchange`'s back-pressure through
///   `channelWritabilityChanged`.
/// - **Timers** (one scheduled task, re-armed lazily): idle keep-alive connections close after
///   `idleTimeout`; a request must arrive whole within `requestReadTimeout` (and without a gap
///   of `idleTimeout`), else 408; a client that takes less than 64 KiB of a response in `writeTimeout`
///   is dropped. A connection with writes outstanding is never closed as idle.
final class HTTPConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let server: HTTPServerContext
    private var limits: HTTPLimits { server.limits }
    private var context: ChannelHandlerContext?
    private var parser: HTTPRequestParser
    /// Bytes read and not parsed yet.
    private var inbound = ByteBuffer()
    private var connection = HTTPConnectionInfo(localHost: "", localPort: 0, remoteHost: "", remotePort: 0)

    /// The request whose head has been read and whose body is still arriving.
    private struct Reading {
        var head: HTTPRequestHead
        var body: ByteBuffer?
        var stream: HTTPRequestBodyStream?
    }
    private var reading: Reading?
    /// Budget reserved for the body being collected; handed to the response at dispatch.
    private var reserved = 0

    /// The response in progress.
    private struct Responding {
        let exchange: HTTPExchange
        let isHEAD: Bool
        let http10: Bool
        let keepAlive: Bool
        let explicitKeepAlive: Bool
        let requestLine: String?
        let started: ContinuousClock.Instant
        /// Bytes reserved from the body budget, given back when the response ends.
        var reserved: Int
        var status = 0
        var headSent = false
        var framing = HTTPResponseHead.Framing.none
        var bytesSent = 0
        /// The app failed after the head went out; the connection is closed on purpose.
        var failed = false
    }
    private var responding: Responding?

    /// No more requests are parsed on this connection; it closes when the response ends.
    private var closeAfterResponse = false
    /// The connection is closing or closed: nothing more is read or answered.
    private var closing = false
    /// Our side is shut after a final response; what the client still sends is read and dropped.
    private var lingering = false
    private var lingered = 0
    /// The client shut its sending side (half-close); requests already read are still answered.
    private var inputClosed = false
    private var upgraded = false

    private var readPending = false
    /// When the current request's first byte came (nil between requests).
    private var requestStarted: NIODeadline?
    private var lastRead = NIODeadline.now()
    /// When the last response ended or the last byte arrived: the idle timer counts from here.
    private var lastActivity = NIODeadline.now()
    private var pendingWrites = 0
    private var lastWriteProgress = NIODeadline.now()
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?

    init(server: HTTPServerContext) {
        self.server = server
        self.parser = HTTPRequestParser(limits: server.limits.parser)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        if let local = channel.localAddress {
            connection.localHost = local.ipAddress ?? "localhost"
            connection.localPort = local.port ?? 0
        }
        if let remote = channel.remoteAddress {
            connection.remoteHost = remote.ipAddress ?? ""
            connection.remotePort = remote.port ?? 0
        }
        lastActivity = .now()
        armTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        timer?.cancel()
        timer = nil
        reading?.stream?.fail(HTTPExchangeError.connectionClosed)
        reading = nil
        // A body cut off mid-way gives its reservation back.
        server.bodyBudget.release(reserved)
        reserved = 0
        if let responding {
            // The client left (or was dropped) before the response was written whole.
            finishResponding(status: responding.status, cutShort: true)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Socket errors (a reset, a broken pipe): the connection is gone.
        closeNow()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if lingering {
                closeNow()
                return
            }
            reading?.stream?.fail(HTTPExchangeError.connectionClosed)
            responding?.exchange.markInputClosed()
            closeIfNothingLeft()
            return
        }
        if event is HTTPDrainEvent {
            closeAfterResponse = true
            closeIfNothingLeft()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if lingering {
            lingered += bytes.readableBytes
            if lingered > Self.lingerBytes { closeNow() }
            return
        }
        guard !closing else { return }
        if upgraded {
            // Between the 101 and leaving the pipeline: kept for the new protocol's handlers.
            inbound.writeBuffer(&bytes)
            return
        }
        let now = NIODeadline.now()
        lastRead = now
        lastActivity = now
        if requestStarted == nil && responding == nil { requestStarted = now }
        if inbound.readableBytes == 0 {
            inbound = bytes
        } else {
            inbound.writeBuffer(&bytes)
        }
        process()
    }

    func read(context: ChannelHandlerContext) {
        if wantsRead {
            context.read()
        } else {
            readPending = true
        }
    }

    private var wantsRead: Bool {
        if lingering { return true }
        guard !closing, !inputClosed, !upgraded else { return false }
        if let stream = reading?.stream { return stream.wantsMore }
        if responding != nil && reading == nil { return inbound.readableBytes < limits.maxReadAhead && !closeAfterResponse }
        return true
    }

    private func resumeReadingIfWanted() {
        guard readPending, wantsRead, let context else { return }
        readPending = false
        context.read()
    }

    /// Parses what has arrived, as far as the state allows.
    private func process() {
        while !closing && !upgraded {
            if responding != nil && reading == nil { break }  // the next request waits for this response
            if let stream = reading?.stream, !stream.wantsMore { break }
            guard let event = parser.next(&inbound) else { break }
            switch event {
            case .head(let head):
                guard startRequest(head) else { return }
            case .body(let piece):
                guard receiveBody(piece) else { return }
            case .end:
                endRequestBody()
            case .error(let error):
                refuse(error)
                return
            }
        }
        if inbound.readableBytes == 0 && inbound.capacity > 0 {
            // Let the next read's buffer be used as it is, without a copy.
            inbound = ByteBuffer()
        }
        closeIfNothingLeft()
        resumeReadingIfWanted()
        armTimer()
    }

    private func startRequest(_ head: HTTPRequestHead) -> Bool {
        if requestStarted == nil { requestStarted = .now() }
        let delivery = server.application.bodyDelivery(for: head)
        if delivery == .collect {
            // A collected body is held whole: it must fit in the process-wide budget.
            let declared = head.contentLength ?? 0
            guard server.bodyBudget.reserve(declared) else {
                refuseOverBudget(declared)
                return false
            }
            reserved = declared
        }
        if head.expectsContinue && delivery == .collect {
            write(HTTPResponseHead.serverInterim(status: 100, reason: "Continue"), last: false)
            context?.flush()
        }
        reading = Reading(head: head, body: nil, stream: nil)
        if delivery == .stream, let eventLoop = context?.eventLoop {
            let handler = NIOLoopBound(self, eventLoop: eventLoop)
            // A streamed body is asked for by the app: `100 Continue` waits until it is.
            var onFirstRead: (@Sendable () -> Void)?
            if head.expectsContinue {
                onFirstRead = { eventLoop.execute { handler.value.sendContinue() } }
            }
            let stream = HTTPRequestBodyStream(
                eventLoop: eventLoop, resume: { eventLoop.execute { handler.value.streamWantsMore() } }, onFirstRead: onFirstRead)
            reading?.stream = stream
            dispatch(head: head, body: ByteBuffer(), stream: stream)
        }
        return true
    }

    private func refuseOverBudget(_ bytes: Int) {
        server.logger.warning(
            "request refused with 503: the budget for buffered request bodies is used up",
            metadata: ["bytes": "\(bytes)", "budget": "\(server.bodyBudget.limit)"])
        refuse(HTTPParseError(status: 503, reason: "the server is busy; retry shortly"), retryAfter: true)
    }

    private func receiveBody(_ piece: ByteBuffer) -> Bool {
        guard let current = reading else { return true }
        if let stream = current.stream {
            _ = stream.push(piece)
            return true
        }
        if current.head.isChunked {
            guard server.bodyBudget.reserve(piece.readableBytes) else {
                refuseOverBudget(piece.readableBytes)
                return false
            }
            reserved += piece.readableBytes
        }
        // Appended in place (`reading` holds the only reference), so nothing is copied twice.
        if current.body == nil {
            let expected = current.head.contentLength ?? 0
            if piece.readableBytes == expected {
                reading!.body = piece  // the whole body in one piece: no copy at all
            } else {
                var body = context!.channel.allocator.buffer(capacity: max(expected, piece.readableBytes))
                body.writeImmutableBuffer(piece)
                reading!.body = body
            }
        } else {
            reading!.body!.writeImmutableBuffer(piece)
        }
        return true
    }

    private func endRequestBody() {
        guard let current = reading else { return }
        reading = nil
        requestStarted = nil
        if let stream = current.stream {
            stream.finish()
            return
        }
        dispatch(head: current.head, body: current.body ?? ByteBuffer(), stream: nil)
    }

    private func dispatch(head: HTTPRequestHead, body: ByteBuffer, stream: HTTPRequestBodyStream?) {
        guard let context else { return }
        let keepAlive = head.keepAlive && !server.isDraining && !closeAfterResponse && !inputClosed
        if !keepAlive { closeAfterResponse = true }
        let exchange = HTTPExchange(
            handler: self, eventLoop: context.eventLoop, writable: context.channel.isWritable, closeFuture: context.channel.closeFuture)
        responding = Responding(
            exchange: exchange, isHEAD: head.isHEAD, http10: head.version.minor == 0, keepAlive: keepAlive,
            explicitKeepAlive: head.explicitKeepAlive, requestLine: server.recordsRequestLine ? head.requestLine : nil,
            started: .now, reserved: reserved)
        reserved = 0
        server.application.handle(HTTPRequest(head: head, body: body, bodyStream: stream, connection: connection), exchange)
    }

    private func streamWantsMore() {
        process()
        resumeReadingIfWanted()
    }

    /// `Expect: 100-continue` with a streamed body: the app asked for the body, so the client
    /// may send it, unless a response has begun or the body is no longer wanted.
    private func sendContinue() {
        guard let context, !closing, reading?.stream != nil, let current = responding, !current.headSent else { return }
        write(HTTPResponseHead.serverInterim(status: 100, reason: "Continue"), last: false)
        context.flush()
    }

    // MARK: - Refusing

    /// Answers a request the server refuses itself, then closes; nothing after it is read.
    private func refuse(_ error: HTTPParseError, retryAfter: Bool = false) {
        guard !closing else { return }
        reading?.stream?.fail(error)
        if responding != nil {
            // A streamed body went wrong after the app got the request: the app answers (it
            // learns from the stream), then the connection closes.
            reading = nil
            closeAfterResponse = true
            return
        }
        if error.status >= 500 {
            server.logger.notice("request refused", metadata: ["status": "\(error.status)", "reason": "\(error.reason)"])
        } else {
            server.logger.debug("request refused", metadata: ["status": "\(error.status)", "reason": "\(error.reason)"])
        }
        server.bodyBudget.release(reserved)
        reserved = 0
        reading = nil
        closing = true
        let response = HTTPResponseHead.serverResponse(
            status: error.status, reason: HTTPResponseHead.reasonPhrase(for: error.status), detail: error.reason,
            extraFields: retryAfter ? [("Retry-After", "1")] : [])
        server.record?(HTTPExchangeRecord(status: error.status, bytes: 0, duration: .zero, requestLine: nil, client: connection.remoteHost))
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(response), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in self.closeGracefully() }
    }

    // MARK: - Writing (from HTTPExchange, on the event loop)

    /// Writes a response part; returns the channel's writability afterwards.
    func send(from exchange: HTTPExchange, head: HTTPResponseHead?, body: ByteBuffer?, end: Bool) -> Bool {
        guard let context, var current = responding, current.exchange === exchange, !closing else {
            return context?.channel.isWritable ?? true
        }
        // Everything is decided first and written after, so a write that fails at once (and
        // closes the connection) finds the state already consistent.
        var writes: [ByteBuffer] = []
        var out: ByteBuffer?
        if end && reading != nil {
            // The app answered before the streamed body was read to its end: the rest of it
            // cannot be told from a next request without reading it, so the connection closes.
            closeAfterResponse = true
        }
        if var head {
            let completeBody = end ? (body?.readableBytes ?? 0) : nil
            let (framing, keepAlive) = head.finish(
                keepAlive: current.keepAlive && !closeAfterResponse && !server.isDraining, explicitKeepAlive: current.explicitKeepAlive,
                isHEAD: current.isHEAD, http10: current.http10, completeBody: completeBody)
            if !keepAlive { closeAfterResponse = true }
            current.framing = framing
            current.status = head.status
            current.headSent = true
            out = head.buffer
        }
        if var body, body.readableBytes > 0 {
            switch current.framing {
            case .none:
                body.clear()
            case .length(let remaining):
                if body.readableBytes > remaining {
                    server.logger.warning(
                        "the app sent more bytes than its Content-Length; the rest was dropped and the connection closes",
                        metadata: ["content-length": "\(current.bytesSent + remaining)"])
                    body = body.getSlice(at: body.readerIndex, length: remaining)!
                    closeAfterResponse = true
                }
                current.framing = .length(remaining - body.readableBytes)
            case .chunked, .untilClose:
                break
            }
            let size = body.readableBytes
            if size > 0 {
                current.bytesSent += size
                let chunked = current.framing == .chunked
                if out == nil && chunked { out = context.channel.allocator.buffer(capacity: 24) }
                if chunked { Self.writeChunkHeader(size, into: &out!) }
                if out != nil, size <= 16 << 10 {
                    // Head (or chunk header) and a small body in one buffer: one write.
                    out!.writeImmutableBuffer(body)
                } else {
                    if let pending = out { writes.append(pending) }
                    writes.append(body)
                    out = nil
                }
                if chunked {
                    if out == nil { out = context.channel.allocator.buffer(capacity: 7) }
                    out!.writeStaticString("\r\n")
                }
            }
        }
        if end {
            switch current.framing {
            case .chunked:
                if out == nil { out = context.channel.allocator.buffer(capacity: 5) }
                out!.writeStaticString("0\r\n\r\n")
            case .length(let remaining) where remaining > 0:
                server.logger.warning(
                    "the app sent fewer bytes than its Content-Length; the connection closes", metadata: ["missing": "\(remaining)"])
                closeAfterResponse = true
            case .untilClose:
                closeAfterResponse = true
            default:
                break
            }
        }
        if let out { writes.append(out) }
        // An end with nothing left to write still needs a write to learn when the rest completed.
        if end && writes.isEmpty { writes.append(context.channel.allocator.buffer(capacity: 0)) }
        responding = current
        write(writes, endsResponse: end)
        context.flush()
        armTimer()
        return context.channel.isWritable
    }

    private static func writeChunkHeader(_ size: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(size, radix: 16))
        buffer.writeStaticString("\r\n")
    }

    /// Writes `buffers` (one send's worth). The last write is tracked, and so is every 64 KiB
    /// of a large body: a tracked write that completes is progress for the write timeout (so a
    /// client must take at least 64 KiB per timeout to count as reading), and the last one of a
    /// response ends it.
    private func write(_ buffers: [ByteBuffer], endsResponse: Bool) {
        guard let context else { return }
        if endsResponse, let held = responding?.reserved, held > 0 {
            // The app is done with the request's body once its response ends. Given back before
            // the last bytes go out, so a client that has read the response finds the budget
            // free on its next request (after the write completed, it might not yet).
            server.bodyBudget.release(held)
            responding?.reserved = 0
        }
        let sliceSize = 64 << 10
        var untracked = 0
        for (index, buffer) in buffers.enumerated() {
            var rest = buffer
            repeat {
                let piece: ByteBuffer
                if rest.readableBytes > sliceSize {
                    piece = rest.readSlice(length: sliceSize)!
                } else {
                    piece = rest
                    rest = ByteBuffer()
                }
                let isLast = index == buffers.count - 1 && rest.readableBytes == 0
                untracked += piece.readableBytes
                guard isLast || untracked >= sliceSize else {
                    context.write(wrapOutboundOut(piece), promise: nil)
                    continue
                }
                untracked = 0
                track(piece, endsResponse: endsResponse && isLast)
            } while rest.readableBytes > 0
        }
    }

    private func write(_ buffer: ByteBuffer, last: Bool) {
        write([buffer], endsResponse: last)
    }

    private func track(_ piece: ByteBuffer, endsResponse: Bool) {
        guard let context else { return }
        if pendingWrites == 0 { lastWriteProgress = .now() }
        pendingWrites += 1
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(piece), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { result in
            self.pendingWrites -= 1
            self.lastWriteProgress = .now()
            switch result {
            case .success:
                if endsResponse { self.responseWritten() }
            case .failure:
                self.closeNow()
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        responding?.exchange.writabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    /// The last write of the response completed.
    private func responseWritten() {
        guard let current = responding else { return }
        finishResponding(status: current.status, cutShort: false)
        if closeAfterResponse || closing {
            closeGracefully()
            return
        }
        lastActivity = .now()
        // Bytes of a pipelined request may be here already: its clock starts now.
        if inbound.readableBytes > 0 { requestStarted = .now() }
        process()
    }

    private func finishResponding(status: Int, cutShort: Bool) {
        guard let current = responding else { return }
        responding = nil
        server.bodyBudget.release(current.reserved)
        if cutShort {
            current.exchange.markClosed()
        } else {
            current.exchange.markFinished()
        }
        // 499: the client left (or was dropped) before the response was written whole.
        server.record?(HTTPExchangeRecord(
            status: cutShort && !current.failed ? 499 : status, bytes: current.bytesSent, duration: .now - current.started,
            requestLine: current.requestLine, client: connection.remoteHost))
    }

    /// The app failed the request: an error response if nothing went out, else close.
    func fail(from exchange: HTTPExchange, status: Int, reason: String) {
        guard let context, var current = responding, current.exchange === exchange, !closing else { return }
        closeAfterResponse = true
        guard !current.headSent else {
            responding?.status = status
            responding?.failed = true
            closeNow()
            return
        }
        current.status = status
        current.headSent = true
        responding = current
        write(HTTPResponseHead.serverResponse(status: status, reason: reason), last: true)
        context.flush()
        armTimer()
    }

    /// Switches protocols: writes the 101 head, lets `configure` set up the new handlers, then
    /// leaves the pipeline, passing on bytes read past the request.
    func upgrade(
        from exchange: HTTPExchange, head: HTTPResponseHead, configure: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>,
        promise: EventLoopPromise<Void>
    ) {
        guard let context, let current = responding, current.exchange === exchange, !closing, reading == nil else {
            promise.fail(HTTPExchangeError.connectionClosed)
            return
        }
        var head = head
        head.finishInterim()
        upgraded = true
        responding = nil
        current.exchange.markFinished()
        server.bodyBudget.release(current.reserved)
        server.record?(HTTPExchangeRecord(
            status: head.status, bytes: 0, duration: .now - current.started, requestLine: current.requestLine, client: connection.remoteHost))
        timer?.cancel()
        timer = nil
        context.writeAndFlush(wrapOutboundOut(head.buffer), promise: nil)
        configure(context.channel).assumeIsolated().flatMap {
            context.pipeline.syncOperations.removeHandler(context: context)
        }.whenComplete { result in
            promise.completeWith(result)
        }
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        // Bytes the client sent after the upgrade request belong to the new protocol.
        if inbound.readableBytes > 0 {
            let leftover = inbound
            inbound = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(leftover))
        }
        let read = readPending
        readPending = false
        context.leavePipeline(removalToken: removalToken)
        if read { context.read() }
    }

    // MARK: - Closing and timers

    /// At most this much is read and dropped, for at most `lingerTime`, after a final response.
    private static let lingerBytes = 1 << 20
    private static let lingerTime = TimeAmount.seconds(2)

    /// Closes after a final response without losing it: shuts our sending side (the client
    /// reads the response, then EOF), drops what the client still sends (a body we refused, a
    /// pipelined request we will not answer) until it closes too or `lingerTime` passes, then
    /// closes. Closing at once with unread bytes would make the kernel send a reset, which can
    /// destroy the response before the client reads it.
    private func closeGracefully() {
        guard let context, context.channel.isActive, !lingering else { return }
        closing = true
        guard !inputClosed else {
            closeNow()
            return
        }
        lingering = true
        timer?.cancel()
        timer = nil
        context.close(mode: .output, promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) { self.closeNow() }
        if readPending {
            readPending = false
            context.read()
        }
    }

    private func closeNow() {
        guard let context, context.channel.isActive else { return }
        closing = true
        context.close(promise: nil)
    }

    /// Closes a connection that has nothing left to do: idle after a close was asked for, or
    /// whose client stopped sending with no complete request left.
    private func closeIfNothingLeft() {
        guard !closing, responding == nil else { return }
        if closeAfterResponse && reading == nil && !parser.isInsideRequest && inbound.readableBytes == 0 {
            closeNow()
        } else if inputClosed {
            // A partial request can never complete now.
            closeNow()
        }
    }

    private func armTimer() {
        guard let context, !closing, !upgraded, let next = nextDeadline() else { return }
        if let timerDeadline, timer != nil, timerDeadline <= next { return }
        timer?.cancel()
        timerDeadline = next
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: next) { [self] in
            timer = nil
            timerDeadline = nil
            timerFired()
        }
    }

    /// Whether bytes of a request have arrived that are not yet a complete request.
    private var isInsideRequest: Bool {
        reading != nil || parser.isInsideRequest || (responding == nil && inbound.readableBytes > 0)
    }

    private func nextDeadline() -> NIODeadline? {
        var deadline: NIODeadline?
        func consider(_ candidate: NIODeadline) {
            if deadline == nil || candidate < deadline! { deadline = candidate }
        }
        if pendingWrites > 0 { consider(lastWriteProgress + limits.writeTimeout) }
        if responding == nil || reading != nil {
            if isInsideRequest {
                if let requestStarted, reading?.stream == nil { consider(requestStarted + limits.requestReadTimeout) }
                if wantsRead { consider(lastRead + limits.idleTimeout) }
            } else if responding == nil && pendingWrites == 0 {
                consider(lastActivity + limits.idleTimeout)
            }
        }
        return deadline
    }

    private func timerFired() {
        guard !closing, !upgraded else { return }
        let now = NIODeadline.now()
        if pendingWrites > 0 && now >= lastWriteProgress + limits.writeTimeout {
            server.logger.notice(
                "dropping a connection whose client is not reading its response (less than 64 KiB taken within the write timeout)",
                metadata: ["client": "\(connection.remoteHost)", "write-timeout": "\(limits.writeTimeout.nanoseconds / 1_000_000_000)s"])
            closeNow()
            return
        }
        if responding == nil || reading != nil {
            if isInsideRequest {
                let late = requestStarted.map { reading?.stream == nil && now >= $0 + limits.requestReadTimeout } ?? false
                let stalled = wantsRead && now >= lastRead + limits.idleTimeout
                if late || stalled {
                    if responding == nil {
                        refuse(HTTPParseError(status: 408, reason: late ? "the request did not arrive in time" : "the client stopped sending"))
                    } else {
                        closeNow()
                    }
                    return
                }
            } else if responding == nil && pendingWrites == 0 && now >= lastActivity + limits.idleTimeout {
                closeNow()
                return
            }
        }
        armTimer()
    }
}

extension HTTPResponseHead {
    /// A head for an interim response (100 Continue), as bytes.
    static func serverInterim(status: Int, reason: String) -> ByteBuffer {
        var head = HTTPResponseHead.server(status: status, reason: reason)
        head.finishInterim()
        return head.buffer
    }
}
