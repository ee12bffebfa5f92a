import NIOCore
import NIOWebSocket

/// The server's side of RFC 6455 on one connection, after NIO's frame decoder and encoder:
///
/// - **Messages**: text and binary frames and their continuations are reassembled into whole
///   messages; control frames may come between fragments. A text message must be valid UTF-8
///   (else close 1007). A frame or message larger than `maxMessageSize` closes with 1009.
/// - **Control frames**: a ping is answered with a pong carrying its payload; pongs are ignored.
///   A close frame is answered with a close frame carrying its code, and the connection closes.
/// - **Protocol errors** close with 1002: a frame from the client that is not masked, reserved
///   bits set (no extension is negotiated), an unknown opcode, a continuation with nothing to
///   continue, a new message in the middle of a fragmented one, a control frame that is
///   fragmented or longer than 125 bytes, a close frame with a 1-byte payload or a code no
///   endpoint may send (a close reason that is not UTF-8: 1007).
/// - **Closing from this side** (the app, or the server's shutdown: 1001): a close frame after
///   the messages sent before it; the connection closes when the client answers, or after
///   `closeTimeout`.
/// - **Flow control**: messages handed to the owner and not yet asked for (`demand()`) beyond
///   `unconsumedHighWater` bytes stop reading from the socket, so TCP pushes back on the client.
final class WebSocketHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let closeTimeout = TimeAmount.seconds(5)
    static let unconsumedHighWater = 1 << 20

    private let connection: WebSocketConnection
    private var context: ChannelHandlerContext?
    /// The fragments of the message being received.
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false
    private var closeSent = false
    /// The client's close frame, once it came.
    private var receivedClose: (code: Int, reason: String)?
    /// The code this side closed with because the client broke the protocol.
    private var failedWith: Int?
    private var unconsumed = 0
    private var readPending = false
    private var closeTimer: Scheduled<Void>?

    init(connection: WebSocketConnection) {
        self.connection = connection
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connection.attach(NIOLoopBound(self, eventLoop: context.eventLoop))
        if !context.channel.isActive { report() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        report()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        report()
        context.fireChannelInactive()
    }

    private func report() {
        let code = receivedClose?.code ?? failedWith ?? 1006
        connection.markClosed(code: code, reason: receivedClose?.reason ?? "")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            fail(1009, "the message is larger than \(connection.maxMessageSize) bytes")
        case is NIOWebSocketError:
            fail(1002, "a control frame must be whole and at most 125 bytes")
        case is ByteToMessageDecoderError where failedWith != nil:
            // Bytes after the frame that failed the connection: its close frame is on its way.
            break
        default:
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client sends nothing more: without its close frame, the connection dropped (1006).
            context.close(promise: nil)
            return
        }
        if event is HTTPDrainEvent {
            close(code: 1001, reason: "the server is shutting down")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.writabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Reading

    func read(context: ChannelHandlerContext) {
        if unconsumed > Self.unconsumedHighWater {
            readPending = true
        } else {
            context.read()
        }
    }

    func demand() {
        unconsumed = 0
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After a close frame (either way, or a failure) nothing more is taken as a message.
        guard receivedClose == nil, failedWith == nil else { return }
        let frame = unwrapInboundIn(data)
        guard frame.reservedBits.isEmpty else { return fail(1002, "reserved bits are set but no extension was negotiated") }
        guard frame.maskKey != nil else { return fail(1002, "a client's frames must be masked") }
        switch frame.opcode {
        case .text, .binary:
            guard fragments == nil else { return fail(1002, "a new message began inside a fragmented one") }
            let data = frame.unmaskedData
            if frame.fin {
                deliver(data, text: frame.opcode == .text)
            } else {
                fragments = data
                fragmentsAreText = frame.opcode == .text
            }
        case .continuation:
            guard var message = fragments else { return fail(1002, "a continuation frame with no message to continue") }
            fragments = nil
            let data = frame.unmaskedData
            guard message.readableBytes + data.readableBytes <= connection.maxMessageSize else {
                return fail(1009, "the message is larger than \(connection.maxMessageSize) bytes")
            }
            message.writeImmutableBuffer(data)
            if frame.fin {
                deliver(message, text: fragmentsAreText)
            } else {
                fragments = message
            }
        case .ping:
            guard !closeSent else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break
        case .connectionClose:
            receiveClose(frame.unmaskedData)
        default:
            fail(1002, "unknown opcode \(frame.opcode)")
        }
    }

    private func deliver(_ message: ByteBuffer, text: Bool) {
        if text {
            let valid = message.withUnsafeReadableBytes { UTF8Validation.isValid($0) }
            guard valid else { return fail(1007, "a text message is not valid UTF-8") }
        }
        unconsumed += message.readableBytes
        connection.events.message(message, text)
    }

    private func receiveClose(_ payload: ByteBuffer) {
        var payload = payload
        var code = 1005
        var reason = ""
        if payload.readableBytes == 1 {
            return fail(1002, "a close frame's payload cannot be one byte")
        }
        if let number = payload.readInteger(as: UInt16.self) {
            code = Int(number)
            guard Self.mayBeReceived(code) else { return fail(1002, "close code \(code) may not be sent") }
            let valid = payload.withUnsafeReadableBytes { UTF8Validation.isValid($0) }
            guard valid else { return fail(1007, "a close reason is not valid UTF-8") }
            reason = payload.readString(length: payload.readableBytes) ?? ""
        }
        receivedClose = (code, reason)
        guard let context else { return }
        if closeSent {
            // The answer to our close: done.
            context.close(promise: nil)
        } else {
            // Echo the client's code (none if it gave none), then close.
            writeClose(code: code == 1005 ? nil : code, reason: "", thenClose: true)
        }
    }

    /// Whether a close frame may carry `code` (RFC 6455 §7.4, and the IANA registry).
    static func mayBeReceived(_ code: Int) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    // MARK: - Writing

    /// One whole message from the owner; returns the channel's writability after it.
    func sendMessage(_ message: ByteBuffer, text: Bool) -> Bool {
        guard let context, !closeSent else { return false }
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: text ? .text : .binary, data: message)), promise: nil)
        return context.channel.isWritable
    }

    /// Closes from this side: a close frame, then wait for the client's.
    func close(code: Int, reason: String) {
        guard let context, !closeSent else { return }
        if receivedClose != nil {
            context.close(promise: nil)
            return
        }
        writeClose(code: Self.mayBeReceived(code) ? code : 1000, reason: reason, thenClose: false)
        closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) { [self] in
            self.context?.close(promise: nil)
        }
    }

    /// Fails the connection because the client broke the protocol: a close frame with `code`,
    /// then the connection closes.
    private func fail(_ code: Int, _ reason: String) {
        guard failedWith == nil else { return }
        failedWith = code
        fragments = nil
        guard !closeSent else {
            context?.close(promise: nil)
            return
        }
        writeClose(code: code, reason: reason, thenClose: true)
    }

    private func writeClose(code: Int?, reason: String, thenClose: Bool) {
        guard let context else { return }
        closeSent = true
        var payload = context.channel.allocator.buffer(capacity: 2 + min(reason.utf8.count, 123))
        if let code {
            payload.writeInteger(UInt16(code))
            // A control frame carries at most 125 bytes: the reason is cut at a character.
            var cut = Array(reason.utf8.prefix(123))
            while !cut.isEmpty, !cut.withUnsafeBytes({ UTF8Validation.isValid($0) }) { cut.removeLast() }
            payload.writeBytes(cut)
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)), promise: promise)
        if thenClose {
            promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// UTF-8 validation without decoding (RFC 3629: no overlong forms, no surrogates, nothing above
/// U+10FFFF).
enum UTF8Validation {
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let count = bytes.count
        while i < count {
            let byte = bytes[i]
            if byte < 0x80 {
                i += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch byte {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: return false
            }
            guard i + length <= count else { return false }
            let second = bytes[i + 1]
            guard second >= lower && second <= upper else { return false }
            for j in 2..<max(length, 2) where !(0x80...0xBF).contains(bytes[i + j]) { return false }
            i += length
        }
        return true
    }
}
