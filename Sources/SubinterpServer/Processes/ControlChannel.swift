import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// What a worker process and its supervisor tell each other, one JSON object per line over the
/// socketpair between them (the worker's end is the descriptor `SUBINTERP_CONTROL_FD` names).
///
/// | From | Message | Meaning |
/// | --- | --- | --- |
/// | worker | `ready` | the app is loaded and the worker accepts connections |
/// | worker | `refused` | an extension module refused an isolated interpreter (`--isolation auto` falls back) |
/// | worker | `failed` | the app could not be loaded; the one-line reason |
/// | worker | `retire` | `--max-requests` or `--max-memory` reached: replace me |
/// | worker | `stats` | its counters: the answer to `statsRequest`, and once more as it exits |
/// | supervisor | `statsRequest` | send your counters |
/// | supervisor | `drain` | stop accepting, finish what runs, exit 0 |
///
/// Either end closing is the other's signal: a worker whose supervisor is gone drains and exits.
enum ControlMessage: Codable, Sendable, Equatable {
    case ready(WorkerReady)
    case refused(module: String, message: String)
    case failed(message: String)
    case retire(reason: String)
    case stats(WorkerStats)
    case statsRequest
    case drain
}

/// A worker process's `ready`.
struct WorkerReady: Codable, Sendable, Equatable {
    var pid: Int32
    var interface: String
    /// Worker interpreters in the process (1 in processes isolation).
    var workers: Int
}

/// A worker process's counters.
struct WorkerStats: Codable, Sendable, Equatable {
    var metrics: MetricsSnapshot
    var busyWorkers: Int
    var queued: Int
    var workers: Int
    /// The process's resident memory.
    var residentBytes: Int?
}

/// One end of a control channel on a NIO event loop: sends messages, and hands each message
/// that arrives (and the channel's end) to the callbacks given.
final class ControlChannel: Sendable {
    /// Lines longer than this close the channel (a peer that is not ours).
    static let maxLine = 1 << 20
    let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Takes ownership of `descriptor` (a connected `AF_UNIX` stream socket).
    static func open(
        _ descriptor: CInt, on group: any EventLoopGroup, onMessage: @escaping @Sendable (ControlMessage) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) async throws -> ControlChannel {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ControlMessageHandler(onMessage: onMessage, onClose: onClose))
                }
            }
            .withConnectedSocket(descriptor).get()
        return ControlChannel(channel: channel)
    }

    /// Sends `message`; the returned future completes once it is written (or fails if the
    /// channel is closed).
    @discardableResult
    func send(_ message: ControlMessage) -> EventLoopFuture<Void> {
        guard var line = try? JSONEncoder().encode(message) else {
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        line.append(UInt8(ascii: "\n"))
        return channel.writeAndFlush(ByteBuffer(bytes: line))
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Splits the stream into lines (without their `\n`).
private struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let end = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > ControlChannel.maxLine { throw ControlChannelError.lineTooLong }
            return .needMoreData
        }
        let line = buffer.readSlice(length: end - buffer.readerIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial last line is dropped: its sender is gone.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}

private enum ControlChannelError: Error {
    case lineTooLong
}

private final class ControlMessageHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onMessage: @Sendable (ControlMessage) -> Void
    private let onClose: @Sendable () -> Void

    init(onMessage: @escaping @Sendable (ControlMessage) -> Void, onClose: @escaping @Sendable () -> Void) {
        self.onMessage = onMessage
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        guard let message = try? JSONDecoder().decode(ControlMessage.self, from: Data(line.readableBytesView)) else {
            // Not our protocol: the other end is not what it should be.
            context.close(promise: nil)
            return
        }
        onMessage(message)
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
