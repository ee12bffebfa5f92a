import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// An address to listen on, as given (`HOST:PORT`, `[::1]:PORT`, `:PORT` for all interfaces).
struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int
    /// `:PORT` was given: every IPv4 interface.
    var allInterfaces: Bool

    /// Parses `HOST:PORT`; the error names `flag` and says what to give instead.
    init(parsing text: String, flag: String) throws {
        let hint = "\(flag) \(text): give HOST:PORT, e.g. 127.0.0.1:8000 (:8000 for all interfaces, port 0 picks a free one)"
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ServerSetupError(hint)
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.contains(where: { $0 == " " || $0 == "/" }) else { throw ServerSetupError(hint) }
        self.allInterfaces = host.isEmpty
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A setup problem a user can fix, told in one line.
struct ServerSetupError: Error, Sendable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The listening side of an HTTP server: binds addresses (resolving them first, with errors a
/// user can act on), accepts connections only once told to and only up to `maxConnections`
/// (at the limit it stops accepting, so further connections wait in the kernel's backlog), runs
/// an `HTTPConnectionHandler` on each, and drains them on shutdown.
final class HTTPServer: Sendable {
    let group: any EventLoopGroup
    let maxConnections: Int
    private let registry: ConnectionRegistry
    private let listeners = Mutex<[any Channel]>([])
    private let acceptThreads = Mutex<[AcceptThread]>([])

    init(group: any EventLoopGroup, maxConnections: Int) {
        self.group = group
        self.maxConnections = maxConnections
        self.registry = ConnectionRegistry(maxConnections: maxConnections)
    }

    /// Serves `context`'s application on `socket`, a listening socket bound already (by this
    /// process or the one it inherited the socket from); accepting starts with
    /// `startAccepting()`. NIO gets a duplicate of the descriptor, so `socket` stays this
    /// process's to hand on or close. Returns the bound address.
    ///
    /// `shared`: other processes accept on the same socket (worker processes of a
    /// supervisor). Then an `AcceptThread` accepts, and NIO serves each connection.
    @discardableResult
    func adopt(_ socket: ListeningSocket, context: HTTPServerContext, backlog: Int, shared: Bool = false) async throws -> SocketAddress {
        let registry = self.registry
        let limits = context.limits
        let duplicate = fcntl(socket.descriptor, F_DUPFD_CLOEXEC, 0)
        guard duplicate >= 0 else {
            throw ServerSetupError("cannot listen on \(socket.address): \(ListeningSocket.describe(errno))")
        }
        if shared {
            let group = self.group
            let own = ListeningSocket(address: socket.address, descriptor: duplicate, local: socket.local)
            let thread = try AcceptThread(socket: own, registry: registry, logger: context.logger) { descriptor in
                _ = try ClientBootstrap(group: group)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelOption(.maxMessagesPerRead, value: 16)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .channelOption(.writeBufferWaterMark, value: .init(low: limits.writeBufferLow, high: limits.writeBufferHigh))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try Self.initialize(channel, registry: registry, context: context)
                        }
                    }
                    .withConnectedSocket(descriptor).wait()
            }
            acceptThreads.withLock { $0.append(thread) }
            thread.start()
            return socket.local
        }
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: Int32(clamping: backlog))
                // One accept per read, so the connection limit (and the free-worker limit) is exact.
                .serverChannelOption(.maxMessagesPerRead, value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AcceptLimiter(registry: registry))
                    }
                }
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: limits.writeBufferLow, high: limits.writeBufferHigh))
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.initialize(channel, registry: nil, context: context)
                    }
                }
                .withBoundSocket(duplicate).get()
        } catch let error as IOError {
            throw ServerSetupError("cannot listen on \(socket.address): \(ListeningSocket.describe(error.errnoCode))")
        } catch {
            throw ServerSetupError("cannot listen on \(socket.address): \(error)")
        }
        // NIO listens again on an adopted socket, with its default backlog: put ours back.
        _ = listen(socket.descriptor, CInt(clamping: backlog))
        listeners.withLock { $0.append(channel) }
        return channel.localAddress ?? socket.local
    }

    /// A new connection's pipeline. `registry`: count it in now (an `AcceptThread`'s
    /// connection; a server channel's are counted by its `AcceptLimiter`).
    private static func initialize(_ channel: any Channel, registry: ConnectionRegistry?, context: HTTPServerContext) throws {
        registry?.add(channel)
        if let registry, registry.countsFreshConnections {
            try channel.pipeline.syncOperations.addHandler(FirstBytesWatcher(registry: registry))
        }
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(server: context))
    }

    /// From now on, accepts a connection only while fewer than `workers` are claimed: by
    /// requests running (`claimWorker`/`releaseWorker`) and by connections accepted that have
    /// not sent a byte yet. Connections beyond wait in the listen backlog, which every worker
    /// process shares, for a process with a free worker. Call before `startAccepting()`.
    func acceptOnlyWithFreeWorker(workers: Int) {
        registry.limitClaims(to: workers)
    }

    /// A request started running on a worker (see `acceptOnlyWithFreeWorker`).
    func claimWorker() { registry.claim() }

    /// A request's worker is free again.
    func releaseWorker() { registry.release() }

    /// Starts accepting on every bound address.
    func startAccepting() {
        registry.startAccepting()
    }

    /// Closes the listening sockets (connections already accepted go on).
    func closeListeners() async {
        let channels = listeners.withLock { channels -> [any Channel] in
            defer { channels = [] }
            return channels
        }
        for channel in channels { try? await channel.close() }
        let threads = acceptThreads.withLock { threads -> [AcceptThread] in
            defer { threads = [] }
            return threads
        }
        for thread in threads { await thread.stop() }
    }

    /// Tells every connection to finish its current exchange and close (idle ones close at
    /// once), waits for them until `deadline`, then closes the rest.
    func drain(until deadline: NIODeadline) async {
        for channel in registry.open {
            channel.pipeline.fireUserInboundEventTriggered(HTTPDrainEvent())
        }
        await registry.waitUntilEmpty(until: deadline, on: group.next())
        for channel in registry.open { channel.close(promise: nil) }
        await registry.waitUntilEmpty(until: .now() + .seconds(5), on: group.next())
    }
}

/// The open connections of a server, shared by its listeners, and what decides whether one
/// more may be accepted: the connection limit and, when set, the free-worker limit.
final class ConnectionRegistry: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var accepting = false
        /// Listeners that held back an accept; each resumes on its own event loop.
        var paused: [@Sendable () -> Void] = []
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
        /// With a free-worker limit: workers claimed by running requests and by `fresh` connections.
        var claimLimit: Int?
        var claims = 0
        /// Connections accepted that have not sent a byte yet; each claims a worker meanwhile.
        var fresh: Set<ObjectIdentifier> = []

        var mayAccept: Bool { admission == .open }

        var admission: Admission {
            guard accepting && open.count < maxConnections else { return .closed }
            return claimLimit.map { claims < $0 } ?? true ? .open : .workersBusy
        }
        let maxConnections: Int

        /// The paused listeners, if one more may be accepted now (they are then forgotten).
        mutating func takeResumesIfOpen() -> [@Sendable () -> Void] {
            guard mayAccept else { return [] }
            defer { paused = [] }
            return paused
        }
    }

    let maxConnections: Int
    private let state: Mutex<State>
    /// Set once, before accepting starts: whether connections claim a worker until their first byte.
    private let freshCounting = Atomic<Bool>(false)

    init(maxConnections: Int) {
        self.maxConnections = maxConnections
        self.state = Mutex(State(maxConnections: maxConnections))
    }

    var open: [any Channel] { state.withLock { Array($0.open.values) } }

    var countsFreshConnections: Bool { freshCounting.load(ordering: .relaxed) }

    /// Whether a listener may accept one more connection now.
    enum Admission {
        case open
        /// Only the free-worker limit holds it back (an `AcceptThread` may still take a
        /// connection that no other process takes).
        case workersBusy
        /// Not accepting yet (or any more), or at the connection limit.
        case closed
    }

    /// Whether a listener may accept one more connection now, without waiting for a resume.
    var admissionNow: Admission { state.withLock { $0.admission } }

    /// As `mayAccept(orResume:)`, telling why not.
    func admission(orResume resume: @escaping @Sendable () -> Void) -> Admission {
        state.withLock { state in
            let admission = state.admission
            if admission != .open { state.paused.append(resume) }
            return admission
        }
    }

    /// Whether a listener may accept one more connection now; if not, `resume` runs when it may.
    func mayAccept(orResume resume: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            if state.mayAccept { return true }
            state.paused.append(resume)
            return false
        }
    }

    func startAccepting() {
        let resumes = state.withLock { state -> [@Sendable () -> Void] in
            state.accepting = true
            return state.takeResumesIfOpen()
        }
        for resume in resumes { resume() }
    }

    func limitClaims(to workers: Int) {
        freshCounting.store(true, ordering: .relaxed)
        state.withLock { $0.claimLimit = workers }
    }

    func claim() {
        state.withLock { $0.claims += 1 }
    }

    func release() {
        let resumes = state.withLock { state -> [@Sendable () -> Void] in
            state.claims -= 1
            return state.takeResumesIfOpen()
        }
        for resume in resumes { resume() }
    }

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let counted = countsFreshConnections
        state.withLock { state in
            state.open[id] = channel
            if counted {
                state.fresh.insert(id)
                state.claims += 1
            }
        }
        channel.closeFuture.whenComplete { _ in self.remove(id) }
    }

    /// The connection sent its first bytes: it no longer claims a worker (its request will,
    /// once it runs).
    func receivedFirstBytes(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let resumes = state.withLock { state -> [@Sendable () -> Void] in
            guard state.fresh.remove(id) != nil else { return [] }
            state.claims -= 1
            return state.takeResumesIfOpen()
        }
        for resume in resumes { resume() }
    }

    private func remove(_ id: ObjectIdentifier) {
        let (resumes, waiters) = state.withLock { state -> ([@Sendable () -> Void], [CheckedContinuation<Void, Never>]) in
            state.open[id] = nil
            if state.fresh.remove(id) != nil { state.claims -= 1 }
            let resumes = state.takeResumesIfOpen()
            var waiters: [CheckedContinuation<Void, Never>] = []
            if state.open.isEmpty {
                waiters = state.emptyWaiters
                state.emptyWaiters = []
            }
            return (resumes, waiters)
        }
        for resume in resumes { resume() }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no connection is open, or at `deadline`.
    func waitUntilEmpty(until deadline: NIODeadline, on eventLoop: any EventLoop) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let registered = state.withLock { state -> Bool in
                guard !state.open.isEmpty else { return false }
                state.emptyWaiters.append(continuation)
                return true
            }
            guard registered else {
                continuation.resume()
                return
            }
            eventLoop.scheduleTask(deadline: deadline) {
                let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                    defer { state.emptyWaiters = [] }
                    return state.emptyWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }
}

/// On a listening channel: counts accepted connections and holds back the next accept (the
/// `read()` that would accept it) while the server is not accepting or is at its limit.
final class AcceptLimiter: ChannelDuplexHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel
    typealias OutboundIn = Never

    private let registry: ConnectionRegistry
    private var held = false

    init(registry: ConnectionRegistry) {
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        registry.add(unwrapInboundIn(data))
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let accept = registry.mayAccept {
            eventLoop.execute { handler.value.resume(context: loopContext.value) }
        }
        if accept {
            context.read()
        } else {
            held = true
        }
    }

    private func resume(context: ChannelHandlerContext) {
        guard held else { return }
        held = false
        read(context: context)
    }
}

/// First in a connection's pipeline while accepts are limited to free workers: tells the
/// registry when the connection's first bytes arrive, then leaves the pipeline.
final class FirstBytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let registry: ConnectionRegistry

    init(registry: ConnectionRegistry) {
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A whole request is dispatched (and claims its worker) within this call: only then
        // does the connection give its claim back, so the count never dips in between.
        context.fireChannelRead(data)
        registry.receivedFirstBytes(context.channel)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
