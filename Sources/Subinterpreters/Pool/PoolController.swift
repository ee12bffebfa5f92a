import Foundation
import Synchronization

/// The pool's controller thread: it enforces deadlines and interrupts running Python code.
///
/// Interrupting means attaching a thread state to the worker's interpreter, which waits for
/// that interpreter's GIL; doing it here keeps that wait off the Swift concurrency pool and off
/// the workers.
final class PoolController: @unchecked Sendable {
    // Safe: every mutable field is guarded by `condition`.
    private let condition = NSCondition()
    private var deadlines: [(at: ContinuousClock.Instant, job: PoolJob, core: PoolCore)] = []
    private var interrupts: [PoolJob] = []
    private var started = false
    private var stopping = false
    private var stopped = false

    /// Times the job out at `at` unless it has finished by then.
    func schedule(_ job: PoolJob, at: ContinuousClock.Instant, core: PoolCore) {
        condition.lock()
        defer { condition.unlock() }
        let position = deadlines.lastIndex { $0.at <= at }.map { $0 + 1 } ?? 0
        deadlines.insert((at, job, core), at: position)
        startIfNeeded()
        // Only a new earliest deadline changes when the controller must wake; waking it for
        // every call would cost a context switch per call.
        if position == 0 { condition.signal() }
    }

    /// Forgets the deadline of a job that finished.
    func unschedule(_ job: PoolJob) {
        condition.lock()
        defer { condition.unlock() }
        // Jobs mostly finish in the order they were scheduled: the entry is near the front.
        if let index = deadlines.firstIndex(where: { $0.job === job }) { deadlines.remove(at: index) }
    }

    /// Raises `subinterp.CancelledError` in the job's Python code, if it is still running.
    func interrupt(_ job: PoolJob) {
        condition.lock()
        defer { condition.unlock() }
        interrupts.append(job)
        startIfNeeded()
        condition.signal()
    }

    /// Stops the thread once it has handled what it was given.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        condition.signal()
        while started && !stopped { condition.wait() }
    }

    private func startIfNeeded() {
        guard !started else { return }
        started = true
        let thread = Thread { [self] in loop() }
        thread.name = "python-pool-controller"
        thread.start()
    }

    private func loop() {
        condition.lock()
        while true {
            if !interrupts.isEmpty {
                let batch = interrupts
                interrupts = []
                condition.unlock()
                for job in batch {
                    if let worker = job.worker, worker.thread.interrupt(job: job.id) {
                        job.interruptSent.store(true, ordering: .releasing)
                    }
                }
                condition.lock()
                continue
            }
            let now = ContinuousClock.now
            if let first = deadlines.first, first.at <= now {
                deadlines.removeFirst()
                condition.unlock()
                if first.job.currentState == .queued || first.job.currentState == .running {
                    let seconds = first.job.timeout.map { String(format: "%g", Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) } ?? "?"
                    first.core.cancel(first.job, SubinterpreterError(
                        .timedOut, "the call did not finish within its timeout of \(seconds) s; its Python code was interrupted"))
                }
                condition.lock()
                continue
            }
            if stopping { break }
            if let first = deadlines.first {
                let wait = first.at - now
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0, seconds)))
            } else {
                condition.wait()
            }
        }
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
