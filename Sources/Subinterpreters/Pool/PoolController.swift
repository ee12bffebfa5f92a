import Foundation
import Synchronization

/// The pool's controller thread: its timers. Deadlines, queue timeouts, repeated interrupts,
/// abandoning a stuck worker and retrying a replacement all run here.
///
/// A timer's action must not block: it cancels a job (which releases its caller), asks a
/// worker's interrupter for an interrupt, or starts a thread. In particular the controller
/// never waits for an interpreter's GIL (`InterpreterThread.requestInterrupt` does that on a
/// thread of the worker's own), so one worker stuck in a long C call holding its GIL cannot
/// delay the deadlines of the others.
final class PoolController: @unchecked Sendable {
    // Safe: every mutable field is guarded by `condition`. NSCondition rather than a Mutex: the
    // controller thread must sleep until the earliest timer or a new earlier one.
    private let condition = NSCondition()
    private struct Entry {
        let at: ContinuousClock.Instant
        /// The job the timer is about (so finishing the job drops it), if any.
        let job: PoolJob?
        let action: @Sendable () -> Void
    }
    /// Sorted by `at`; equal times in the order they were scheduled.
    private var entries: [Entry] = []
    private var started = false
    private var stopping = false

    /// Runs `action` on the controller thread at `at`, unless `unschedule(job)` drops it first.
    func schedule(at: ContinuousClock.Instant, for job: PoolJob? = nil, _ action: @escaping @Sendable () -> Void) {
        job?.hasTimers.store(true, ordering: .releasing)
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return }
        var low = 0, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].at <= at { low = middle + 1 } else { high = middle }
        }
        entries.insert(Entry(at: at, job: job, action: action), at: low)
        startIfNeeded()
        // Only a new earliest timer changes when the controller must wake; waking it for every
        // call would cost a context switch per call.
        if low == 0 { condition.signal() }
    }

    /// Drops every timer of a job that finished.
    func unschedule(_ job: PoolJob) {
        condition.lock()
        defer { condition.unlock() }
        entries.removeAll { $0.job === job }
    }

    /// Drops every timer and lets the thread end. Returns at once.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        entries = []
        condition.signal()
    }

    private func startIfNeeded() {
        guard !started else { return }
        started = true
        let thread = Thread { [self] in loop() }
        thread.name = "python-pool-controller"
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func loop() {
        condition.lock()
        while !stopping {
            let now = ContinuousClock.now
            if let first = entries.first, first.at <= now {
                entries.removeFirst()
                condition.unlock()
                first.action()
                condition.lock()
                continue
            }
            if let first = entries.first {
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0, (first.at - now).timeInterval)))
            } else {
                condition.wait()
            }
        }
        condition.unlock()
    }
}
