import Foundation
import Logging
import Synchronization

/// What runs a pool worker's jobs: an interpreter of this process, or a worker process.
enum WorkerHost: Sendable {
    case interpreter(InterpreterThread)
    case process(ProcessWorker)

    /// The key of the worker in the pool's table.
    var id: ObjectIdentifier {
        switch self {
        case .interpreter(let thread): ObjectIdentifier(thread)
        case .process(let process): ObjectIdentifier(process)
        }
    }

    /// Stops taking work; ends after the work already queued, then `done` runs. False if it
    /// was already closing.
    func close(_ done: @escaping @Sendable () -> Void) -> Bool {
        switch self {
        case .interpreter(let thread): thread.close(done)
        case .process(let process): process.close(done)
        }
    }

    /// Raises `subinterp.CancelledError` in the Python code running `job`, if it still is.
    func requestInterrupt(job: UInt64) {
        switch self {
        case .interpreter(let thread): thread.requestInterrupt(job: job)
        case .process(let process): process.requestInterrupt(job: job)
        }
    }
}

/// One worker of a pool: an interpreter thread or a worker process, and its accounting
/// (guarded by the pool's lock).
final class PoolWorker: @unchecked Sendable {
    // Safe: every mutable field is read and written under `PoolCore.state`'s lock.
    let index: Int
    let host: WorkerHost
    var tasks = 0
    var busy: Duration = .zero
    var memoryGrowth = 0
    var retiring = false
    /// Given up on: its job did not return after its interrupt (see `PoolCore.abandon`).
    var abandoned = false

    init(index: Int, host: WorkerHost) {
        self.index = index
        self.host = host
    }
}

/// The shared state of an `InterpreterPool`: the queue of jobs, the workers, and the counters.
/// It is the `WorkFeeder` (or `ProcessWorkFeeder`) its workers pull from.
final class PoolCore: WorkFeeder, ProcessWorkFeeder, Sendable {
    struct State {
        /// Queued jobs from `pendingHead` on; slots before it are nil, so a job that left the
        /// queue (and the inputs its closure holds) is not kept alive by it.
        var pending: [PoolJob?] = []
        var pendingHead = 0
        /// Calls in queued jobs; a cancelled job leaves the count at once, not when skipped.
        var queuedCalls = 0
        var idle: [PoolWorker] = []
        var workers: [ObjectIdentifier: PoolWorker] = [:]
        var closed = false
        /// Set when the pool lost every worker and could not start another: `submit` throws it.
        var failure: SubinterpreterError?
        var nextID: UInt64 = 1
        var running = 0
        var completed = 0
        var failed = 0
        var cancelled = 0
        var timedOut = 0
        var queueTimedOut = 0
        var recycled = 0
        var abandoned: [InterpreterPool.AbandonedWorker] = []
        var retired: [(index: Int, tasks: Int, busy: Duration)] = []
        /// Replacement interpreters being created now (shutdown waits for them).
        var launching = 0
        /// Replacements waiting for a retry timer (dropped at shutdown).
        var retrying = 0
        /// Jobs handed to a worker and not yet returned from it.
        var dispatched: [UInt64: PoolJob] = [:]
        /// Resumed when no job is running and none is queued (for a draining shutdown).
        var drained: [CheckedContinuation<Void, Never>] = []
        /// Resumed when no replacement is being created.
        var launched: [CheckedContinuation<Void, Never>] = []

        mutating func popPending() -> PoolJob? {
            while pendingHead < pending.count {
                let job = pending[pendingHead]!
                pending[pendingHead] = nil
                pendingHead += 1
                if pendingHead > 64 && pendingHead * 2 > pending.count {
                    pending.removeFirst(pendingHead)
                    pendingHead = 0
                }
                guard job.inQueue else { continue }  // cancelled while queued
                job.inQueue = false
                queuedCalls -= job.calls
                if job.currentState == .queued { return job }
            }
            return nil
        }

        var isIdle: Bool { running == 0 && queuedCalls == 0 }
    }

    let state = Mutex(State())
    let configuration: InterpreterPool.Configuration
    let runtime: PythonRuntime
    let logger: Logger
    let controller = PoolController()
    private let statm = StatmReader()
    /// Whether the workers are processes (`.processes`, or `.auto` after an interpreter refused).
    let processes: Bool

    init(configuration: InterpreterPool.Configuration, runtime: PythonRuntime, logger: Logger, processes: Bool) {
        self.configuration = configuration
        self.runtime = runtime
        self.logger = logger
        self.processes = processes
    }

    /// Starts the worker for slot `index` (an interpreter or a process); `ready` gets it.
    func launch(index: Int, ready: @escaping @Sendable (Result<WorkerHost, any Error>) -> Void) {
        if processes {
            ProcessWorker.launch(executable: runtime.installation.executable, options: options(index: index), feeder: self, logger: logger) {
                ready($0.map { .process($0) })
            }
        } else {
            InterpreterThread.launch(runtime: runtime, options: options(index: index), feeder: self) { ready($0.map { .interpreter($0) }) }
        }
    }

    func options(index: Int) -> InterpreterOptions {
        var options = InterpreterOptions(
            workerIndex: index, workerCount: configuration.workers, lineAtomicOutput: configuration.lineAtomicOutput,
            path: configuration.path, setup: configuration.setup)
        options.idleSpin = configuration.idleSpin
        options.loader = configuration.loader
        options.kind = configuration.interpreterKind
        return options
    }

    /// Adds a started worker; it then pulls work itself once `wake` runs.
    func add(_ host: WorkerHost, index: Int) {
        let worker = PoolWorker(index: index, host: host)
        state.withLock { $0.workers[host.id] = worker }
        switch host {
        case .interpreter(let thread): _ = thread.submit { _ in }
        case .process(let process): _ = process.submit { _ in }
        }
    }

    // MARK: - Submitting

    /// Queues a job. `calls` is how many calls it holds and `failures` counts the failed ones in
    /// a result (a map chunk reports its failed inputs); by default a job is one call that
    /// failed if it threw. `remote` runs the job in a worker process; a job without it (a
    /// closure) is refused by a pool of processes.
    func submit<T: Sendable>(
        options: InterpreterPool.JobOptions, calls: Int = 1, failures: (@Sendable (T) -> Int)? = nil,
        body: @escaping @Sendable (PythonContext) throws -> T, remote: (@Sendable (ProcessChannel, UInt64) throws -> T)? = nil,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) throws -> PoolJob {
        if processes {
            guard remote != nil else { throw ProcessWorker.closureRefused() }
            guard options.cleanup == nil else {
                throw SubinterpreterError(
                    .invalidArgument,
                    "a job's cleanup needs a PythonContext, and this pool's workers are processes; drop the cleanup or use isolation .interpreters")
            }
        }
        let (job, handOff) = try state.withLock { state -> (PoolJob, PoolWorker?) in
            if let failure = state.failure { throw failure }
            guard !state.closed else {
                throw SubinterpreterError(.interpreterClosed, "the pool is shut down; create a new pool to run more work")
            }
            let job = PoolJob(
                id: state.nextID, options: options, calls: calls, failures: failures, body: body, remote: remote, completion: completion)
            state.nextID += 1
            // Timers go in before any worker can see the job: scheduled after, a job that
            // already finished would leave them behind until they fired.
            if let timeout = options.timeout, options.timeoutStart == .submission {
                controller.schedule(at: .now + timeout, for: job) { [self] in timeOut(job) }
            }
            if let worker = state.idle.popLast() {
                job.worker = worker
                state.running += 1
                state.dispatched[job.id] = job
                return (job, worker)
            }
            // Only a job that waits needs its queue timeout (under this lock, so before any
            // worker can take it).
            if let limit = options.queueTimeout {
                controller.schedule(at: .now + limit, for: job) { [self] in queueTimeOut(job) }
            }
            job.inQueue = true
            state.queuedCalls += calls
            state.pending.append(job)
            return (job, nil)
        }
        if let worker = handOff, !dispatch(job, to: worker) {
            // The worker is ending (only during shutdown): report instead of losing the job.
            if job.cancel() != nil {
                state.withLock {
                    $0.running -= 1
                    $0.dispatched[job.id] = nil
                    $0.cancelled += job.calls
                    checkDrained(&$0)
                }
                job.report(SubinterpreterError(.interpreterClosed, "the pool is shut down; create a new pool to run more work"))
            }
        }
        return job
    }

    /// Queues `job` on `worker`'s own queue; false if the worker is ending.
    private func dispatch(_ job: PoolJob, to worker: PoolWorker) -> Bool {
        switch worker.host {
        case .interpreter(let thread): thread.submit { [self] context in execute(job, on: worker, .interpreter(context)) }
        case .process(let process): process.submit { [self] channel in execute(job, on: worker, .process(channel)) }
        }
    }

    // MARK: - WorkFeeder

    func nextWork(for thread: InterpreterThread) -> InterpreterThread.Work? {
        guard let (job, worker) = nextJob(for: ObjectIdentifier(thread)) else { return nil }
        return { [self] context in execute(job, on: worker, .interpreter(context)) }
    }

    func nextWork(for process: ProcessWorker) -> ProcessWorker.Work? {
        guard let (job, worker) = nextJob(for: ObjectIdentifier(process)) else { return nil }
        return { [self] channel in execute(job, on: worker, .process(channel)) }
    }

    private func nextJob(for host: ObjectIdentifier) -> (PoolJob, PoolWorker)? {
        state.withLock { state -> (PoolJob, PoolWorker)? in
            guard let worker = state.workers[host], !worker.retiring else { return nil }
            if let job = state.popPending() {
                job.worker = worker
                state.running += 1
                state.dispatched[job.id] = job
                return (job, worker)
            }
            state.idle.append(worker)
            checkDrained(&state)
            return nil
        }
    }

    // MARK: - Running (on the worker's thread)

    private func execute(_ job: PoolJob, on worker: PoolWorker, _ site: WorkerSite) {
        let endJob: () -> Void
        switch worker.host {
        case .interpreter(let thread):
            thread.currentJob.store(job.id, ordering: .releasing)
            endJob = thread.endJob
        case .process(let process):
            process.currentJob.store(job.id, ordering: .releasing)
            endJob = process.endJob
        }
        // Memory is this process's for an interpreter, the child's for a worker process.
        let residentBytes: () -> Int
        switch site {
        case .interpreter: residentBytes = statm.residentBytes
        case .process(let channel): residentBytes = channel.residentBytes
        }
        guard job.start() else {
            endJob()
            state.withLock {
                $0.running -= 1
                $0.dispatched[job.id] = nil
                checkDrained(&$0)
            }
            return
        }
        if let timeout = job.options.timeout, job.options.timeoutStart == .start {
            controller.schedule(at: .now + timeout, for: job) { [self] in timeOut(job) }
        }
        let memoryBefore = configuration.maxMemoryPerWorker == nil ? 0 : residentBytes()
        let started = ContinuousClock.now
        let (failedCalls, report) = job.run(site)
        endJob()
        let healthy: Bool
        switch site {
        case .interpreter(let context):
            job.options.cleanup?(context)
            healthy = failedCalls == 0 || context.isHealthy()
        case .process(let channel):
            // A child that died was replaced at once; unhealthy only if that failed.
            healthy = channel.isHealthy
        }
        let elapsed = ContinuousClock.now - started
        if job.hasTimers.load(ordering: .acquiring) { controller.unschedule(job) }
        let memoryAfter = configuration.maxMemoryPerWorker == nil ? 0 : residentBytes()
        let retire = state.withLock { state -> Bool in
            // An abandoned worker was already taken out of the pool and its job reported.
            guard !worker.abandoned else { return false }
            state.running -= 1
            state.dispatched[job.id] = nil
            if job.currentState == .finished {
                state.completed += job.calls - failedCalls
                state.failed += failedCalls
            }
            worker.tasks += 1
            worker.busy += elapsed
            worker.memoryGrowth += max(0, memoryAfter - memoryBefore)
            defer { checkDrained(&state) }
            var reason: String?
            if let limit = configuration.maxTasksPerWorker, worker.tasks >= limit {
                reason = "it ran \(worker.tasks) tasks"
            } else if let limit = configuration.maxMemoryPerWorker, worker.memoryGrowth > limit {
                reason = "its memory grew by \(worker.memoryGrowth >> 20) MiB"
            } else if !healthy {
                reason = processes ? "its worker process could not be restarted" : "its interpreter can no longer run code"
            }
            guard let reason, !state.closed else { return false }
            worker.retiring = true
            state.workers[worker.host.id] = nil
            state.retired.append((worker.index, worker.tasks, worker.busy))
            state.recycled += 1
            state.launching += 1
            logger.debug("recycling worker", metadata: ["worker": "\(worker.index)", "reason": "\(reason)"])
            return true
        }
        report()
        if retire {
            _ = worker.host.close {}
            launchReplacement(index: worker.index, attempt: 0)
        }
    }

    // MARK: - Replacing workers

    /// The most attempts at starting a replacement when the pool has no worker left; after them
    /// the pool fails (with more workers alive it keeps retrying, at most every 5 s).
    static let replacementAttempts = 5

    /// Starts a fresh worker for slot `index` (the caller counted it in `launching`).
    /// Queued jobs wait in the shared queue meanwhile; none is dropped.
    private func launchReplacement(index: Int, attempt: Int) {
        launch(index: index) { [self] result in
            switch result {
            case .success(let host):
                let keep = state.withLock { state -> Bool in
                    state.launching -= 1
                    defer { resumeLaunched(&state) }
                    guard !state.closed, state.failure == nil else { return false }
                    state.workers[host.id] = PoolWorker(index: index, host: host)
                    return true
                }
                if !keep { _ = host.close {} }
            case .failure(let error):
                replacementFailed(index: index, attempt: attempt, error: error)
            }
        }
    }

    /// Retries with backoff (0.1 s, doubling, at most 5 s). If no worker is left after
    /// `replacementAttempts` tries, the pool fails: queued jobs fail with the reason, `submit`
    /// throws it, and shutdown has nothing left to wait for.
    private func replacementFailed(index: Int, attempt: Int, error: any Error) {
        let reason = (error as? SubinterpreterError)?.message ?? "\(error)"
        let (retryIn, orphaned, failure) = state.withLock { state -> (Duration?, [PoolJob], SubinterpreterError?) in
            state.launching -= 1
            defer { resumeLaunched(&state) }
            guard !state.closed, state.failure == nil else { return (nil, [], nil) }
            if attempt + 1 >= Self.replacementAttempts && state.workers.isEmpty {
                let failure = SubinterpreterError(
                    .interpreterCreationFailed,
                    "the pool has no worker left: starting a replacement failed \(attempt + 1) times (\(reason)); create a new pool")
                state.failure = failure
                var jobs: [PoolJob] = []
                while let job = state.popPending() { jobs.append(job) }
                return (nil, jobs, failure)
            }
            state.retrying += 1
            return (min(.milliseconds(100) * (1 << min(attempt, 6)), .seconds(5)), [], nil)
        }
        logger.error(
            "could not start a replacement worker", metadata: ["worker": "\(index)", "attempt": "\(attempt + 1)", "error": "\(reason)"])
        if let failure {
            logger.critical("the pool failed: \(failure.message)")
            let failing = orphaned.filter { $0.cancel() != nil }
            state.withLock { state in
                state.failed += failing.reduce(0) { $0 + $1.calls }
                checkDrained(&state)
            }
            for job in failing { job.report(failure) }
        }
        guard let retryIn else { return }
        controller.schedule(at: .now + retryIn) { [self] in
            let go = state.withLock { state -> Bool in
                guard !state.closed, state.failure == nil, state.retrying > 0 else { return false }
                state.retrying -= 1
                state.launching += 1
                return true
            }
            if go { launchReplacement(index: index, attempt: attempt + 1) }
        }
    }

    // MARK: - Cancelling, deadlines, abandoning

    /// Cancels a job that has not finished, with the error `error(from)` for the state it was
    /// in. A running job's Python code is interrupted; if it does not return, it is interrupted
    /// again and, after `interruptGrace`, its worker is abandoned.
    func cancel(_ job: PoolJob, _ error: (PoolJob.State) -> SubinterpreterError) {
        guard let from = job.cancel() else { return }
        let failure = error(from)
        state.withLock { state in
            if job.inQueue {
                job.inQueue = false
                state.queuedCalls -= job.calls
            }
            switch failure.code {
            case .timedOut: state.timedOut += job.calls
            case .queueTimedOut: state.queueTimedOut += job.calls
            default: state.cancelled += job.calls
            }
            checkDrained(&state)
        }
        job.report(failure)
        guard from == .running, let worker = job.worker else { return }
        worker.host.requestInterrupt(job: job.id)
        guard let grace = configuration.interruptGrace else { return }
        // Again at a quarter, half and three quarters of the grace: code that swallowed one
        // interrupt in `except BaseException` may not swallow the next.
        for step in 1...3 {
            controller.schedule(at: .now + grace * step / 4, for: job) { worker.host.requestInterrupt(job: job.id) }
        }
        controller.schedule(at: .now + grace, for: job) { [self] in abandon(job, on: worker) }
    }

    private func timeOut(_ job: PoolJob) {
        let limit = job.options.timeout.map { String(format: "%g", $0.timeInterval) } ?? "?"
        cancel(job) { from in
            from == .running
                ? SubinterpreterError(.timedOut, "the call did not finish within its timeout of \(limit) s; its Python code was interrupted")
                : SubinterpreterError(.timedOut, "the call did not finish within its timeout of \(limit) s; it never started (it waited in the queue)")
        }
    }

    private func queueTimeOut(_ job: PoolJob) {
        guard job.currentState == .queued else { return }
        let limit = job.options.queueTimeout.map { String(format: "%g", $0.timeInterval) } ?? "?"
        cancel(job) { _ in
            SubinterpreterError(
                .queueTimedOut, "the call waited in the queue for \(limit) s without a free worker; it never started (the pool is overloaded)")
        }
    }

    /// Gives up on a worker whose cancelled job has not returned within `interruptGrace`: it is
    /// blocked in C, or it swallows every interrupt. It leaves the pool at once and a fresh
    /// interpreter takes its place, so the pool keeps its capacity. It is never joined: if its
    /// job ever returns, its interpreter ends then. A process may exit with it still running.
    private func abandon(_ job: PoolJob, on worker: PoolWorker) {
        let replace = state.withLock { state -> Bool? in
            guard state.dispatched[job.id] != nil, !worker.abandoned else { return nil }  // it returned
            worker.abandoned = true
            state.workers[worker.host.id] = nil
            state.dispatched[job.id] = nil
            state.running -= 1
            state.abandoned.append(InterpreterPool.AbandonedWorker(index: worker.index, job: job.name))
            checkDrained(&state)
            guard !state.closed, state.failure == nil else { return false }
            state.launching += 1
            return true
        }
        guard let replace else { return }
        let grace = configuration.interruptGrace.map { String(format: "%g", $0.timeInterval) } ?? "?"
        let replaced = replace ? (processes ? "; it was killed and a fresh process replaces it" : "; a fresh interpreter replaces it") : ""
        logger.warning(
            "abandoned a worker: its job did not return within \(grace) s of being interrupted (blocked in C, or it swallows the interrupt)\(replaced)",
            metadata: ["worker": "\(worker.index)", "job": "\(job.name)"])
        // A process can be killed (SIGKILL); an interpreter cannot, and ends if its job returns.
        if case .process(let process) = worker.host { process.kill() }
        _ = worker.host.close {}
        if replace { launchReplacement(index: worker.index, attempt: 0) }
    }

    // MARK: - Shutdown

    private func checkDrained(_ state: inout State) {
        guard state.isIdle, !state.drained.isEmpty else { return }
        let waiters = state.drained
        state.drained = []
        for waiter in waiters { waiter.resume() }
    }

    private func resumeLaunched(_ state: inout State) {
        guard state.launching == 0, !state.launched.isEmpty else { return }
        let waiters = state.launched
        state.launched = []
        for waiter in waiters { waiter.resume() }
    }

    /// Drops every queued job and interrupts every running one.
    private func cancelEverything() {
        let doomed = state.withLock { state -> [PoolJob] in
            var jobs: [PoolJob] = []
            while let job = state.popPending() { jobs.append(job) }
            return jobs + state.dispatched.values
        }
        for job in doomed {
            cancel(job) { _ in SubinterpreterError(.cancelled, "the pool shut down before the call finished") }
        }
    }

    func shutdown(cancelPending: Bool, gracePeriod: Duration?) async -> [InterpreterPool.AbandonedWorker] {
        state.withLock { state in
            state.closed = true
            state.retrying = 0  // their timers find the pool closed and do nothing
        }
        if cancelPending {
            cancelEverything()
        } else if let gracePeriod {
            controller.schedule(at: .now + gracePeriod) { [self] in cancelEverything() }
        }
        // Every started job returns or its worker is abandoned; the queue empties.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.isIdle { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        // Replacements being created now: wait, so none is left running.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.launching == 0 { return true }
                state.launched.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        let workers = state.withLock { state -> [PoolWorker] in
            defer { state.workers = [:]; state.idle = [] }
            return Array(state.workers.values)
        }
        await withTaskGroup(of: Void.self) { group in
            for worker in workers {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        if !worker.host.close({ continuation.resume() }) { continuation.resume() }
                    }
                }
            }
        }
        controller.stop()
        return state.withLock { $0.abandoned }
    }
}

/// Reads this process's resident set size cheaply (one `pread` of /proc/self/statm).
final class StatmReader: Sendable {
    private let fd: Int32 = open("/proc/self/statm", O_RDONLY)
    private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    func residentBytes() -> Int {
        guard fd >= 0 else { return 0 }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 127, 0) }
        guard count > 0 else { return 0 }
        let fields = buffer[0..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return 0 }
        return pages * pageSize
    }

    deinit { if fd >= 0 { close(fd) } }
}
