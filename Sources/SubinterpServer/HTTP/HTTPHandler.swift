import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Limits the HTTP layer enforces before a request reaches a worker.
struct HTTPLimits: Sendable {
    var maxBody: Int
    var maxHeaderBytes: Int
    var idleTimeout: TimeAmount
}

/// One connection: reads a request head and body, hands the complete request to the app, and
/// writes the response the worker streams back. Pipelined requests wait in NIO's pipeline
/// handler until the previous response has ended.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: ServerCore
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var rejected = false
    private var inFlight: Responder?

    init(server: ServerCore) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            rejected = false
            let limits = server.limits
            let headerBytes = head.headers.reduce(head.uri.utf8.count) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headerBytes > limits.maxHeaderBytes {
                reject(context: context, status: .requestHeaderFieldsTooLarge)
                return
            }
            let lengths = head.headers["content-length"]
            if !head.headers["transfer-encoding"].isEmpty && !lengths.isEmpty
                || Set(lengths.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }).count > 1
            {
                // Both, or conflicting lengths: a request-smuggling shape.
                reject(context: context, status: .badRequest)
                return
            }
            if let length = lengths.first.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }), length > limits.maxBody {
                reject(context: context, status: .payloadTooLarge)
                return
            }
            if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard !rejected else { return }
            if body.count + chunk.readableBytes > server.limits.maxBody {
                reject(context: context, status: .payloadTooLarge)
                return
            }
            body.append(contentsOf: chunk.readBytes(length: chunk.readableBytes) ?? [])
        case .end:
            guard !rejected, let head else { return }
            self.head = nil
            dispatch(context: context, head: head)
        }
    }

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let channel = context.channel
        let local = channel.localAddress
        let remote = channel.remoteAddress
        let keepAlive = head.isKeepAlive && !server.isDraining
        let responder = Responder(context: context, version: head.version, keepAlive: keepAlive, isHead: head.method == .HEAD)
        inFlight = responder
        var headers: [(String, String)] = []
        headers.reserveCapacity(head.headers.count)
        for header in head.headers { headers.append((header.name, header.value)) }
        let request = WSGIRequest(
            method: head.method.rawValue, target: head.uri, version: "HTTP/\(head.version.major).\(head.version.minor)",
            headers: headers, body: body, server: (local?.ipAddress ?? "localhost", local?.port ?? 0),
            client: (remote?.ipAddress ?? "", remote?.port ?? 0), isHead: head.method == .HEAD)
        body = []
        let started = ContinuousClock.now
        let server = self.server
        let line = server.accessLog == nil ? nil : AccessLog.requestLine(head)
        let client = remote?.ipAddress ?? "-"
        server.requestStarted()
        server.application.handle(request, responder: responder) { status in
            let elapsed = ContinuousClock.now - started
            server.requestFinished(status: status, elapsed: elapsed)
            if let line, let log = server.accessLog {
                log(AccessLog.entry(client: client, requestLine: line, status: status, bytes: responder.bytesSent))
            }
        }
    }

    private func reject(context: ChannelHandlerContext, status: HTTPResponseStatus) {
        rejected = true
        body = []
        server.requestRejected(status: Int(status.code))
        let payload = "\(status.code) \(status.reasonPhrase)\n"
        var headers = HTTPHeaders([("content-type", "text/plain; charset=utf-8"), ("content-length", "\(payload.utf8.count)"), ("connection", "close")])
        headers.add(name: "date", value: HTTPDate.now)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: payload)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inFlight?.markClosed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, inFlight?.isDone ?? true {
            // Idle between requests, or a client too slow to send its request: no worker is held.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError, inFlight?.isDone ?? true {
            let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            reject(context: context, status: status)
            return
        }
        context.close(promise: nil)
    }
}

/// Sends one response from a worker thread to the connection's event loop, in order, with
/// back-pressure: a worker waits (with its GIL released) while more than `highWater` bytes are
/// queued for a slow client.
final class Responder: WSGIResponder, @unchecked Sendable {
    // Safe: `context` is only touched on its event loop; the counters are guarded by `lock`.
    private let loopBound: NIOLoopBound<ChannelHandlerContext>
    private let eventLoop: any EventLoop
    private let version: HTTPVersion
    private let keepAlive: Bool
    private let isHead: Bool
    private let lock = NSCondition()
    private var pendingBytes = 0
    private var closed = false
    private var headSent = false
    private var done = false
    private(set) var bytesSent = 0
    private static let highWater = 1 << 20

    init(context: ChannelHandlerContext, version: HTTPVersion, keepAlive: Bool, isHead: Bool) {
        self.loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.eventLoop = context.eventLoop
        self.version = version
        self.keepAlive = keepAlive
        self.isHead = isHead
    }

    var isClosed: Bool { lock.withLock { closed } }
    var isDone: Bool { lock.withLock { done } }

    func markClosed() {
        lock.withLock {
            closed = true
            lock.broadcast()
        }
    }

    /// The head, until it goes out with the first body chunk or the end. Only the worker's
    /// thread touches it (calls come in order from one job).
    private var pendingHead: HTTPResponseHead?

    func head(status: Int, reason: String, headers: [(String, String)]) {
        lock.withLock { headSent = true }
        var fields = HTTPHeaders(headers)
        if !fields.contains(name: "date") { fields.add(name: "date", value: HTTPDate.now) }
        if !keepAlive { fields.replaceOrAdd(name: "connection", value: "close") }
        // `init(statusCode:)` maps 204, 304 and 1xx to NIO's cases, which know they carry no body.
        pendingHead = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status, reasonPhrase: reason), headers: fields)
    }

    private func buffer(_ chunks: [[UInt8]], _ allocator: ByteBufferAllocator) -> ByteBuffer? {
        let size = chunks.reduce(0) { $0 + $1.count }
        guard size > 0 else { return nil }
        var buffer = allocator.buffer(capacity: size)
        for chunk in chunks { buffer.writeBytes(chunk) }
        return buffer
    }

    func body(_ chunks: [[UInt8]], waiting: (() -> Void) -> Void) {
        let size = chunks.reduce(0) { $0 + $1.count }
        guard size > 0 else { return }
        let mustWait = lock.withLock { () -> Bool in
            pendingBytes += size
            bytesSent += size
            return pendingBytes > Self.highWater && !closed
        }
        let loopBound = self.loopBound
        let head = pendingHead
        pendingHead = nil
        eventLoop.execute { [self] in
            let context = loopBound.value
            if let head { context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil) }
            let buffer = self.buffer(chunks, context.channel.allocator)!
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer)))).whenComplete { _ in
                self.lock.withLock {
                    self.pendingBytes -= size
                    self.lock.broadcast()
                }
            }
        }
        if mustWait {
            waiting {
                lock.withLock {
                    while pendingBytes > Self.highWater / 2 && !closed { lock.wait() }
                }
            }
        }
    }

    func end(_ chunks: [[UInt8]]) {
        let size = chunks.reduce(0) { $0 + $1.count }
        lock.withLock {
            done = true
            bytesSent += size
        }
        let loopBound = self.loopBound
        let keepAlive = self.keepAlive
        let head = pendingHead
        pendingHead = nil
        eventLoop.execute { [self] in
            let context = loopBound.value
            if let head { context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil) }
            if let buffer = self.buffer(chunks, context.channel.allocator) {
                context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
            }
            let channel = context.channel
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    func fail(status: Int, reason: String) {
        let sendError = lock.withLock { () -> Bool in
            defer { done = true }
            return !headSent && !done
        }
        let loopBound = self.loopBound
        let version = self.version
        eventLoop.execute {
            let context = loopBound.value
            guard sendError, context.channel.isActive else {
                // Part of the response is out: the only honest end is closing the connection.
                context.close(promise: nil)
                return
            }
            let payload = "\(status) \(reason)\n"
            let headers = HTTPHeaders([
                ("content-type", "text/plain; charset=utf-8"), ("content-length", "\(payload.utf8.count)"), ("connection", "close"),
                ("date", HTTPDate.now),
            ])
            context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(
                version: version, status: .custom(code: UInt(status), reasonPhrase: reason), headers: headers))), promise: nil)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(string: payload)))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// `Date` header values, cached per second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((0, ""))

    static var now: String {
        let now = Int(Date().timeIntervalSince1970)
        return cache.withLock { cached in
            if cached.second == now { return cached.text }
            var time = time_t(now)
            var parts = tm()
            gmtime_r(&time, &parts)
            var buffer = [CChar](repeating: 0, count: 64)
            let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
            let text = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            cached = (now, text)
            return text
        }
    }
}

/// Common Log Format lines.
enum AccessLog {
    static func requestLine(_ head: HTTPRequestHead) -> String {
        "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)"
    }

    static func entry(client: String, requestLine: String, status: Int, bytes: Int) -> String {
        var time = time_t(Int(Date().timeIntervalSince1970))
        var parts = tm()
        localtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%d/%b/%Y:%H:%M:%S %z", &parts)
        let stamp = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(client) - - [\(stamp)] \"\(requestLine)\" \(status) \(bytes > 0 ? String(bytes) : "-")"
    }
}
