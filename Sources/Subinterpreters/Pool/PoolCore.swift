import Foundation
import Logging
import Synchronization

/// One worker of a pool: an interpreter thread and its accounting (guarded by the pool's lock).
final class PoolWorker: @unchecked Sendable {
    // Safe: every mutable field is read and written under `PoolCore.state`'s lock.
    let index: Int
    let thread: InterpreterThread
    var tasks = 0
    var busy: Duration = .zero
    var memoryGrowth = 0
    var retiring = false

    init(index: Int, thread: InterpreterThread) {
        self.index = index
        self.thread = thread
    }
}

/// The shared state of an `InterpreterPool`: the queue of jobs, the workers, and the counters.
/// It is the `WorkFeeder` its workers pull from.
final class PoolCore: WorkFeeder, Sendable {
    struct State {
        var pending: [PoolJob] = []
        var pendingHead = 0
        var idle: [PoolWorker] = []
        var workers: [ObjectIdentifier: PoolWorker] = [:]
        var closed = false
        var nextID: UInt64 = 1
        var running = 0
        var completed = 0
        var failed = 0
        var cancelled = 0
        var timedOut = 0
        var recycled = 0
        var retired: [(index: Int, tasks: Int, busy: Duration)] = []
        var replacing = 0
        /// Jobs handed to a worker and not yet returned from it.
        var dispatched: [UInt64: PoolJob] = [:]
        /// Resumed when no job is running and none is pending (for a draining shutdown).
        var drained: [CheckedContinuation<Void, Never>] = []

        var pendingCount: Int { pending.count - pendingHead }

        mutating func popPending() -> PoolJob? {
            while pendingHead < pending.count {
                let job = pending[pendingHead]
                pendingHead += 1
                if pendingHead > 1024 && pendingHead * 2 > pending.count {
                    pending.removeFirst(pendingHead)
                    pendingHead = 0
                }
                if job.currentState == .queued { return job }
            }
            return nil
        }
    }

    let state = Mutex(State())
    let configuration: InterpreterPool.Configuration
    let runtime: PythonRuntime
    let logger: Logger
    let controller = PoolController()
    private let statm = StatmReader()

    init(configuration: InterpreterPool.Configuration, runtime: PythonRuntime, logger: Logger) {
        self.configuration = configuration
        self.runtime = runtime
        self.logger = logger
    }

    func options(index: Int) -> InterpreterOptions {
        var options = InterpreterOptions(
            workerIndex: index, workerCount: configuration.workers, lineAtomicOutput: configuration.lineAtomicOutput,
            path: configuration.path, setup: configuration.setup)
        options.idleSpin = configuration.idleSpin
        options.kind = configuration.interpreterKind
        return options
    }

    /// Adds a started worker; it then pulls work itself.
    func add(_ thread: InterpreterThread, index: Int) {
        let worker = PoolWorker(index: index, thread: thread)
        state.withLock { $0.workers[ObjectIdentifier(thread)] = worker }
    }

    // MARK: - Submitting

    func submit<T: Sendable>(
        timeout: Duration?, deadlineStart: PoolJob.DeadlineStart, body: @escaping @Sendable (PythonContext) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) throws -> PoolJob {
        let (job, handOff) = try state.withLock { state -> (PoolJob, PoolWorker?) in
            guard !state.closed else {
                throw SubinterpreterError(.interpreterClosed, "the pool is shut down; create a new pool to run more work")
            }
            let job = PoolJob(id: state.nextID, timeout: timeout, deadlineStart: deadlineStart, body: body, completion: completion)
            state.nextID += 1
            // The deadline goes in before any worker can see the job: scheduled after, a job that
            // already finished would leave its deadline behind until it expired.
            if let timeout, deadlineStart == .submission {
                controller.schedule(job, at: .now + timeout, core: self)
            }
            if let worker = state.idle.popLast() {
                job.worker = worker
                state.running += 1
                state.dispatched[job.id] = job
                return (job, worker)
            }
            state.pending.append(job)
            return (job, nil)
        }
        if let worker = handOff, !worker.thread.submit(work(job, on: worker)) {
            // The worker is ending (only during shutdown): report instead of losing the job.
            finishUnstarted(job)
        }
        return job
    }

    private func finishUnstarted(_ job: PoolJob) {
        _ = job.cancel(SubinterpreterError(.interpreterClosed, "the pool is shut down; create a new pool to run more work"))
        state.withLock {
            $0.running -= 1
            $0.dispatched[job.id] = nil
            resumeDrainedIfIdle(&$0)
        }
    }

    /// The closure a worker runs for `job`.
    private func work(_ job: PoolJob, on worker: PoolWorker) -> InterpreterThread.Work {
        { [self] context in execute(job, on: worker, context) }
    }

    // MARK: - WorkFeeder

    func nextWork(for thread: InterpreterThread) -> InterpreterThread.Work? {
        state.withLock { state -> InterpreterThread.Work? in
            guard let worker = state.workers[ObjectIdentifier(thread)], !worker.retiring else { return nil }
            if let job = state.popPending() {
                job.worker = worker
                state.running += 1
                state.dispatched[job.id] = job
                return work(job, on: worker)
            }
            state.idle.append(worker)
            resumeDrainedIfIdle(&state)
            return nil
        }
    }

    // MARK: - Running (on the worker's thread)

    private func execute(_ job: PoolJob, on worker: PoolWorker, _ context: PythonContext) {
        let thread = worker.thread
        thread.currentJob.store(job.id, ordering: .releasing)
        guard job.start() else {
            thread.currentJob.store(0, ordering: .releasing)
            state.withLock {
                $0.running -= 1
                $0.dispatched[job.id] = nil
                resumeDrainedIfIdle(&$0)
            }
            return
        }
        if let timeout = job.timeout, job.deadlineStart == .start {
            controller.schedule(job, at: .now + timeout, core: self)
        }
        let memoryBefore = configuration.maxMemoryPerWorker == nil ? 0 : statm.residentBytes()
        let started = ContinuousClock.now
        let (failed, report) = job.run(context)
        let elapsed = ContinuousClock.now - started
        thread.currentJob.store(0, ordering: .releasing)
        if job.timeout != nil { controller.unschedule(job) }
        if job.interruptSent.load(ordering: .acquiring) {
            thread.clearPendingInterrupt()
        }
        let healthy = !failed || context.isHealthy()
        let memoryAfter = configuration.maxMemoryPerWorker == nil ? 0 : statm.residentBytes()
        let retire = state.withLock { state -> Bool in
            state.running -= 1
            state.dispatched[job.id] = nil
            if job.currentState == .finished {
                if failed { state.failed += 1 } else { state.completed += 1 }
            }
            worker.tasks += 1
            worker.busy += elapsed
            worker.memoryGrowth += max(0, memoryAfter - memoryBefore)
            var reason: String?
            if let limit = configuration.maxTasksPerWorker, worker.tasks >= limit {
                reason = "it ran \(worker.tasks) tasks"
            } else if let limit = configuration.maxMemoryPerWorker, worker.memoryGrowth > limit {
                reason = "its memory grew by \(worker.memoryGrowth >> 20) MiB"
            } else if !healthy {
                reason = "its interpreter can no longer run code"
            }
            guard let reason, !state.closed else { return false }
            worker.retiring = true
            state.workers[ObjectIdentifier(thread)] = nil
            state.retired.append((worker.index, worker.tasks, worker.busy))
            state.recycled += 1
            state.replacing += 1
            logger.debug("recycling worker", metadata: ["worker": "\(worker.index)", "reason": "\(reason)"])
            return true
        }
        report()
        if retire { replace(worker) }
    }

    /// Ends a retiring worker after its current job and starts a fresh interpreter in its place.
    /// Queued jobs wait in the shared queue meanwhile; none is dropped.
    private func replace(_ worker: PoolWorker) {
        _ = worker.thread.close {}
        InterpreterThread.launch(runtime: runtime, options: options(index: worker.index), feeder: self) { [self] result in
            switch result {
            case .success(let thread):
                let keep = state.withLock { state -> Bool in
                    state.replacing -= 1
                    guard !state.closed else { return false }
                    state.workers[ObjectIdentifier(thread)] = PoolWorker(index: worker.index, thread: thread)
                    return true
                }
                if !keep { _ = thread.close {} }
            case .failure(let error):
                logger.error(
                    "could not start a replacement worker",
                    metadata: ["worker": "\(worker.index)", "error": "\(error)"])
                let orphaned = state.withLock { state -> [PoolJob] in
                    state.replacing -= 1
                    guard state.workers.isEmpty, state.replacing == 0 else { return [] }
                    var jobs: [PoolJob] = []
                    while let job = state.popPending() { jobs.append(job) }
                    return jobs
                }
                let failure = (error as? SubinterpreterError)
                    ?? SubinterpreterError(.interpreterCreationFailed, "could not start a worker: \(error)")
                for job in orphaned { _ = job.cancel(failure) }
            }
        }
    }

    // MARK: - Cancelling

    func cancel(_ job: PoolJob, _ error: SubinterpreterError) {
        guard let from = job.cancel(error) else { return }
        state.withLock {
            if error.code == .timedOut { $0.timedOut += 1 } else { $0.cancelled += 1 }
        }
        if from == .running {
            controller.interrupt(job)
        }
    }

    // MARK: - Shutdown

    private func resumeDrainedIfIdle(_ state: inout State) {
        guard state.running == 0, !state.drained.isEmpty, state.firstQueued() == nil else { return }
        let waiters = state.drained
        state.drained = []
        for waiter in waiters { waiter.resume() }
    }

    func shutdown(cancelPending: Bool) async {
        let doomed = state.withLock { state -> [PoolJob] in
            state.closed = true
            guard cancelPending else { return [] }
            var jobs: [PoolJob] = []
            while let job = state.popPending() { jobs.append(job) }
            return jobs + state.dispatched.values
        }
        let error = SubinterpreterError(.cancelled, "the pool shut down before the call finished")
        for job in doomed { cancel(job, error) }
        // Wait until every started job has returned and the queue is empty.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.running == 0 && state.firstQueued() == nil { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        // Wait for replacements being started, so none is left running.
        while state.withLock({ $0.replacing > 0 }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let workers = state.withLock { state -> [PoolWorker] in
            defer { state.workers = [:]; state.idle = [] }
            return Array(state.workers.values)
        }
        await withTaskGroup(of: Void.self) { group in
            for worker in workers {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        if !worker.thread.close({ continuation.resume() }) { continuation.resume() }
                    }
                }
            }
        }
        controller.stop()
    }
}

extension PoolCore.State {
    /// The first pending job still queued (cancelled ones wait to be skipped), without removing it.
    func firstQueued() -> PoolJob? {
        pending[pendingHead...].first { $0.currentState == .queued }
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
