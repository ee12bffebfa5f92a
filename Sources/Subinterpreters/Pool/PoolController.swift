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
    /// While the controller thread sleeps: when it wakes by itself (nil: only when signalled).
    /// A new timer signals it only if it is due before then, so a pool whose calls all have
    /// the same timeout does not wake the controller for each call.
    private var sleepingUntil: ContinuousClock.Instant?
    private var sleeping = false

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
        // Only a timer due before the controller wakes by itself needs it woken; waking it for
        // every call would cost a context switch per call.
        if sleeping, sleepingUntil.map({ at < $0 }) ?? true { condition.signal() }
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
        // Whether the last sleep found no timers: a pool between two calls is idle only for a
        // moment, so the first time the controller sleeps a second (a new call's timer is then
        // usually due later, and needs no signal); idle for longer, it sleeps until signalled.
        var wasEmpty = false
        while !stopping {
            let now = ContinuousClock.now
            if let first = entries.first, first.at <= now {
                entries.removeFirst()
                condition.unlock()
                first.action()
                condition.lock()
                continue
            }
            // Timers unscheduled meanwhile are not removed from this deadline: waking for one
            // of them only finds nothing due.
            let until: ContinuousClock.Instant? = entries.first?.at ?? (wasEmpty ? nil : now + .seconds(1))
            wasEmpty = entries.isEmpty
            sleeping = true
            sleepingUntil = until
            if let until {
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0, (until - now).timeInterval)))
            } else {
                condition.wait()
            }
            sleeping = false
            sleepingUntil = nil
        }
        condition.unlock()
    }
}
