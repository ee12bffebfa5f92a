import Foundation
import Synchronization

/// One unit of pool work: its state machine, its limits, and how it reports its result.
///
/// States: queued → running → finished, or queued/running → cancelled. Whoever wins the
/// transition out of queued/running reports the result; the loser's result is dropped. A job
/// cancelled while running keeps its worker busy until the Python code actually stops (or the
/// pool abandons that worker).
final class PoolJob: Sendable {
    enum State: UInt8 {
        case queued, running, finished, cancelled
    }

    let id: UInt64
    let options: InterpreterPool.JobOptions
    /// How many calls the job holds (a map chunk holds one per input), for the pool's counters.
    let calls: Int
    private let state = Atomic<UInt8>(State.queued.rawValue)
    /// Whether the controller may hold timers for this job (so finishing it must drop them).
    let hasTimers = Atomic<Bool>(false)
    /// Runs the work on a worker's thread; returns how many of its calls failed and how to
    /// report the result (a no-op if the job was cancelled meanwhile). Dropped once it ran, so
    /// a job that is still referenced (by a `PoolTask`) does not keep its inputs alive. Safe
    /// without a lock: only `run` reads and clears it, once, on the worker's thread.
    nonisolated(unsafe) private var body: (@Sendable (WorkerSite, PoolJob) -> (failedCalls: Int, report: @Sendable () -> Void))?
    private let fail: @Sendable (any Error) -> Void
    /// The worker running this job, once dispatched (guarded by the pool's lock; read after a
    /// state transition that follows the dispatch).
    nonisolated(unsafe) var worker: PoolWorker?
    /// Whether the job sits in the pool's shared queue (guarded by the pool's lock).
    nonisolated(unsafe) var inQueue = false

    /// `body` runs the job in an interpreter; `remote`, if the job can run in a worker process
    /// (a call by name), runs it there. One of them is given.
    init<T: Sendable>(
        id: UInt64, options: InterpreterPool.JobOptions, calls: Int, failures: (@Sendable (T) -> Int)?,
        body: (@Sendable (PythonContext) throws -> T)?, remote: (@Sendable (ProcessChannel, UInt64) throws -> T)?,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        self.id = id
        self.options = options
        self.calls = calls
        self.body = { site, job in
            let result = Result { () throws -> T in
                switch site {
                case .interpreter(let context):
                    guard let body else { throw SubinterpreterError(.invalidArgument, "this job cannot run in an interpreter") }
                    return try body(context)
                case .process(let channel):
                    guard let remote else { throw ProcessWorker.closureRefused() }
                    return try remote(channel, job.id)
                }
            }
            let failedCalls: Int
            switch result {
            case .success(let value): failedCalls = failures?(value) ?? 0
            case .failure: failedCalls = job.calls
            }
            guard job.finish() else { return (failedCalls, {}) }
            return (failedCalls, { completion(result) })
        }
        self.fail = { completion(.failure($0)) }
    }

    var currentState: State { State(rawValue: state.load(ordering: .acquiring))! }

    /// What the pool's log calls this job.
    var name: String { options.label ?? "job \(id)" }

    /// queued → running; false if the job was cancelled first.
    func start() -> Bool {
        state.compareExchange(expected: State.queued.rawValue, desired: State.running.rawValue, ordering: .acquiringAndReleasing).exchanged
    }

    /// Runs the body on the worker's thread. The caller reports the result after its own
    /// bookkeeping, so counters are up to date by the time the submitter sees the result.
    func run(_ site: WorkerSite) -> (failedCalls: Int, report: @Sendable () -> Void) {
        guard let body else { return (0, {}) }
        self.body = nil
        return body(site, self)
    }

    /// running → finished; false if the job was cancelled while it ran (its result is dropped).
    private func finish() -> Bool {
        state.compareExchange(expected: State.running.rawValue, desired: State.finished.rawValue, ordering: .acquiringAndReleasing).exchanged
    }

    /// Cancels the job if it has not finished. Returns the state it was cancelled from
    /// (`.queued` or `.running`), or nil if it had already finished or been cancelled. The
    /// caller then reports the failure with `report(_:)`, after its bookkeeping.
    func cancel() -> State? {
        for from in [State.queued, State.running] {
            if state.compareExchange(expected: from.rawValue, desired: State.cancelled.rawValue, ordering: .acquiringAndReleasing).exchanged {
                return from
            }
        }
        return nil
    }

    /// Reports the failure of a job this caller cancelled.
    func report(_ error: any Error) { fail(error) }
}

/// Where a job runs: on an interpreter's thread, or in a worker process through its channel.
enum WorkerSite {
    case interpreter(PythonContext)
    case process(ProcessChannel)
}

/// A handle to submitted pool work: await its value, or cancel it.
public struct PoolTask<Value: Sendable>: Sendable {
    let job: PoolJob
    let promise: Promise<Value>
    let pool: PoolCore

    /// The result, once the work is done. Cancelling the awaiting task cancels the work.
    public var value: Value {
        get async throws {
            try await withTaskCancellationHandler {
                try await promise.value
            } onCancel: {
                cancel()
            }
        }
    }

    /// Drops the work if it is still queued, or interrupts its Python code if it is running.
    public func cancel() {
        pool.cancel(job) { _ in SubinterpreterError(.cancelled, "the call was cancelled") }
    }
}

/// A value that arrives once, awaited by any number of tasks.
final class Promise<Value: Sendable>: Sendable {
    private let state = Mutex<(result: Result<Value, any Error>?, waiters: [CheckedContinuation<Value, any Error>])>((nil, []))

    func resolve(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    var value: Value {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLock { state -> Result<Value, any Error>? in
                    if let result = state.result { return result }
                    state.waiters.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        }
    }
}
