import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Subinterpreters
import Synchronization

/// An HTTP/1.1 server for a WSGI or ASGI app whose workers are isolated sub-interpreters of
/// this process: `subinterp serve`. Both kinds of app share the HTTP layer (`HTTP/`); a WSGI app
/// runs on a pool of workers (`WSGIApplication`), an ASGI app on an event loop in each worker
/// (`ASGIBridge`), and WebSocket connections are ASGI's.
public final class AppServer: Service, Sendable {
    public struct Configuration: Sendable, Codable {
        /// `MODULE:APP`, or `MODULE:factory()` to call a factory once per worker.
        public var app: String
        /// How to call the app; nil: decide from the app (an async callable is ASGI).
        public var interface: AppInterface?
        public var workers: Int
        /// `HOST:PORT` pairs to listen on; port 0 picks a free port, `:PORT` means all interfaces.
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
        /// Idle keep-alive connections, and clients that send nothing for this long in the middle
        /// of a request, are closed after this.
        public var idleTimeout: Duration
        /// On graceful shutdown, in-flight requests get this long to finish.
        public var gracePeriod: Duration
        /// `HOST:PORT` for Prometheus metrics, if any.
        public var metricsBind: String?
        /// Connections open at once in this process; at the limit, new ones wait in the backlog.
        public var maxConnections: Int
        /// A request's head and body must arrive within this (from its first byte), else 408.
        public var requestReadTimeout: Duration
        /// A connection whose client takes less than 64 KiB of a response in this long is dropped.
        public var writeTimeout: Duration
        /// Request bodies held in memory at once, all connections together; a request that would
        /// go over gets 503 with `Retry-After`.
        public var maxBodyMemory: Int
        /// ASGI: whether the app gets lifespan events.
        public var lifespan: ASGILifespanMode
        /// ASGI: requests and WebSocket connections in flight at once (all workers); beyond it, 503.
        public var limitConcurrency: Int?
        /// ASGI: the scope's `root_path` (the prefix under which the app is mounted).
        public var rootPath: String
        /// ASGI: larger WebSocket messages close the connection with 1009.
        public var webSocketMaxSize: Int
        /// Where the workers run the app: isolated sub-interpreters (the default), or this
        /// process's main interpreter (`.main`, with one worker: a worker process of
        /// `subinterp serve --isolation processes`, where every extension module loads).
        public var interpreterKind: InterpreterKind = .isolated
        /// Worker processes serving the app, this one among them (a supervisor's worker
        /// processes set it; WSGI's `wsgi.multiprocess` says whether it is more than one).
        public var processes = 1

        public init(
            app: String, workers: Int = SystemInfo.cpuCount, binds: [String] = ["127.0.0.1:8000"], directory: String? = nil,
            timeout: Duration? = .seconds(30), maxRequests: Int? = nil, maxBody: Int = 16 << 20, maxHeaderBytes: Int = 16 << 10,
            backlog: Int = 2048, idleTimeout: Duration = .seconds(5), gracePeriod: Duration = .seconds(30), metricsBind: String? = nil,
            maxConnections: Int = 1000, requestReadTimeout: Duration = .seconds(30), writeTimeout: Duration = .seconds(30),
            maxBodyMemory: Int = 256 << 20, interface: AppInterface? = nil, lifespan: ASGILifespanMode = .auto,
            limitConcurrency: Int? = nil, rootPath: String = "", webSocketMaxSize: Int = 16 << 20
        ) {
            self.app = app
            self.interface = interface
            self.lifespan = lifespan
            self.limitConcurrency = limitConcurrency
            self.rootPath = rootPath
            self.webSocketMaxSize = webSocketMaxSize
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
            self.maxConnections = maxConnections
            self.requestReadTimeout = requestReadTimeout
            self.writeTimeout = writeTimeout
            self.maxBodyMemory = maxBodyMemory
        }
    }

    /// An address the server listens on.
    public struct Address: Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        /// Listening on every IPv4 interface (`--bind :PORT`).
        public var allInterfaces = false
        /// `http://HOST:PORT`
        public var url: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
        public var description: String { url + (allInterfaces ? " (all interfaces)" : "") }

        init(host: String, port: Int, allInterfaces: Bool = false) {
            self.host = host
            self.port = port
            self.allInterfaces = allInterfaces
        }

        /// Where `socket` listens: `bound`, as NIO reports it.
        init(_ socket: ListeningSocket, _ bound: SocketAddress) {
            self.init(
                host: bound.ipAddress ?? socket.address.host, port: bound.port ?? socket.address.port,
                allInterfaces: socket.address.allInterfaces)
        }
    }

    public let configuration: Configuration
    /// How the app is called (`configuration.interface`, or what the app turned out to be).
    public let interface: AppInterface
    let runtime: PythonRuntime
    let logger: Logger
    let dispatcher = AppDispatcher()
    let metrics = Metrics()
    private let group: MultiThreadedEventLoopGroup
    private let http: HTTPServer
    private let appContext: HTTPServerContext
    private let metricsServer: HTTPServer
    /// The addresses the app is served on (bound when the server was made).
    public let addresses: [Address]
    /// The address of the metrics endpoint, if any.
    public let metricsAddress: Address?
    private let stopped = Mutex(false)

    /// What a worker process of a supervisor (`subinterp serve --processes M`) needs of its server.
    package struct WorkerProcessRole: Sendable {
        /// Called (on any thread) each time a worker is done with a request.
        package var requestFinished: @Sendable () -> Void

        package init(requestFinished: @escaping @Sendable () -> Void) {
            self.requestFinished = requestFinished
        }
    }

    /// Binds every address first (so a port in use or an unknown host is reported at once, in
    /// one line, before any worker starts), then loads the app in `configuration.workers`
    /// interpreters (failing with `subinterp check`'s message for an incompatible extension
    /// module, or an ASGI app's `lifespan.startup.failed` message). Nothing is accepted before
    /// `start()`.
    public convenience init(
        configuration: Configuration, runtime: PythonRuntime, logger: Logger,
        accessLog: (@Sendable (String) -> Void)? = nil
    ) async throws {
        let sockets = try ServerSockets.bind(
            binds: configuration.binds, metricsBind: configuration.metricsBind, backlog: configuration.backlog)
        do {
            try await self.init(configuration: configuration, sockets: sockets, runtime: runtime, logger: logger, accessLog: accessLog)
        } catch {
            sockets.close()
            throw error
        }
        // The server's listeners hold duplicates of the sockets.
        sockets.close()
    }

    /// Serves on `sockets`, bound already (by `ServerSockets.bind`, or inherited from a
    /// supervisor); they stay the caller's to close. As a worker process (`role`), a WSGI
    /// server accepts a connection only while one of its workers is free, so connections wait
    /// in the shared backlog for a process that has room, and it reports finished requests.
    package init(
        configuration: Configuration, sockets: ServerSockets, runtime: PythonRuntime, logger: Logger,
        accessLog: (@Sendable (String) -> Void)? = nil, role: WorkerProcessRole? = nil
    ) async throws {
        guard configuration.workers >= 1 else {
            throw SubinterpreterError(.invalidArgument, "--workers must be at least 1")
        }
        if let limit = configuration.limitConcurrency, limit < 1 {
            throw SubinterpreterError(.invalidArgument, "--limit-concurrency must be at least 1")
        }
        guard configuration.webSocketMaxSize >= 1, configuration.webSocketMaxSize <= Int(UInt32.max) else {
            throw SubinterpreterError(.invalidArgument, "--ws-max-size must be between 1 and \(UInt32.max) bytes")
        }
        self.configuration = configuration
        self.runtime = runtime
        self.logger = logger
        var limits = HTTPLimits()
        limits.parser.maxBody = configuration.maxBody
        limits.parser.maxHeadBytes = configuration.maxHeaderBytes
        limits.parser.maxRequestLine = min(8 << 10, configuration.maxHeaderBytes)
        limits.idleTimeout = Self.timeAmount(configuration.idleTimeout)
        limits.requestReadTimeout = Self.timeAmount(configuration.requestReadTimeout)
        limits.writeTimeout = Self.timeAmount(configuration.writeTimeout)
        let metrics = self.metrics
        appContext = HTTPServerContext(
            application: dispatcher, limits: limits, bodyBudget: HTTPBodyBudget(limit: configuration.maxBodyMemory), logger: logger,
            recordsRequestLine: accessLog != nil
        ) { record in
            metrics.record(status: record.status, elapsed: record.duration)
            if let accessLog, let line = record.requestLine {
                accessLog(AccessLog.entry(client: record.client, requestLine: line, status: record.status, bytes: record.bytes))
            }
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(SystemInfo.cpuCount, 4)))
        http = HTTPServer(group: group, maxConnections: configuration.maxConnections)
        metricsServer = HTTPServer(group: group, maxConnections: 64)
        do {
            var bound: [Address] = []
            for socket in sockets.app {
                // A worker process shares its sockets with the other worker processes.
                let address = try await http.adopt(socket, context: appContext, backlog: configuration.backlog, shared: role != nil)
                bound.append(Address(socket, address))
            }
            addresses = bound
            if let socket = sockets.metrics {
                let context = HTTPServerContext(
                    application: MetricsApplication(metrics: metrics, dispatcher: dispatcher, workers: configuration.workers),
                    limits: HTTPLimits(), bodyBudget: HTTPBodyBudget(limit: 1 << 20), logger: logger)
                metricsAddress = Address(socket, try await metricsServer.adopt(socket, context: context, backlog: 64))
            } else {
                metricsAddress = nil
            }
            let interface = try await Self.interface(of: configuration, runtime: runtime)
            self.interface = interface
            dispatcher.install(try await Self.load(configuration, interface: interface, runtime: runtime, logger: logger))
            if let role {
                let http = self.http
                // A WSGI worker runs one request at a time; an ASGI loop serves many at once, so
                // only a WSGI server waits for a free worker before it accepts.
                if interface == .wsgi { http.acceptOnlyWithFreeWorker(workers: configuration.workers) }
                let gated = interface == .wsgi
                dispatcher.observe(
                    started: { if gated { http.claimWorker() } },
                    finished: {
                        if gated { http.releaseWorker() }
                        role.requestFinished()
                    })
            }
        } catch {
            await http.closeListeners()
            await metricsServer.closeListeners()
            try? await group.shutdownGracefully()
            if let setup = error as? ServerSetupError { throw SubinterpreterError(.invalidArgument, setup.description) }
            throw error
        }
    }

    /// The interface configured, or (`--interface auto`) what the app is, as uvicorn decides.
    private static func interface(of configuration: Configuration, runtime: PythonRuntime) async throws -> AppInterface {
        if let given = configuration.interface { return given }
        do {
            return try await AppInterface.detect(
                app: configuration.app, path: configuration.directory.map { [$0] } ?? [], runtime: runtime,
                kind: configuration.interpreterKind)
        } catch let error as SubinterpreterError {
            throw AppLoadError.wrap(app: configuration.app, error)
        }
    }

    private static func load(
        _ configuration: Configuration, interface: AppInterface, runtime: PythonRuntime, logger: Logger
    ) async throws -> any LoadedApp {
        let path = configuration.directory.map { [$0] } ?? []
        switch interface {
        case .wsgi:
            return try await WSGIApplication(
                app: configuration.app, workers: configuration.workers, maxRequests: configuration.maxRequests,
                timeout: configuration.timeout, path: path, kind: configuration.interpreterKind,
                multiprocess: configuration.processes > 1, runtime: runtime, logger: logger)
        case .asgi:
            var asgi = ASGIConfiguration(app: configuration.app, workers: configuration.workers, path: path)
            asgi.rootPath = configuration.rootPath
            asgi.lifespan = configuration.lifespan
            asgi.timeout = configuration.timeout
            asgi.limitConcurrency = configuration.limitConcurrency
            asgi.maxRequests = configuration.maxRequests
            asgi.stopLimit = min(asgi.stopLimit, configuration.gracePeriod)
            asgi.interpreterKind = configuration.interpreterKind
            return try await ASGIBridge.start(
                configuration: asgi, webSocketMaxSize: configuration.webSocketMaxSize, runtime: runtime, logger: logger)
        }
    }

    private static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    /// Starts accepting connections. Returns the bound addresses (useful with port 0).
    @discardableResult
    public func start() async throws -> [Address] {
        http.startAccepting()
        metricsServer.startAccepting()
        return addresses
    }

    /// `Service`: serves until graceful shutdown, then drains and stops.
    public func run() async throws {
        http.startAccepting()
        metricsServer.startAccepting()
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period; their responses
    /// carry `Connection: close`, and idle connections close at once), ends every worker
    /// interpreter, and returns.
    public func stop() async {
        guard stopped.withLock({ let first = !$0; $0 = true; return first }) else { return }
        logger.info("stopping: no new connections; finishing the requests in flight")
        let deadline = NIODeadline.now() + Self.timeAmount(configuration.gracePeriod)
        appContext.beginDraining()
        await http.closeListeners()
        await metricsServer.closeListeners()
        await http.drain(until: deadline)
        // Requests whose clients left may still run; they get what is left of the grace period.
        let generations = dispatcher.all
        let timer = group.next().scheduleTask(deadline: deadline) { for generation in generations { generation.giveUp() } }
        for generation in generations { await generation.idle() }
        timer.cancel()
        for generation in generations {
            generation.giveUp()
            await generation.application.shutdown(cancelPending: true)
        }
        await metricsServer.drain(until: .now())
        try? await group.shutdownGracefully()
    }

    /// Loads the app again in fresh interpreters and switches new requests to them; requests
    /// (and WebSocket connections) already dispatched finish on the old workers, which end when
    /// the last of them is done. No request is dropped.
    public func reload() async throws {
        if let old = try await switchToFreshLoad() { await retire(old) }
    }

    /// The first half of a reload: loads the app in fresh interpreters and makes them current.
    /// Returns the generation they replace.
    func switchToFreshLoad() async throws -> AppGeneration? {
        let fresh = try await Self.load(configuration, interface: interface, runtime: runtime, logger: logger)
        guard !stopped.withLock({ $0 }) else {
            await fresh.shutdown(cancelPending: true)
            return nil
        }
        let old = dispatcher.install(fresh)
        logger.info("reloaded the app in fresh interpreters", metadata: ["app": "\(configuration.app)"])
        return old
    }

    /// The second half: waits until no request holds `old`, then ends its workers.
    func retire(_ old: AppGeneration) async {
        await old.idle()
        await old.application.shutdown(cancelPending: false)
        dispatcher.forget(old)
    }
}

/// Common Log Format lines.
enum AccessLog {
    static func entry(client: String, requestLine: String, status: Int, bytes: Int) -> String {
        var time = time_t(Int(Date().timeIntervalSince1970))
        var parts = tm()
        localtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%d/%b/%Y:%H:%M:%S %z", &parts)
        let stamp = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Cut at 1 KiB, so that a line is one atomic write to a pipe (PIPE_BUF: 4 KiB) and lines
        // from several worker processes never interleave.
        let line = requestLine.utf8.count > 1024 ? String(decoding: requestLine.utf8.prefix(1024), as: UTF8.self) + "..." : requestLine
        return "\(client.isEmpty ? "-" : client) - - [\(stamp)] \"\(line)\" \(status) \(bytes > 0 ? String(bytes) : "-")"
    }
}
