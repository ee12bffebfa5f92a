import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Subinterpreters
import UnixSignals
import SubinterpServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a WSGI or ASGI app over HTTP/1.1 (and WebSocket) on isolated sub-interpreters, in one process or several.",
        discussion: """
            Workers: --processes M worker processes × --workers N interpreters each. With one process \
            (the default) this process serves. With several, or --isolation processes, or --max-memory, \
            this process supervises worker processes and runs no Python itself: it binds the sockets, \
            starts the workers, replaces one that dies, and sums their metrics. --isolation processes \
            runs the app in the main interpreter of each worker process instead, one request at a time \
            per process, so every extension module loads; there, every worker is a process (M × N of them).
            Every option can also come from the environment: SUBINTERP_WORKERS, SUBINTERP_PROCESSES, \
            SUBINTERP_ISOLATION, SUBINTERP_BIND (comma-separated), SUBINTERP_CHDIR, SUBINTERP_PYTHON, \
            SUBINTERP_INTERFACE, SUBINTERP_TIMEOUT, SUBINTERP_MAX_REQUESTS, SUBINTERP_MAX_MEMORY, \
            SUBINTERP_MAX_BODY, SUBINTERP_MAX_BODY_MEMORY, SUBINTERP_BACKLOG, \
            SUBINTERP_MAX_CONNECTIONS, SUBINTERP_REQUEST_READ_TIMEOUT, SUBINTERP_WRITE_TIMEOUT, \
            SUBINTERP_ACCESS_LOG (1), SUBINTERP_LOG_LEVEL, SUBINTERP_METRICS_BIND, SUBINTERP_LIFESPAN, \
            SUBINTERP_LIMIT_CONCURRENCY, SUBINTERP_ROOT_PATH, SUBINTERP_WS_MAX_SIZE. A flag wins over its variable.
            SIGTERM or SIGINT: stop accepting, finish in-flight requests, exit 0. SIGHUP: load the \
            app again in fresh interpreters (or replace the worker processes one after another) \
            without dropping a request.
            """)

    @OptionGroup var python: PythonOptions
    @Argument(help: "The app: MODULE:APP, or MODULE:factory() to call a factory.") var app: String
    @Option(help: "auto, wsgi or asgi: how to call the app (default auto: an async callable is ASGI).") var interface: String?
    @Option(help: "Worker interpreters in each process (default: the CPU count, divided among --processes).") var workers: Int?
    @Option(help: "Worker processes, each with --workers interpreters (default 1: this process serves).") var processes: Int?
    @Option(help: "interpreters, processes or auto: run the app in isolated sub-interpreters, or in the main interpreter of one worker process per worker (every extension module loads; one request at a time each), or (auto, the default) in interpreters, and in processes (after one warning) if an extension module refuses them.")
    var isolation: String?
    @Option(help: "HOST:PORT to listen on; repeat for several (default 127.0.0.1:8000; :PORT for all interfaces; port 0 picks a free one).")
    var bind: [String] = []
    @Option(help: "Import the app from this directory.") var chdir: String?
    @Option(help: "Interrupt a request that runs longer than this many seconds and answer 504 (default 30; 0 turns it off).") var timeout: Double?
    @Option(help: "Replace a worker after this many requests: a fresh interpreter, or with --isolation processes a fresh worker process.")
    var maxRequests: Int?
    @Option(help: "Replace a worker process (gracefully) once its resident memory passes this many bytes.") var maxMemory: Int?
    @Option(help: "Answer 413 to request bodies larger than this many bytes (default 16 MiB).") var maxBody: Int?
    @Option(help: "Answer 503 (with Retry-After) to a request whose body would take the bodies held in memory at once past this many bytes (default 256 MiB, at least --max-body).")
    var maxBodyMemory: Int?
    @Option(help: "The listen backlog (default 2048).") var backlog: Int?
    @Option(help: "Connections open at once; at the limit, new ones wait in the listen backlog (default 1000).") var maxConnections: Int?
    @Option(help: "Answer 408 to a request whose head and body do not arrive within this many seconds of its first byte (default 30).")
    var requestReadTimeout: Double?
    @Option(help: "Drop a connection whose client takes less than 64 KiB of a response in this many seconds, freeing its worker (default 30).")
    var writeTimeout: Double?
    @Flag(help: "Print an access log line per request (Common Log Format) on stdout.") var accessLog = false
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
    @Option(help: "HOST:PORT for Prometheus metrics.") var metricsBind: String?
    @Option(help: "ASGI: auto, on or off: lifespan events for the app (default auto: used if the app supports them).")
    var lifespan: String?
    @Option(help: "ASGI: answer 503 beyond this many requests and WebSocket connections in flight at once (default: no limit).")
    var limitConcurrency: Int?
    @Option(help: "ASGI: the scope's root_path, where a proxy mounts the app (e.g. /api).") var rootPath: String?
    @Option(help: "ASGI: close WebSocket connections with 1009 on messages larger than this many bytes (default 16 MiB).")
    var wsMaxSize: Int?

    private func environment(_ name: String) -> String? {
        let value = ProcessInfo.processInfo.environment["SUBINTERP_" + name]
        return value?.isEmpty == false ? value : nil
    }

    private func number<T: LosslessStringConvertible>(_ flag: T?, _ name: String, _ option: String) throws -> T? {
        if let flag { return flag }
        guard let text = environment(name) else { return nil }
        guard let value = T(text) else { throw ValidationError("SUBINTERP_\(name)=\(text) is not a valid value for \(option)") }
        return value
    }

    /// Everything the flags and the environment say, checked.
    private func settings() throws -> ServeSettings {
        let level = logLevel ?? environment("LOG_LEVEL") ?? "info"
        guard Logger.Level(rawValue: level) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        let isolationName = (isolation ?? environment("ISOLATION") ?? "auto").lowercased()
        guard let isolation = Isolation(rawValue: isolationName) else {
            throw ValidationError("--isolation must be interpreters, processes or auto, not '\(isolationName)'")
        }
        let givenProcesses = try number(self.processes, "PROCESSES", "--processes")
        let givenWorkers = try number(self.workers, "WORKERS", "--workers")
        if let givenProcesses, givenProcesses < 1 { throw ValidationError("--processes must be at least 1") }
        if let givenWorkers, givenWorkers < 1 { throw ValidationError("--workers must be at least 1") }
        var processes = givenProcesses ?? 1
        var workers = givenWorkers ?? max(1, SystemInfo.cpuCount / processes)
        if isolation == .processes {
            // Every worker is a process: M × N of them, or the CPU count with neither flag.
            processes = (givenProcesses ?? 1) * (givenWorkers ?? (givenProcesses == nil ? SystemInfo.cpuCount : 1))
            workers = 1
        }
        let timeout = try number(self.timeout, "TIMEOUT", "--timeout") ?? 30
        let maxRequests = try number(self.maxRequests, "MAX_REQUESTS", "--max-requests")
        let maxMemory = try number(self.maxMemory, "MAX_MEMORY", "--max-memory")
        let maxBody = try number(self.maxBody, "MAX_BODY", "--max-body") ?? 16 << 20
        // Unless given, the budget is 256 MiB, or one body of --max-body if that is larger.
        let maxBodyMemory = try number(self.maxBodyMemory, "MAX_BODY_MEMORY", "--max-body-memory") ?? max(256 << 20, maxBody)
        let backlog = try number(self.backlog, "BACKLOG", "--backlog") ?? 2048
        let maxConnections = try number(self.maxConnections, "MAX_CONNECTIONS", "--max-connections") ?? 1000
        let requestReadTimeout = try number(self.requestReadTimeout, "REQUEST_READ_TIMEOUT", "--request-read-timeout") ?? 30
        let writeTimeout = try number(self.writeTimeout, "WRITE_TIMEOUT", "--write-timeout") ?? 30
        if timeout < 0 { throw ValidationError("--timeout must be >= 0 seconds") }
        if let maxRequests, maxRequests < 1 { throw ValidationError("--max-requests must be at least 1") }
        if let maxMemory, maxMemory < 1 << 20 { throw ValidationError("--max-memory is in bytes and must be at least 1 MiB (1048576)") }
        if maxBody < 0 { throw ValidationError("--max-body must be >= 0") }
        if maxBodyMemory < maxBody { throw ValidationError("--max-body-memory must be at least --max-body (\(maxBody) bytes)") }
        if maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        if !(requestReadTimeout > 0) { throw ValidationError("--request-read-timeout must be > 0 seconds") }
        if !(writeTimeout > 0) { throw ValidationError("--write-timeout must be > 0 seconds") }
        let interfaceName = (interface ?? environment("INTERFACE") ?? "auto").lowercased()
        guard interfaceName == "auto" || AppInterface(rawValue: interfaceName) != nil else {
            throw ValidationError("--interface must be auto, wsgi or asgi, not '\(interfaceName)'")
        }
        let lifespanName = (lifespan ?? environment("LIFESPAN") ?? "auto").lowercased()
        guard let lifespanMode = ASGILifespanMode(rawValue: lifespanName) else {
            throw ValidationError("--lifespan must be auto, on or off, not '\(lifespanName)'")
        }
        let limitConcurrency = try number(self.limitConcurrency, "LIMIT_CONCURRENCY", "--limit-concurrency")
        if let limitConcurrency, limitConcurrency < 1 { throw ValidationError("--limit-concurrency must be at least 1") }
        let wsMaxSize = try number(self.wsMaxSize, "WS_MAX_SIZE", "--ws-max-size") ?? 16 << 20
        if wsMaxSize < 1 || wsMaxSize > Int(UInt32.max) { throw ValidationError("--ws-max-size must be between 1 and \(UInt32.max) bytes") }
        var rootPath = rootPath ?? environment("ROOT_PATH") ?? ""
        if !rootPath.isEmpty && !rootPath.hasPrefix("/") {
            throw ValidationError("--root-path must start with / (e.g. /api), not '\(rootPath)'")
        }
        while rootPath.hasSuffix("/") { rootPath.removeLast() }
        let binds = bind.isEmpty ? (environment("BIND")?.split(separator: ",").map(String.init) ?? ["127.0.0.1:8000"]) : bind
        let directory = chdir ?? environment("CHDIR")
        if let directory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--chdir \(directory) is not a directory")
            }
        }
        var configuration = AppServer.Configuration(
            app: app, workers: workers, binds: binds, directory: nil,
            timeout: timeout > 0 ? .milliseconds(Int(timeout * 1000)) : nil, maxRequests: maxRequests, maxBody: maxBody,
            backlog: backlog, metricsBind: metricsBind ?? environment("METRICS_BIND"), maxConnections: maxConnections,
            requestReadTimeout: .milliseconds(Int(requestReadTimeout * 1000)), writeTimeout: .milliseconds(Int(writeTimeout * 1000)),
            maxBodyMemory: maxBodyMemory)
        configuration.interface = AppInterface(rawValue: interfaceName)
        configuration.lifespan = lifespanMode
        configuration.limitConcurrency = limitConcurrency
        configuration.rootPath = rootPath
        configuration.webSocketMaxSize = wsMaxSize
        return ServeSettings(
            server: configuration, isolation: isolation, processes: processes, python: python.python, logLevel: level,
            accessLog: accessLog || environment("ACCESS_LOG") == "1", maxMemory: maxMemory)
    }

    func run() async throws {
        var settings = try settings()
        bootstrapLogging(settings.logLevel)
        // Every socket first: a port in use is one line, before Python or any worker starts.
        let sockets = try failing {
            try ServerSockets.bind(
                binds: settings.server.binds, metricsBind: settings.server.metricsBind, backlog: settings.server.backlog)
        }
        // The Python to use, found (not started): a relative --python is relative to where the
        // command was started.
        let installation = try failing { try PythonInstallation.find(explicit: python.python) }
        settings.python = installation.executable
        if let directory = chdir ?? environment("CHDIR") { _ = FileManager.default.changeCurrentDirectoryPath(directory) }
        settings.server.directory = FileManager.default.currentDirectoryPath
        if settings.supervised {
            try await supervise(settings, sockets)
        } else {
            try await serveInThisProcess(settings, sockets, installation)
        }
    }

    /// One process, interpreters: today's server. Under `--isolation auto`, an app an
    /// extension module keeps out of sub-interpreters is handed to a supervisor of worker
    /// processes instead: this process becomes one, by `exec`, keeping its sockets bound.
    private func serveInThisProcess(_ settings: ServeSettings, _ sockets: ServerSockets, _ installation: PythonInstallation) async throws {
        let runtime = try failing { try PythonRuntime.start(installation) }
        let logger = Logger(label: "subinterp.serve")
        let printAccess: (@Sendable (String) -> Void)? = settings.accessLog ? { @Sendable line in writeAccessLine(line) } : nil
        let server: AppServer
        do {
            server = try await AppServer(
                configuration: settings.server, sockets: sockets, runtime: runtime, logger: logger, accessLog: printAccess)
        } catch let error as SubinterpreterError
            where error.code == .incompatibleExtensionModule && settings.isolation == .auto && error.moduleName != nil
        {
            let fallback = settings.fallingBackToProcesses()
            printError("warning: " + Supervisor.fallbackWarning(app: settings.server.app, module: error.moduleName!, processes: fallback.processes))
            try failing { try Supervisor.exec(settings: fallback, sockets: sockets, argv0: CommandLine.arguments[0]) }
            return
        } catch let error as SubinterpreterError where error.code == .incompatibleExtensionModule {
            // The line names the module and what to do; the import's traceback adds nothing.
            printError(error.message)
            throw ExitCode(1)
        } catch let error as SubinterpreterError {
            // One line; the traceback (the user's frames) only at --log-level debug.
            printError(error.message)
            let traceback = AppLoadError.traceback(of: error, app: settings.server.app)
            if !traceback.isEmpty { logger.debug("the load failure's traceback:\n\(traceback)") }
            throw ExitCode(1)
        }
        sockets.close()  // the server's listeners hold their own duplicates
        let addresses = server.addresses.map(\.description).joined(separator: ", ")
        var ready = "subinterp: serving \(settings.server.app) on \(addresses) with \(settings.server.workers) worker interpreters (\(server.interface.rawValue.uppercased()))"
        if let metrics = server.metricsAddress {
            ready += "; metrics on \(metrics.url)/metrics" + (metrics.allInterfaces ? " (all interfaces)" : "")
        }
        // Every signal is trapped before the readiness line: a SIGHUP or SIGTERM sent as soon as
        // it appears must reload or stop the server, not kill it.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let group = ServiceGroup(
            services: [Announced(server: server, line: ready)], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await _ in hangups {
                    do {
                        try await server.reload()
                    } catch {
                        logger.error("reload failed; still serving the old interpreters", metadata: ["error": "\(error)"])
                    }
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
        _ = runtime.finalize()
    }
}

/// Runs a supervisor of worker processes until SIGTERM or SIGINT (SIGHUP replaces the
/// processes); exits with one line if the app cannot be served.
func supervise(_ settings: ServeSettings, _ sockets: ServerSockets) async throws {
    let logger = Logger(label: "subinterp.serve")
    let supervisor = Supervisor(settings: settings, sockets: sockets, argv0: CommandLine.arguments[0], logger: logger) { line in
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
    let hangups = await UnixSignalsSequence(trapping: .sighup)
    let group = ServiceGroup(
        services: [supervisor], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
    try await failing {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await _ in hangups { supervisor.reload() }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}

/// Logs go to stderr through swift-log, at `level`.
func bootstrapLogging(_ level: String, metadata: Logger.Metadata = [:]) {
    let logLevel = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = logLevel
        handler.metadata = metadata
        return handler
    }
}

/// An access-log line on stdout in one `write`, so lines of different worker processes never
/// interleave (each is well under `PIPE_BUF`: the request line in it is cut at 1 KiB).
func writeAccessLine(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    bytes.withUnsafeMutableBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(1, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}

/// The server as the service group runs it: it starts accepting and says so on stderr once the
/// group has trapped its signals.
private struct Announced: Service {
    let server: AppServer
    let line: String

    func run() async throws {
        try await server.start()
        FileHandle.standardError.write(Data((line + "\n").utf8))
        try await server.run()
    }
}
