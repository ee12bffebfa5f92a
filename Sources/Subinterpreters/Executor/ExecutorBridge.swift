import CPython
import Foundation
import Synchronization

/// The Swift half of `subinterp.InterpreterPoolExecutor`: the pools behind `cpy_pool_hooks`
/// (executor.h), each an `InterpreterPool`.
///
/// The Python side (`subinterp._core._Pool`) encodes each call into an item and submits it with a
/// job number; a worker runs it with `cpy_executor_run`; the outcome is posted to the caller's
/// completion box. Installed by `PythonRuntime` as it starts or attaches, so the executor works in
/// a plain Python process and inside the interpreters of the `subinterp` command alike.
enum ExecutorBridge {
    private static let installed = Mutex(false)

    static func install() {
        installed.withLock { done in
            guard !done else { return }
            done = true
            var hooks = cpy_pool_hooks(
                create: { config, box in
                    guard let config, let box else { return nil }
                    let pool = ExecutorPool(box: box, configuration: ExecutorPool.configuration(config.pointee))
                    return Unmanaged.passRetained(pool).toOpaque()
                },
                submit: { pool, job, payload, timeout in
                    ExecutorPool.from(pool).submit(job, OwnedItem(payload), timeout: timeout)
                },
                cancel: { pool, job, queuedOnly in
                    ExecutorPool.from(pool).cancel(job, queuedOnly: queuedOnly != 0)
                },
                state: { pool, job in
                    ExecutorPool.from(pool).state(of: job)
                },
                close: { pool, wait in
                    ExecutorPool.from(pool).close(wait: wait != 0)
                },
                release: { pool in
                    guard let pool else { return }
                    Unmanaged<ExecutorPool>.fromOpaque(pool).release()
                })
            cpy_executor_set_hooks(&hooks)
        }
    }
}

/// An item (channels.h) with exactly one owner at a time; freed unless someone took it.
final class OwnedItem: @unchecked Sendable {
    // Safe: `take` is called at most once, by the one party the item is handed to (the worker
    // running the job, or the poster of its outcome); the pool's locks order that hand-off.
    private var pointer: OpaquePointer?

    init(_ pointer: OpaquePointer?) {
        self.pointer = pointer
    }

    func take() -> OpaquePointer? {
        defer { pointer = nil }
        return pointer
    }

    deinit {
        if let pointer { cpy_item_free(pointer) }
    }
}

/// One executor's pool: its `InterpreterPool` once started, and its calls by job number.
final class ExecutorPool: Sendable {
    /// What a worker did with a call.
    enum Outcome: Sendable {
        /// The call ran; the item holds what `subinterp._worker._run` returned.
        case done(OwnedItem)
        /// It was cancelled before it started; that was posted then.
        case skipped
        /// The host could not run it.
        case failed(String)
    }

    /// A call's own gate: whoever moves it first, the worker starting it or a cancel while it is
    /// queued, decides whether it runs. This is how `shutdown(cancel_futures=True)` drops only
    /// calls that have not started, without touching the pool.
    final class Gate: Sendable {
        private let state = Atomic<UInt8>(0)  // 0 queued, 1 started, 2 cancelled before it started

        func start() -> Bool {
            state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
        }

        func cancelIfQueued() -> Bool {
            state.compareExchange(expected: 0, desired: 2, ordering: .acquiringAndReleasing).exchanged
        }

        var started: Bool { state.load(ordering: .acquiring) == 1 }
    }

    private struct Entry {
        let gate: Gate
        var job: PoolJob?
    }

    private struct Waiting {
        let id: UInt64
        let payload: OwnedItem
        let timeout: Double
    }

    private struct State {
        var pool: InterpreterPool?
        var starting = true
        var broken: String?
        /// Calls submitted while the pool was starting.
        var waiting: [Waiting] = []
        var jobs: [UInt64: Entry] = [:]
        var closeRequested = false
        var shutDown = false
    }

    /// The caller's completion box (a reference of our own). The box is thread-safe (its own
    /// mutex); the pointer itself never changes.
    nonisolated(unsafe) private let box: OpaquePointer
    private let state = Mutex(State())
    /// Blocks `close(wait: true)` until the workers have ended, and a queued-only cancel until
    /// the pool has started: a Python thread (its GIL released) waits in C here, outside any
    /// Swift concurrency context, so it needs a condition variable.
    private let milestones = NSCondition()
    private nonisolated(unsafe) var startedFlag = false  // guarded by `milestones`
    private nonisolated(unsafe) var endedFlag = false  // guarded by `milestones`

    static func from(_ pointer: UnsafeMutableRawPointer?) -> ExecutorPool {
        Unmanaged<ExecutorPool>.fromOpaque(pointer!).takeUnretainedValue()
    }

    static func configuration(_ config: cpy_pool_config) -> InterpreterPool.Configuration {
        InterpreterPool.Configuration(
            workers: config.workers, setup: config.setup.map { String(cString: $0) },
            maxTasksPerWorker: config.max_tasks > 0 ? config.max_tasks : nil)
    }

    init(box: OpaquePointer, configuration: InterpreterPool.Configuration) {
        cpy_box_retain(box)
        self.box = box
        // The workers start in parallel while the caller goes on; calls submitted meanwhile wait
        // in `waiting`. The task's outcome is observed through `started`/`failed` by every call.
        Task { [self] in
            do {
                started(try await InterpreterPool(configuration: configuration))
            } catch {
                failed(error)
            }
        }
    }

    deinit {
        cpy_box_release(box)
    }

    private func post(_ job: UInt64, _ status: Int32, _ item: OpaquePointer? = nil, _ message: String? = nil) {
        if let message {
            cpy_box_post(box, job, status, item, message)
        } else {
            cpy_box_post(box, job, status, item, nil)
        }
    }

    // MARK: - Starting

    private func started(_ pool: InterpreterPool) {
        let (waiting, close) = state.withLock { state in
            state.pool = pool
            state.starting = false
            defer { state.waiting = [] }
            return (state.waiting, state.closeRequested)
        }
        for call in waiting { dispatch(call.id, call.payload, timeout: call.timeout, on: pool) }
        mark(started: true)
        if close { shutDown(pool) }
    }

    private func failed(_ error: any Error) {
        let message: String
        if let error = error as? SubinterpreterError, let python = error.pythonException {
            message = "a worker's initializer raised \(python.typeName): \(python.message)\n\(python.traceback)"
        } else {
            message = "the pool could not start: \(error)"
        }
        let waiting = state.withLock { state in
            state.broken = message
            state.starting = false
            defer { state.waiting = [] }
            return state.waiting
        }
        post(0, CPY_DONE_BROKEN, nil, message)
        for call in waiting { post(call.id, CPY_DONE_BROKEN, nil, message) }
        mark(started: true, ended: true)
    }

    // MARK: - Calls

    func submit(_ id: UInt64, _ payload: OwnedItem, timeout: Double) -> Int32 {
        enum Route { case dispatch(InterpreterPool), waiting, broken(String), closed }
        let route = state.withLock { state -> Route in
            if state.closeRequested { return .closed }
            if let broken = state.broken { return .broken(broken) }
            guard let pool = state.pool else {
                state.waiting.append(Waiting(id: id, payload: payload, timeout: timeout))
                return .waiting
            }
            return .dispatch(pool)
        }
        switch route {
        case .dispatch(let pool): dispatch(id, payload, timeout: timeout, on: pool)
        case .waiting: break
        case .broken(let message): post(id, CPY_DONE_BROKEN, nil, message)
        case .closed: return -1
        }
        return 0
    }

    private func dispatch(_ id: UInt64, _ payload: OwnedItem, timeout: Double, on pool: InterpreterPool) {
        let gate = Gate()
        state.withLock { $0.jobs[id] = Entry(gate: gate, job: nil) }
        let deadline: Duration? = timeout >= 0 ? .nanoseconds(Int64(timeout * 1e9)) : nil
        do {
            let job = try pool.core.submit(
                options: InterpreterPool.JobOptions(timeout: deadline, timeoutStart: .start),
                body: { _ -> Outcome in
                    // On the worker's thread, its GIL held (the pool's job contract).
                    guard gate.start(), let item = payload.take() else { return .skipped }
                    var result: OpaquePointer?
                    var error = [CChar](repeating: 0, count: 512)
                    guard cpy_executor_run(item, &result, &error, error.count) == 0 else {
                        return .failed(String(nulTerminated: error))
                    }
                    return .done(OwnedItem(result))
                },
                completion: { [self] result in finish(id, gate, result) })
            state.withLock { $0.jobs[id]?.job = job }
        } catch {
            state.withLock { _ = $0.jobs.removeValue(forKey: id) }
            post(id, CPY_DONE_ERROR, nil, "the pool is shut down; no more calls can run")
        }
    }

    private func finish(_ id: UInt64, _ gate: Gate, _ result: Result<Outcome, any Error>) {
        state.withLock { _ = $0.jobs.removeValue(forKey: id) }
        switch result {
        case .success(.done(let item)):
            post(id, CPY_DONE_OK, item.take())
        case .success(.skipped):
            break
        case .success(.failed(let message)):
            post(id, CPY_DONE_ERROR, nil, message)
        case .failure(let error):
            let error = error as? SubinterpreterError
            switch error?.code {
            case .cancelled?: post(id, CPY_DONE_CANCELLED)
            case .timedOut?: post(id, CPY_DONE_TIMEOUT, nil, error?.message ?? "the call timed out")
            default: post(id, CPY_DONE_ERROR, nil, error?.message ?? "the call could not run")
            }
        }
    }

    func cancel(_ id: UInt64, queuedOnly: Bool) -> Int32 {
        if queuedOnly {
            // "Not started" means not yet handed to a worker (as ProcessPoolExecutor counts the
            // calls in its call queue as running): the first calls go to the workers as soon as
            // the pool has started, so wait for that rather than cancel them all.
            milestones.lock()
            while !startedFlag { milestones.wait() }
            milestones.unlock()
        }
        enum Found { case entry(Entry, InterpreterPool?), waiting, none }
        let found = state.withLock { state -> Found in
            if let entry = state.jobs[id] { return .entry(entry, state.pool) }
            if let index = state.waiting.firstIndex(where: { $0.id == id }) {
                state.waiting.remove(at: index)
                return .waiting
            }
            return .none
        }
        switch found {
        case .none:
            return 0
        case .waiting:
            post(id, CPY_DONE_CANCELLED)
            return 1
        case .entry(let entry, let pool):
            if queuedOnly, let job = entry.job, let pool, pool.core.state.withLock({ $0.dispatched[job.id] != nil }) {
                return 0  // a worker has it
            }
            if entry.gate.cancelIfQueued() {
                post(id, CPY_DONE_CANCELLED)  // the job still reaches a worker, which skips it
                return 1
            }
            guard !queuedOnly, let job = entry.job, let pool else { return 0 }
            pool.core.cancel(job) { _ in SubinterpreterError(.cancelled, "the call was cancelled") }
            return job.currentState == .cancelled ? 2 : 0
        }
    }

    func state(of id: UInt64) -> Int32 {
        state.withLock { state in
            if let entry = state.jobs[id] { return entry.gate.started ? 1 : 0 }
            return state.waiting.contains { $0.id == id } ? 0 : 2
        }
    }

    // MARK: - Closing

    func close(wait: Bool) {
        let pool = state.withLock { state -> InterpreterPool? in
            guard !state.closeRequested else { return nil }
            state.closeRequested = true
            return state.starting ? nil : state.pool
        }
        if let pool { shutDown(pool) }
        // A pool still starting shuts down once started (see `started`); a broken one has ended.
        if wait {
            milestones.lock()
            while !endedFlag { milestones.wait() }
            milestones.unlock()
        }
    }

    private func shutDown(_ pool: InterpreterPool) {
        guard state.withLock({ state -> Bool in
            defer { state.shutDown = true }
            return !state.shutDown
        }) else { return }
        // Queued calls finish first; `close(wait:)` waits for `mark(ended:)`.
        Task { [self] in
            await pool.shutdown(cancelPending: false)
            mark(ended: true)
        }
    }

    private func mark(started: Bool = false, ended: Bool = false) {
        milestones.lock()
        if started { startedFlag = true }
        if ended { endedFlag = true }
        milestones.broadcast()
        milestones.unlock()
    }
}
