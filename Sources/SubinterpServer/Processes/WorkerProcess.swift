import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Subinterpreters
import Synchronization
import UnixSignals

/// One worker process of a supervisor (`subinterp serve-worker`, started by `Supervisor`):
/// serves the app on the listening sockets it inherited, talks to its supervisor over the
/// control channel (`ControlMessage`), and asks to be replaced when it has served
/// `--max-requests` (processes isolation) or grown past `--max-memory`.
package final class WorkerProcess: Sendable {
    /// The environment variable naming the control channel's descriptor.
    package static let controlVariable = "SUBINTERP_CONTROL_FD"
    /// The environment variable with the worker process's slot (its `process` label).
    package static let indexVariable = "SUBINTERP_PROCESS_INDEX"

    let settings: ServeSettings
    let server: AppServer
    let control: ControlChannel
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let messages: AsyncStream<ControlMessage?>
    private let requests = Atomic<Int>(0)
    private let retiring = Atomic<Bool>(false)
    private let memory = ResidentMemory()

    private init(
        settings: ServeSettings, server: AppServer, control: ControlChannel, group: MultiThreadedEventLoopGroup,
        messages: AsyncStream<ControlMessage?>, logger: Logger
    ) {
        self.settings = settings
        self.server = server
        self.control = control
        self.group = group
        self.messages = messages
        self.logger = logger
    }

    /// Loads the app and tells the supervisor it is ready; returns nil after telling it why the
    /// app could not be loaded (the process should then exit with status 1).
    package static func start(
        settings: ServeSettings, sockets: ServerSockets, control descriptor: CInt, runtime: PythonRuntime, logger: Logger,
        accessLog: (@Sendable (String) -> Void)?
    ) async throws -> WorkerProcess? {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (messages, continuation) = AsyncStream<ControlMessage?>.makeStream()
        // nil: the supervisor is gone.
        let control = try await ControlChannel.open(
            descriptor, on: group, onMessage: { continuation.yield($0) }, onClose: { continuation.yield(nil); continuation.finish() })
        // The worker is made after the server; until then a finished request has nobody to tell.
        // (A class in the mutex, not a closure: see AppDispatcher.observer.)
        let owner = Mutex<WorkerProcess?>(nil)
        let role = AppServer.WorkerProcessRole { owner.withLock { $0 }?.requestFinished() }
        let server: AppServer
        do {
            server = try await AppServer(
                configuration: settings.workerConfiguration, sockets: sockets, runtime: runtime, logger: logger, accessLog: accessLog,
                role: role)
        } catch let error as SubinterpreterError {
            if error.code == .incompatibleExtensionModule, settings.isolation == .auto, let module = error.moduleName {
                try? await control.send(.refused(module: module, message: error.message)).get()
            } else {
                let traceback = AppLoadError.traceback(of: error, app: settings.server.app)
                if !traceback.isEmpty { logger.debug("the load failure's traceback:\n\(traceback)") }
                try? await control.send(.failed(message: error.message)).get()
            }
            control.close()
            try? await group.shutdownGracefully()
            return nil
        }
        let worker = WorkerProcess(
            settings: settings, server: server, control: control, group: group, messages: messages, logger: logger)
        owner.withLock { $0 = worker }
        try await server.start()
        control.send(
            .ready(WorkerReady(pid: getpid(), interface: server.interface.rawValue, workers: settings.workerConfiguration.workers)))
        return worker
    }

    /// Serves until SIGTERM or SIGINT, the supervisor's `drain`, or the supervisor's end; then
    /// lets what runs finish, sends its last counters and returns.
    package func run() async throws {
        let group = ServiceGroup(
            services: [server], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { [messages, control] in
                for await message in messages {
                    switch message {
                    case .statsRequest:
                        control.send(.stats(self.stats))
                    case .drain, nil:
                        await group.triggerGracefulShutdown()
                    default:
                        break
                    }
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
        try? await control.send(.stats(stats)).get()
        control.close()
        try? await self.group.shutdownGracefully()
    }

    var stats: WorkerStats {
        let activity = server.dispatcher.current?.application.activity
        return WorkerStats(
            metrics: server.metrics.snapshot, busyWorkers: activity?.busy ?? 0, queued: activity?.queued ?? 0,
            workers: settings.workerConfiguration.workers, residentBytes: memory.bytes)
    }

    /// After each request: past `--max-requests` (processes isolation) or `--max-memory`, asks
    /// the supervisor once for a replacement; this process serves on until it is told to drain.
    private func requestFinished() {
        let served = requests.add(1, ordering: .relaxed).newValue
        var reason: String?
        if let limit = settings.processMaxRequests, served >= limit {
            reason = "served \(served) requests (--max-requests \(limit))"
        } else if let limit = settings.maxMemory, let resident = memory.bytes, resident > limit {
            reason = "uses \(resident >> 20) MiB of memory (--max-memory \(limit >> 20) MiB)"
        }
        guard let reason, !retiring.exchange(true, ordering: .relaxed) else { return }
        control.send(.retire(reason: reason))
    }
}

/// This process's resident memory, from `/proc/self/statm` (kept open; one `pread` per reading).
final class ResidentMemory: Sendable {
    private let descriptor = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
    private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    var bytes: Int? {
        guard descriptor >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        let fields = String(decoding: buffer[..<count], as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * pageSize
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }
}
