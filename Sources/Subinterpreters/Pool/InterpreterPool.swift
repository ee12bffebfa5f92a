import Logging
import ServiceLifecycle
import Synchronization

/// A pool of isolated interpreters, each on its own thread with its own GIL: a
/// `concurrent.futures` executor for sub-interpreters.
///
/// Work goes to the first free worker, in submission order. Unlike Python's own executors,
/// a call that is cancelled or passes its deadline is interrupted *while it runs*:
/// `subinterp.CancelledError` is raised inside its Python code and the worker carries on.
///
/// ```swift
/// let pool = try await InterpreterPool(configuration: .init(setup: "import math"))
/// let root = try await pool.call("math.sqrt", 2.0)
/// for try await square in pool.map("pow", (1...1_000).map { [PythonValue($0), 2] }, star: true) { … }
/// await pool.shutdown()
/// ```
public final class InterpreterPool: Service, Sendable {
    public struct Configuration: Sendable {
        /// How many workers (interpreters). Default: the CPU count.
        public var workers: Int
        /// Python statements run in each worker's `__main__` as it starts, the initializer. If they
        /// raise, the pool does not start and the error carries their traceback.
        public var setup: String?
        /// Directories put in front of `sys.path` in every worker.
        public var path: [String]
        /// After this many tasks a worker is replaced by a fresh interpreter.
        public var maxTasksPerWorker: Int?
        /// When the process's resident memory grew by this many bytes while a worker ran its
        /// tasks, that worker is replaced. Approximate: growth while several workers run at once
        /// is counted for each of them.
        public var maxMemoryPerWorker: Int?
        /// The deadline of calls that give none. Default: none.
        public var timeout: Duration?
        /// Whether worker output is line-atomic (see `InterpreterOptions.lineAtomicOutput`).
        public var lineAtomicOutput: Bool
        /// How long an idle worker watches for the next call before it sleeps (see
        /// `InterpreterOptions.idleSpin`): worth it for calls awaited one at a time, not when every
        /// core is busy anyway.
        public var idleSpin: Duration = .microseconds(50)
        /// Where the workers run: isolated sub-interpreters (the default), or the process's main
        /// interpreter (`InterpreterKind.main`: every extension module loads, one GIL for all).
        public var interpreterKind: InterpreterKind = .isolated

        public init(
            workers: Int = SystemInfo.cpuCount, setup: String? = nil, path: [String] = [], maxTasksPerWorker: Int? = nil,
            maxMemoryPerWorker: Int? = nil, timeout: Duration? = nil, lineAtomicOutput: Bool = true
        ) {
            self.workers = workers
            self.setup = setup
            self.path = path
            self.maxTasksPerWorker = maxTasksPerWorker
            self.maxMemoryPerWorker = maxMemoryPerWorker
            self.timeout = timeout
            self.lineAtomicOutput = lineAtomicOutput
        }
    }

    /// Counters, as of the moment they were read.
    public struct Statistics: Sendable {
        public struct Worker: Sendable {
            public var index: Int
            public var tasks: Int
            /// Time spent running tasks.
            public var busy: Duration
        }
        public var queued: Int
        public var running: Int
        public var completed: Int
        public var failed: Int
        public var cancelled: Int
        public var timedOut: Int
        public var recycled: Int
        /// Live workers, by index.
        public var workers: [Worker]
    }

    public let configuration: Configuration
    let core: PoolCore
    private let isShutDown = Mutex(false)

    /// Starts `configuration.workers` interpreters in parallel and runs the setup in each.
    public init(configuration: Configuration = Configuration(), runtime: PythonRuntime? = nil, logger: Logger? = nil) async throws {
        guard configuration.workers >= 1 else {
            throw SubinterpreterError(.invalidArgument, "a pool needs at least 1 worker (got \(configuration.workers))")
        }
        let runtime = try runtime ?? PythonRuntime.start()
        // A library logs only where it is told to: without a logger, nothing is printed.
        let logger = logger ?? Logger(label: "subinterpreters.pool", factory: { _ in SwiftLogNoOpLogHandler() })
        let core = PoolCore(configuration: configuration, runtime: runtime, logger: logger)
        self.configuration = configuration
        self.core = core
        let started = await withTaskGroup(of: (Int, Result<InterpreterThread, any Error>).self) { group in
            for index in 0..<configuration.workers {
                group.addTask {
                    do {
                        return (index, .success(try await InterpreterThread.start(runtime: runtime, options: core.options(index: index), feeder: core)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var all: [(Int, Result<InterpreterThread, any Error>)] = []
            for await result in group { all.append(result) }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let threads = started.compactMap { try? $0.get() }
        if let failure = started.lazy.compactMap({ result -> (any Error)? in
            if case .failure(let error) = result { return error }
            return nil
        }).first {
            for thread in threads {
                await withCheckedContinuation { continuation in
                    if !thread.close({ continuation.resume() }) { continuation.resume() }
                }
            }
            if let error = failure as? SubinterpreterError {
                throw SubinterpreterError(
                    error.code, "the pool could not start: a worker failed to set up: \(error.message)",
                    pythonException: error.pythonException, moduleName: error.moduleName)
            }
            throw failure
        }
        // Workers were started before the pool knew them; register each, then let it look for work.
        for (index, thread) in threads.enumerated() {
            core.add(thread, index: index)
            _ = thread.submit { _ in }
        }
        logger.info("pool started", metadata: ["workers": "\(configuration.workers)"])
    }

    // MARK: - Calls

    /// Calls a function by name (`"package.module.function"`, `"package.module:Class.method"`, or a
    /// global of the workers' `__main__`) on a free worker.
    public func call(
        _ function: String, _ arguments: PythonValue..., keywords: KeyValuePairs<String, PythonValue> = [:], timeout: Duration? = nil
    ) async throws -> PythonValue {
        let keywords = keywords.map { ($0.key, $0.value) }
        return try await withWorker(timeout: timeout) { try $0.call(function, arguments, keywords: keywords) }
    }

    /// Calls a function with an array of positional arguments.
    public func call(_ function: String, arguments: [PythonValue], timeout: Duration? = nil) async throws -> PythonValue {
        try await withWorker(timeout: timeout) { try $0.call(function, arguments) }
    }

    /// Calls a function with `Encodable` arguments and decodes its result.
    public func call<Result: Decodable>(
        _ function: String, arguments: [any Encodable], returning type: Result.Type = Result.self, timeout: Duration? = nil
    ) async throws -> Result {
        let values = try arguments.map { try PythonValueEncoder().encode($0) }
        return try PythonValueDecoder().decode(Result.self, from: try await call(function, arguments: values, timeout: timeout))
    }

    /// Submits a call and returns at once with a handle to await or cancel. Throws only if the
    /// pool is shut down.
    public func submit(_ function: String, arguments: [PythonValue], timeout: Duration? = nil) throws -> PoolTask<PythonValue> {
        try submit(timeout: timeout) { try $0.call(function, arguments) }
    }

    /// Submits any work on a worker's thread (see `Interpreter.withPython`).
    public func submit<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T) throws -> PoolTask<T> {
        let promise = Promise<T>()
        let job = try core.submit(
            timeout: timeout ?? configuration.timeout, deadlineStart: .submission, body: body,
            completion: { promise.resolve($0) })
        return PoolTask(job: job, promise: promise, pool: core)
    }

    /// Submits work and reports its result to `completion`, on whichever thread finishes it (a
    /// worker's, or the controller's for a timeout). For callers that are not async, such as an
    /// event loop. Throws only if the pool is shut down.
    public func submit<T: Sendable>(
        timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) throws {
        _ = try core.submit(timeout: timeout ?? configuration.timeout, deadlineStart: .submission, body: body, completion: completion)
    }

    /// Runs `body` on a free worker's thread and returns its result. Cancelling the task drops
    /// the work if it is queued and interrupts it if it runs.
    public func withWorker<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T) async throws -> T {
        try await submit(timeout: timeout, body).value
    }

    // MARK: - Observability

    public var statistics: Statistics {
        core.state.withLock { state in
            Statistics(
                queued: state.pendingCount, running: state.running, completed: state.completed, failed: state.failed,
                cancelled: state.cancelled, timedOut: state.timedOut, recycled: state.recycled,
                workers: state.workers.values.map { Statistics.Worker(index: $0.index, tasks: $0.tasks, busy: $0.busy) }
                    .sorted { $0.index < $1.index })
        }
    }

    // MARK: - Shutdown

    /// Stops taking work, then either finishes what is queued and running (`cancelPending:
    /// false`) or drops the queued work and interrupts the running (`true`), closes every
    /// interpreter, and returns. Calling it again waits for nothing.
    public func shutdown(cancelPending: Bool = false) async {
        guard isShutDown.withLock({ let was = $0; $0 = true; return !was }) else { return }
        await core.shutdown(cancelPending: cancelPending)
        core.logger.info("pool shut down")
    }

    /// `Service`: runs until graceful shutdown is requested, then finishes queued work and closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown(cancelPending: false)
    }
}
