import Foundation
import Synchronization

/// The thread that enforces ASGI request deadlines and watches for event loops held by code
/// that does not give them back (see `ASGIWorker.watch`). It wakes every `tick` while any
/// worker has something to watch, and sleeps otherwise until a worker wakes it.
///
/// Interrupting a worker waits for that worker's GIL, so it happens here, never on an event loop
/// or the Swift concurrency pool.
final class ASGIWatchdog: @unchecked Sendable {
    // Safe: every mutable field is guarded by `condition`; `asleep` is atomic.
    // NSCondition rather than Mutex: this thread must block until a deadline or a wake-up.
    private let condition = NSCondition()
    private var workers: [ASGIWorker] = []
    private var woken = false
    private var started = false
    private var stopping = false
    private var stopped = false
    /// Set while the thread may sleep without a timeout: only then does a wake-up need a signal.
    private let asleep = Atomic<Bool>(false)
    let tick: Duration
    let cancelGrace: Duration
    let holdLimit: Duration

    init(tick: Duration, cancelGrace: Duration, holdLimit: Duration) {
        self.tick = tick
        self.cancelGrace = cancelGrace
        self.holdLimit = holdLimit
    }

    /// Starts watching these workers.
    func watch(_ workers: [ASGIWorker]) {
        condition.lock()
        defer { condition.unlock() }
        self.workers = workers
        guard !started, !stopping else { return }
        started = true
        let thread = Thread { [self] in loop() }
        thread.name = "asgi-watchdog"
        thread.start()
    }

    /// Something to watch was added (a deadline, a cancel to check).
    func wake() {
        guard asleep.load(ordering: .sequentiallyConsistent) else { return }
        condition.lock()
        woken = true
        condition.signal()
        condition.unlock()
    }

    /// Stops the thread and waits for it.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        condition.signal()
        while started && !stopped { condition.wait() }
    }

    private func loop() {
        condition.lock()
        while !stopping {
            let workers = self.workers
            // Set before looking: a worker adding work after the look sees it and signals.
            asleep.store(true, ordering: .sequentiallyConsistent)
            condition.unlock()
            let now = ContinuousClock.now
            var busy = false
            for worker in workers where worker.watch(now: now, cancelGrace: cancelGrace, holdLimit: holdLimit) { busy = true }
            condition.lock()
            if stopping { break }
            if busy {
                asleep.store(false, ordering: .sequentiallyConsistent)
                let wait = (now + tick) - .now
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
                if seconds > 0 { _ = condition.wait(until: Date(timeIntervalSinceNow: seconds)) }
            } else {
                while !woken && !stopping { condition.wait() }
            }
            woken = false
        }
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
