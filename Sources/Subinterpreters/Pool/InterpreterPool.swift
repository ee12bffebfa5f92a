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
/// With `isolation: .processes` the workers are child Python processes instead (see
/// `Isolation`): every extension module loads there, at the cost of copying values through
/// pipes.
///
/// ```swift
/// let pool = try await InterpreterPool(configuration: .init(setup: "import math"))
/// let root = try await pool.call("math.sqrt", 2.0)
/// for try await square in pool.map("pow", (1...1_000).map { [PythonValue($0), 2] }, star: true) { … }
/// await pool.shutdown()
/// ```
public final class InterpreterPool: Service, Sendable {
    /// What a worker is.
    public enum Isolation: Sendable, Hashable {
        /// An isolated sub-interpreter of this process with its own GIL, on its own thread: the
        /// cheapest calls, values converted in memory; extension modules without
        /// sub-interpreter support (numpy, orjson, pydantic-core, …) refuse to load.
        case interpreters
        /// A child Python process (the runtime's own executable, a virtual environment's when
        /// one was chosen) running calls in its main interpreter, one at a time: every
        /// extension module loads, and a crash costs only that process, which is replaced.
        /// Values are copied through a socket in the item encoding; only calls by name can run
        /// (`submit(_:arguments:)`, `call`, `map`), not Swift closures. A job's `cleanup` does
        /// not apply; `subinterp.Queue` and `SharedBuffer` cannot be passed.
        case processes
        /// Interpreters, unless loading `setup` (or the tools' loader) fails because an extension
        /// module refuses sub-interpreters: then one warning is logged and the workers are
        /// processes. Decided once, when the pool starts: import what you need in `setup`.
        case auto
    }

    public struct Configuration: Sendable {
        /// How many workers (interpreters or processes). Default: the CPU count.
        public var workers: Int
        /// What a worker is. Default: `.interpreters`.
        public var isolation: Isolation = .interpreters
        /// Python statements run in each worker's `__main__` as it starts, the initializer. If they
        /// raise, the pool does not start and the error carries their traceback.
        public var setup: String?
        /// Directories put in front of `sys.path` in every worker.
        public var path: [String]
        /// After this many tasks a worker is replaced by a fresh interpreter (or process).
        public var maxTasksPerWorker: Int?
        /// When the process's resident memory grew by this many bytes while a worker ran its
        /// tasks, that worker is replaced. Approximate: growth while several workers run at once
        /// is counted for each of them. For a worker process, the growth of that process's own
        /// resident memory (/proc/PID/statm), exact.
        public var maxMemoryPerWorker: Int?
        /// The deadline of calls that give none. Default: none.
        public var timeout: Duration?
        /// Whether worker output is line-atomic (see `InterpreterOptions.lineAtomicOutput`).
        public var lineAtomicOutput: Bool
        /// How long an idle worker watches for the next call before it sleeps (see
        /// `InterpreterOptions.idleSpin`): worth it for calls awaited one at a time, not when every
        /// core is busy anyway.
        public var idleSpin: Duration = .microseconds(50)
        /// How long a cancelled or timed-out job may keep its worker after its interrupt (code
        /// blocked in C, or code that catches `BaseException` and carries on). Meanwhile it is
        /// interrupted again; when the grace ends, the worker is abandoned: taken out of the pool,
        /// replaced at once by a fresh interpreter, and never waited for. nil waits however long
        /// the job takes.
        public var interruptGrace: Duration? = .seconds(3)
        /// Python run after `setup` in each worker, under a file name that tracebacks hide (the
        /// tools' own loading code, so a failure in it is told apart from one in `setup`).
        package var loader: String?
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

    /// Counters, as of the moment they were read. Calls are counted as a user counts them:
    /// each input of a `map` is one call, even when several run as one chunk.
    public struct Statistics: Sendable {
        public struct Worker: Sendable {
            public var index: Int
            public var tasks: Int
            /// Time spent running tasks.
            public var busy: Duration
        }
        /// Calls waiting for a worker (a cancelled one leaves the count at once).
        public var queued: Int
        /// Workers running a task now.
        public var running: Int
        /// Calls that returned.
        public var completed: Int
        /// Calls that raised (or could not run because the pool failed).
        public var failed: Int
        public var cancelled: Int
        public var timedOut: Int
        /// Calls that waited in the queue past their `queueTimeout` and never ran.
        public var queueTimedOut: Int
        /// Workers replaced by a fresh one after `maxTasksPerWorker` or `maxMemoryPerWorker`.
        public var recycled: Int
        /// Workers given up on because a cancelled job did not return (see `interruptGrace`).
        public var abandoned: Int
        /// Live workers, by index.
        public var workers: [Worker]
    }

    /// When a job's `timeout` starts counting.
    public enum TimeoutStart: Sendable, Hashable {
        /// At submission: the limit covers the wait in the queue too (what a caller awaiting the
        /// result sees).
        case submission
        /// When a worker starts the job: the limit covers only its run (bound the wait with
        /// `queueTimeout`).
        case start
    }

    /// Limits and hooks of one submitted job.
    public struct JobOptions: Sendable {
        /// The longest the job may take; past it the caller gets `.timedOut` and a running job's
        /// Python code is interrupted. nil: the pool's `timeout`.
        public var timeout: Duration?
        /// Whether `timeout` counts from submission or from when the job starts.
        public var timeoutStart: TimeoutStart
        /// The longest the job may wait in the queue; past it the caller gets `.queueTimedOut`
        /// and the job never runs (a server answers that with 503, not 504). nil: no limit.
        public var queueTimeout: Duration?
        /// What the pool's log calls the job (a request id, say); default "job N".
        public var label: String?
        /// Runs on the worker's thread after the body of a job that started, whatever happened
        /// to it: it returned, threw, was cancelled or timed out. An interrupt meant for the job
        /// never reaches it. It does not run for a job that never started.
        public var cleanup: (@Sendable (PythonContext) -> Void)?

        public init(
            timeout: Duration? = nil, timeoutStart: TimeoutStart = .submission, queueTimeout: Duration? = nil, label: String? = nil,
            cleanup: (@Sendable (PythonContext) -> Void)? = nil
        ) {
            self.timeout = timeout
            self.timeoutStart = timeoutStart
            self.queueTimeout = queueTimeout
            self.label = label
            self.cleanup = cleanup
        }
    }

    /// A worker the pool gave up on (see `Configuration.interruptGrace`).
    public struct AbandonedWorker: Sendable, Hashable, CustomStringConvertible {
        /// The worker's index.
        public var index: Int
        /// The job it was stuck in (its `label`, or "job N").
        public var job: String
        public var description: String { "worker \(index) (\(job))" }
    }

    public let configuration: Configuration
    let core: PoolCore
    private let isShutDown = Mutex(false)

    /// What the workers turned out to be: `.interpreters` or `.processes` (never `.auto`).
    public var isolation: Isolation { core.processes ? .processes : .interpreters }

    /// Starts `configuration.workers` workers in parallel and runs the setup in each.
    public init(configuration: Configuration = Configuration(), runtime: PythonRuntime? = nil, logger: Logger? = nil) async throws {
        guard configuration.workers >= 1 else {
            throw SubinterpreterError(.invalidArgument, "a pool needs at least 1 worker (got \(configuration.workers))")
        }
        let runtime = if let runtime { runtime } else { try await PythonRuntime.start() }
        // A library logs only where it is told to: without a logger, nothing is printed.
        let logger = logger ?? Logger(label: "subinterpreters.pool", factory: { _ in SwiftLogNoOpLogHandler() })
        self.configuration = configuration
        do {
            core = try await Self.startWorkers(
                PoolCore(configuration: configuration, runtime: runtime, logger: logger, processes: configuration.isolation == .processes))
        } catch let error as SubinterpreterError where configuration.isolation == .auto && error.code == .incompatibleExtensionModule {
            let module = error.moduleName ?? "an extension module"
            let workers = configuration.workers
            logger.warning(
                "extension module '\(module)' does not support sub-interpreters: runs in \(workers) worker processes, one call at a time each; values are copied through pipes")
            core = try await Self.startWorkers(PoolCore(configuration: configuration, runtime: runtime, logger: logger, processes: true))
        }
        logger.info("pool started", metadata: ["workers": "\(configuration.workers)", "isolation": "\(core.processes ? "processes" : "interpreters")"])
    }

    /// Starts every worker of `core` in parallel; if one fails, ends the others and throws its error.
    private static func startWorkers(_ core: PoolCore) async throws -> PoolCore {
        let count = core.configuration.workers
        let started = await withTaskGroup(of: (Int, Result<WorkerHost, any Error>).self) { group in
            for index in 0..<count {
                group.addTask {
                    (index, await withCheckedContinuation { continuation in core.launch(index: index) { continuation.resume(returning: $0) } })
                }
            }
            var all: [(Int, Result<WorkerHost, any Error>)] = []
            for await result in group { all.append(result) }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let hosts = started.compactMap { try? $0.get() }
        if let failure = started.lazy.compactMap({ result -> (any Error)? in
            if case .failure(let error) = result { return error }
            return nil
        }).first {
            for host in hosts {
                await withCheckedContinuation { continuation in
                    if !host.close({ continuation.resume() }) { continuation.resume() }
                }
            }
            core.controller.stop()
            if let error = failure as? SubinterpreterError {
                throw SubinterpreterError(
                    error.code, "the pool could not start: a worker failed to set up: \(error.message)",
                    pythonException: error.pythonException, moduleName: error.moduleName)
            }
            throw failure
        }
        // Workers were started before the pool knew them; register each, then let it look for work.
        for (index, host) in hosts.enumerated() { core.add(host, index: index) }
        return core
    }

    // MARK: - Calls

    /// Calls a function by name (`"package.module.function"`, `"package.module:Class.method"`, or a
    /// global of the workers' `__main__`) on a free worker. Arguments and keyword values are
    /// `PythonValue`s, or any `Encodable` Swift value (numbers, strings, arrays, dictionaries,
    /// your own types), converted with `PythonValueEncoder`.
    public func call<each Argument: Encodable>(
        _ function: String, _ arguments: repeat each Argument, keywords: KeyValuePairs<String, any Encodable> = [:],
        timeout: Duration? = nil
    ) async throws -> PythonValue {
        try await call(function, arguments: try PythonValue.arguments(repeat each arguments), keywords: try PythonValue.keywords(keywords),
                       timeout: timeout)
    }

    /// Calls a function with `PythonValue` arguments (any mix of literals).
    public func call(
        _ function: String, _ arguments: PythonValue..., keywords: KeyValuePairs<String, PythonValue> = [:], timeout: Duration? = nil
    ) async throws -> PythonValue {
        try await call(function, arguments: arguments, keywords: keywords.map { ($0.key, $0.value) }, timeout: timeout)
    }

    /// Calls a function with an array of positional arguments.
    public func call(
        _ function: String, arguments: [PythonValue], keywords: [(String, PythonValue)] = [], timeout: Duration? = nil
    ) async throws -> PythonValue {
        try await submit(function, arguments: arguments, keywords: keywords, timeout: timeout).value
    }

    /// Calls a function with `Encodable` arguments and decodes its result.
    public func call<Result: Decodable>(
        _ function: String, arguments: [any Encodable], keywords: KeyValuePairs<String, any Encodable> = [:],
        returning type: Result.Type = Result.self, timeout: Duration? = nil
    ) async throws -> Result {
        let values = try arguments.map { try PythonValue.converting($0) }
        let result = try await call(function, arguments: values, keywords: try PythonValue.keywords(keywords), timeout: timeout)
        return try PythonValueDecoder().decode(Result.self, from: result)
    }

    /// Submits a call and returns at once with a handle to await or cancel. Throws only if the
    /// pool is shut down (or failed).
    public func submit(
        _ function: String, arguments: [PythonValue], keywords: [(String, PythonValue)] = [], timeout: Duration? = nil
    ) throws -> PoolTask<PythonValue> {
        try submit(function, arguments: arguments, keywords: keywords, options: JobOptions(timeout: timeout))
    }

    /// Submits a call by name with its own limits (and, for interpreters, cleanup): the form
    /// of `submit(options:_:)` that a pool of processes runs too.
    public func submit(
        _ function: String, arguments: [PythonValue], keywords: [(String, PythonValue)] = [], options: JobOptions
    ) throws -> PoolTask<PythonValue> {
        let promise = Promise<PythonValue>()
        let job = try core.submit(
            options: resolved(options), body: { try $0.call(function, arguments, keywords: keywords) },
            remote: { channel, job in try channel.call(function, arguments, keywords: keywords, job: job) },
            completion: { promise.resolve($0) })
        return PoolTask(job: job, promise: promise, pool: core)
    }

    /// Submits any work on a worker's thread (see `Interpreter.withPython`). A pool of
    /// processes throws `.invalidArgument`: a closure cannot run in another process.
    public func submit<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T) throws -> PoolTask<T> {
        try submit(options: JobOptions(timeout: timeout), body)
    }

    /// Submits work with its own limits and cleanup; await or cancel the handle.
    public func submit<T: Sendable>(options: JobOptions, _ body: @escaping @Sendable (PythonContext) throws -> T) throws -> PoolTask<T> {
        let promise = Promise<T>()
        let job = try core.submit(options: resolved(options), body: body, completion: { promise.resolve($0) })
        return PoolTask(job: job, promise: promise, pool: core)
    }

    /// Submits work and reports its result to `completion`, on whichever thread finishes it (a
    /// worker's, or the controller's for a timeout). For callers that are not async, such as an
    /// event loop; `completion` must not block. Throws only if the pool is shut down (or failed).
    public func submit<T: Sendable>(
        timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) throws {
        try submit(options: JobOptions(timeout: timeout), body, completion: completion)
    }

    /// Submits work with its own limits and cleanup, reporting to `completion` (see above).
    public func submit<T: Sendable>(
        options: JobOptions, _ body: @escaping @Sendable (PythonContext) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) throws {
        _ = try core.submit(options: resolved(options), body: body, completion: completion)
    }

    /// Runs `body` on a free worker's thread and returns its result. Cancelling the task drops
    /// the work if it is queued and interrupts it if it runs.
    public func withWorker<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PythonContext) throws -> T) async throws -> T {
        try await submit(timeout: timeout, body).value
    }

    /// The pool's default timeout where the options give none.
    private func resolved(_ options: JobOptions) -> JobOptions {
        var options = options
        if options.timeout == nil { options.timeout = configuration.timeout }
        return options
    }

    // MARK: - Observability

    public var statistics: Statistics {
        core.state.withLock { state in
            Statistics(
                queued: state.queuedCalls, running: state.running, completed: state.completed, failed: state.failed,
                cancelled: state.cancelled, timedOut: state.timedOut, queueTimedOut: state.queueTimedOut, recycled: state.recycled,
                abandoned: state.abandoned.count,
                workers: state.workers.values.map { Statistics.Worker(index: $0.index, tasks: $0.tasks, busy: $0.busy) }
                    .sorted { $0.index < $1.index })
        }
    }

    // MARK: - Shutdown

    /// Stops taking work, then finishes what is queued and running (`cancelPending: false`) or
    /// drops the queued work and interrupts the running (`true`), closes every interpreter, and
    /// returns. With a `gracePeriod`, what is still queued or running when it ends is cancelled
    /// as with `cancelPending: true`. A cancelled job that does not return within
    /// `interruptGrace` has its worker abandoned, so with both limits set shutdown returns
    /// within `gracePeriod` + `interruptGrace` even if a worker is stuck in C. Returns the
    /// workers abandoned in the pool's life; if any, their interpreters may still be running,
    /// and the process should exit without `PythonRuntime.finalize()` (which refuses anyway).
    /// Calling it again waits for nothing and returns the same.
    @discardableResult
    public func shutdown(cancelPending: Bool = false, gracePeriod: Duration? = nil) async -> [AbandonedWorker] {
        guard isShutDown.withLock({ let was = $0; $0 = true; return !was }) else {
            return core.state.withLock { $0.abandoned }
        }
        let abandoned = await core.shutdown(cancelPending: cancelPending, gracePeriod: gracePeriod)
        core.logger.info("pool shut down", metadata: abandoned.isEmpty ? [:] : ["abandoned": "\(abandoned.map(\.description))"])
        return abandoned
    }

    /// `Service`: runs until graceful shutdown is requested, then finishes queued work and closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown(cancelPending: false)
    }
}
