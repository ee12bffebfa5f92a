import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Subinterpreters
import Synchronization

/// An HTTP/1.1 server for a WSGI app whose workers are isolated sub-interpreters of this
/// process: `subinterp serve`.
public final class WSGIServer: Service, Sendable {
    public struct Configuration: Sendable {
        /// `MODULE:APP`, or `MODULE:factory()` to call a factory once per worker.
        public var app: String
        public var workers: Int
        /// `HOST:PORT` pairs to listen on; port 0 picks a free port.
        public var binds: [String]
        /// Directory the app is imported from (put first on `sys.path`).
        public var directory: String?
        /// A request that runs longer is interrupted and answered with 504.
        public var timeout: Duration?
        /// A worker is replaced by a fresh interpreter after this many requests.
        public var maxRequests: Int?
        /// Larger request bodies get 413.
        public var maxBody: Int
        /// Larger request heads get 431.
        public var maxHeaderBytes: Int
        /// The listen backlog.
        public var backlog: Int
        /// Idle keep-alive connections, and clients that stall mid-request, are closed after this.
        public var idleTimeout: Duration
        /// On graceful shutdown, in-flight requests get this long to finish.
        public var gracePeriod: Duration
        /// `HOST:PORT` for Prometheus metrics, if any.
        public var metricsBind: String?

        public init(
            app: String, workers: Int = SystemInfo.cpuCount, binds: [String] = ["127.0.0.1:8000"], directory: String? = nil,
            timeout: Duration? = .seconds(30), maxRequests: Int? = nil, maxBody: Int = 16 << 20, maxHeaderBytes: Int = 16 << 10,
            backlog: Int = 2048, idleTimeout: Duration = .seconds(5), gracePeriod: Duration = .seconds(30), metricsBind: String? = nil
        ) {
            self.app = app
            self.workers = workers
            self.binds = binds
            self.directory = directory
            self.timeout = timeout
            self.maxRequests = maxRequests
            self.maxBody = maxBody
            self.maxHeaderBytes = maxHeaderBytes
            self.backlog = backlog
            self.idleTimeout = idleTimeout
            self.gracePeriod = gracePeriod
            self.metricsBind = metricsBind
        }
    }

    public let configuration: Configuration
    let core: ServerCore
    private let group: MultiThreadedEventLoopGroup
    private let channels = Mutex<[any Channel]>([])
    private let metricsChannel = Mutex<(any Channel)?>(nil)

    /// Loads the app in `configuration.workers` interpreters. Fails (with `subinterp check`'s
    /// message for an incompatible extension module) before anything listens.
    public init(
        configuration: Configuration, runtime: PythonRuntime, logger: Logger,
        accessLog: (@Sendable (String) -> Void)? = nil
    ) async throws {
        guard configuration.workers >= 1 else {
            throw SubinterpreterError(.invalidArgument, "--workers must be at least 1")
        }
        for bind in configuration.binds { _ = try Self.parse(bind, flag: "--bind") }
        if let metrics = configuration.metricsBind { _ = try Self.parse(metrics, flag: "--metrics-bind") }
        self.configuration = configuration
        let application = try await WSGIApplication(
            app: configuration.app, workers: configuration.workers, maxRequests: configuration.maxRequests,
            timeout: configuration.timeout, path: configuration.directory.map { [$0] } ?? [], runtime: runtime, logger: logger)
        core = ServerCore(
            application: application, runtime: runtime, logger: logger, accessLog: accessLog,
            limits: HTTPLimits(
                maxBody: configuration.maxBody, maxHeaderBytes: configuration.maxHeaderBytes,
                idleTimeout: .nanoseconds(Int64(configuration.idleTimeout.components.seconds * 1_000_000_000
                    + configuration.idleTimeout.components.attoseconds / 1_000_000_000))),
            workers: configuration.workers)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(SystemInfo.cpuCount, 4)))
    }

    /// An address the server listens on.
    public struct Address: Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
    }

    /// Binds every address and starts accepting. Returns the bound addresses (useful with port 0).
    @discardableResult
    public func start() async throws -> [Address] {
        var bound: [Address] = []
        for bind in configuration.binds {
            let (host, port) = try Self.parse(bind, flag: "--bind")
            let core = self.core
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: Int32(configuration.backlog))
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: core.limits.idleTimeout))
                        try channel.pipeline.syncOperations.addHandler(HTTPHandler(server: core))
                    }
                }
                .bind(host: host, port: port).get()
            channels.withLock { $0.append(channel) }
            if let address = channel.localAddress { bound.append(Address(host: address.ipAddress ?? host, port: address.port ?? port)) }
        }
        if let metrics = configuration.metricsBind {
            let (host, port) = try Self.parse(metrics, flag: "--metrics-bind")
            let channel = try await MetricsEndpoint.bind(host: host, port: port, group: group, core: core)
            metricsChannel.withLock { $0 = channel }
        }
        return bound
    }

    /// The address the metrics endpoint listens on, once started.
    public var metricsAddress: Address? {
        metricsChannel.withLock { channel in
            channel?.localAddress.map { Address(host: $0.ipAddress ?? "?", port: $0.port ?? 0) }
        }
    }

    /// `Service`: serves until graceful shutdown, then drains and stops.
    public func run() async throws {
        if channels.withLock({ $0.isEmpty }) { try await start() }
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period; responses then
    /// carry `Connection: close`), ends every worker interpreter, and returns.
    public func stop() async {
        core.beginDraining()
        let listening = channels.withLock { channels -> [any Channel] in
            defer { channels = [] }
            return channels
        }
        for channel in listening { try? await channel.close() }
        let deadline = ContinuousClock.now + configuration.gracePeriod
        while core.activeRequests > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        await core.application.pool.shutdown(cancelPending: true)
        if let metrics = metricsChannel.withLock({ $0 }) { try? await metrics.close() }
        try? await group.shutdownGracefully()
    }

    /// Loads the app again in fresh interpreters and switches new requests to them; requests
    /// already running finish on the old workers, which are then closed. No request is dropped.
    public func reload() async throws {
        let old = core.application
        let fresh = try await WSGIApplication(
            app: configuration.app, workers: configuration.workers, maxRequests: configuration.maxRequests,
            timeout: configuration.timeout, path: configuration.directory.map { [$0] } ?? [], runtime: core.runtime,
            logger: core.logger)
        core.replace(with: fresh)
        await old.pool.shutdown(cancelPending: false)
    }

    static func parse(_ bind: String, flag: String) throws -> (String, Int) {
        guard let colon = bind.lastIndex(of: ":"), let port = Int(bind[bind.index(after: colon)...]), (0...65535).contains(port) else {
            throw SubinterpreterError(.invalidArgument, "\(flag) \(bind): give HOST:PORT, e.g. 127.0.0.1:8000 (port 0 picks a free one)")
        }
        var host = String(bind[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }
}

/// What every connection shares: the current app, limits, counters for metrics, draining state.
final class ServerCore: Sendable {
    private let current: Mutex<WSGIApplication>
    let runtime: PythonRuntime
    let logger: Logger
    let accessLog: (@Sendable (String) -> Void)?
    let limits: HTTPLimits
    let workers: Int
    let metrics = Metrics()
    private let state = Mutex<(active: Int, draining: Bool)>((0, false))

    init(application: WSGIApplication, runtime: PythonRuntime, logger: Logger, accessLog: (@Sendable (String) -> Void)?, limits: HTTPLimits, workers: Int) {
        current = Mutex(application)
        self.runtime = runtime
        self.logger = logger
        self.accessLog = accessLog
        self.limits = limits
        self.workers = workers
    }

    var application: WSGIApplication { current.withLock { $0 } }
    var isDraining: Bool { state.withLock { $0.draining } }
    var activeRequests: Int { state.withLock { $0.active } }

    func beginDraining() { state.withLock { $0.draining = true } }

    func requestStarted() { state.withLock { $0.active += 1 } }

    func requestFinished(status: Int, elapsed: Duration) {
        state.withLock { $0.active -= 1 }
        metrics.record(status: status, elapsed: elapsed)
    }

    func requestRejected(status: Int) { metrics.record(status: status, elapsed: .zero) }

    func replace(with fresh: WSGIApplication) {
        current.withLock { $0 = fresh }
        logger.info("reloaded the app in fresh interpreters", metadata: ["app": "\(fresh.app)"])
    }
}
