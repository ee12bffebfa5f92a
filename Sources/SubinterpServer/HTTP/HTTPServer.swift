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

    init(group: any EventLoopGroup, maxConnections: Int) {
        self.group = group
        self.maxConnections = maxConnections
        self.registry = ConnectionRegistry(maxConnections: maxConnections)
    }

    /// Binds `address` for `context`'s application; accepting starts with `startAccepting()`.
    /// Returns the bound address (the port chosen, for port 0).
    func bind(_ address: ListenAddress, context: HTTPServerContext, backlog: Int) async throws -> SocketAddress {
        let resolved: SocketAddress
        do {
            resolved = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
        } catch {
            throw ServerSetupError("cannot listen on \(address): unknown host \(address.host)")
        }
        let registry = self.registry
        let limits = context.limits
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: Int32(clamping: backlog))
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // One accept per read, so the connection limit is exact.
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
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(server: context))
                    }
                }
                .bind(to: resolved).get()
        } catch let error as IOError {
            throw ServerSetupError("cannot listen on \(address): \(Self.describe(error.errnoCode))")
        } catch {
            throw ServerSetupError("cannot listen on \(address): \(error)")
        }
        listeners.withLock { $0.append(channel) }
        return channel.localAddress ?? resolved
    }

    private static func describe(_ code: CInt) -> String {
        switch code {
        case EADDRINUSE: "address already in use (another server is listening there; pick another port)"
        case EACCES: "permission denied (ports below 1024 need privileges)"
        case EADDRNOTAVAIL: "address not available (no interface of this machine has it)"
        default: String(cString: strerror(code)).lowercased()
        }
    }

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

/// The open connections of a server, shared by its listeners.
final class ConnectionRegistry: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var accepting = false
        /// Listeners that held back an accept; each resumes on its own event loop.
        var paused: [@Sendable () -> Void] = []
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let maxConnections: Int
    private let state = Mutex(State())

    init(maxConnections: Int) {
        self.maxConnections = maxConnections
    }

    var open: [any Channel] { state.withLock { Array($0.open.values) } }

    /// Whether a listener may accept one more connection now; if not, `resume` runs when it may.
    func mayAccept(orResume resume: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            if state.accepting && state.open.count < maxConnections { return true }
            state.paused.append(resume)
            return false
        }
    }

    func startAccepting() {
        let resumes = state.withLock { state -> [@Sendable () -> Void] in
            state.accepting = true
            defer { state.paused = [] }
            return state.paused
        }
        for resume in resumes { resume() }
    }

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLock { $0.open[id] = channel }
        channel.closeFuture.whenComplete { _ in self.remove(id) }
    }

    private func remove(_ id: ObjectIdentifier) {
        let (resumes, waiters) = state.withLock { state -> ([@Sendable () -> Void], [CheckedContinuation<Void, Never>]) in
            state.open[id] = nil
            var resumes: [@Sendable () -> Void] = []
            if state.accepting && state.open.count < maxConnections {
                resumes = state.paused
                state.paused = []
            }
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
