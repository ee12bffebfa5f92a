import Foundation
import Synchronization

/// One unit of pool work: its state machine, its deadline, and how it reports its result.
///
/// States: queued → running → finished, or queued/running → cancelled. Whoever wins the
/// transition out of queued/running reports the result; the loser's result is dropped. A job
/// cancelled while running keeps its worker busy until the Python code actually stops.
final class PoolJob: Sendable {
    enum State: UInt8 {
        case queued, running, finished, cancelled
    }

    enum DeadlineStart: Sendable {
        /// The deadline counts from submission: a queued job can time out before it starts.
        case submission
        /// The deadline counts from when a worker starts the job.
        case start
    }

    let id: UInt64
    let timeout: Duration?
    let deadlineStart: DeadlineStart
    private let state = Atomic<UInt8>(State.queued.rawValue)
    /// Set by the controller once `subinterp.CancelledError` was raised in the job's code.
    let interruptSent = Atomic<Bool>(false)
    /// Runs the work on a worker's thread; returns whether it failed and how to report the result
    /// (a no-op if the job was cancelled meanwhile).
    private let body: @Sendable (PythonContext, PoolJob) -> (failed: Bool, report: @Sendable () -> Void)
    private let fail: @Sendable (any Error) -> Void
    /// The worker running this job, once dispatched (guarded by the pool's lock).
    nonisolated(unsafe) var worker: PoolWorker?

    init<T: Sendable>(
        id: UInt64, timeout: Duration?, deadlineStart: DeadlineStart,
        body: @escaping @Sendable (PythonContext) throws -> T,
        completion: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        self.id = id
        self.timeout = timeout
        self.deadlineStart = deadlineStart
        self.body = { context, job in
            let result = Result { try body(context) }
            let failed: Bool
            if case .failure = result { failed = true } else { failed = false }
            guard job.finish() else { return (failed, {}) }
            return (failed, { completion(result) })
        }
        self.fail = { completion(.failure($0)) }
    }

    var currentState: State { State(rawValue: state.load(ordering: .acquiring))! }

    /// queued → running; false if the job was cancelled first.
    func start() -> Bool {
        state.compareExchange(expected: State.queued.rawValue, desired: State.running.rawValue, ordering: .acquiringAndReleasing).exchanged
    }

    /// Runs the body on the worker's thread. The caller reports the result after its own
    /// bookkeeping, so counters are up to date by the time the submitter sees the result.
    func run(_ context: PythonContext) -> (failed: Bool, report: @Sendable () -> Void) { body(context, self) }

    /// running → finished; false if the job was cancelled while it ran (its result is dropped).
    private func finish() -> Bool {
        state.compareExchange(expected: State.running.rawValue, desired: State.finished.rawValue, ordering: .acquiringAndReleasing).exchanged
    }

    /// Cancels the job if it has not finished. Returns the state it was cancelled from
    /// (`.queued` or `.running`), or nil if it had already finished or been cancelled.
    func cancel(_ error: SubinterpreterError) -> State? {
        for from in [State.queued, State.running] {
            if state.compareExchange(expected: from.rawValue, desired: State.cancelled.rawValue, ordering: .acquiringAndReleasing).exchanged {
                fail(error)
                return from
            }
        }
        return nil
    }
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
        pool.cancel(job, SubinterpreterError(.cancelled, "the call was cancelled"))
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
