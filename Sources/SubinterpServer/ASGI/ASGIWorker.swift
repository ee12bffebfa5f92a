import CPython
import Foundation
import Logging
import Subinterpreters
import Synchronization

/// One ASGI worker: an isolated interpreter whose thread runs one asyncio event loop for as
/// long as the worker lives, serving every request given to it concurrently. Events reach the
/// loop through the worker's mailbox; the app's messages come back through each request's
/// `ASGIExchange`.
final class ASGIWorker: Sendable {
    let index: Int
    let interpreter: Interpreter
    let mailbox: ASGIMailbox
    let control: ASGIWorkerControl
    let logger: Logger
    private let load: ASGILoad
    private let watchdog: ASGIWatchdog
    /// Exchanges running on this worker, by id.
    private let running = Mutex<[UInt64: ASGIExchange]>([:])
    /// Cancels posted to the loop and not yet taken: when, and the loop's progress count then.
    private let cancels = Mutex<[(at: ContinuousClock.Instant, progress: UInt64)]>([])
    /// Since when events have waited in the mailbox while the loop stayed at this progress count.
    private let held = Mutex<(progress: UInt64, since: ContinuousClock.Instant)?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let loop = Mutex<Task<Void, Never>?>(nil)
    /// Whether the loop has ended, and who waits for it to.
    private let ended = Mutex<(done: Bool, next: Int, waiters: [Int: CheckedContinuation<Bool, Never>])>((false, 0, [:]))
    /// How many requests run here now (the dispatcher picks the least loaded worker).
    let active = Atomic<Int>(0)
    /// How many requests and connections were started here (`--max-requests`).
    let served = Atomic<Int>(0)
    /// `ASGIExchange`s of this worker still in memory: back to zero once everything that ran
    /// here is over and let go (what tests check for leaks).
    let exchangesAlive = Atomic<Int>(0)
    /// Who waits for this worker to have nothing in flight.
    private let drainWaiters = Mutex<(next: Int, waiters: [Int: CheckedContinuation<Bool, Never>])>((0, [:]))
    /// Told when the loop ends without being asked to (the worker no longer serves).
    private let onLoopEnded: @Sendable (ASGIWorker) -> Void

    private init(
        index: Int, interpreter: Interpreter, mailbox: ASGIMailbox, control: ASGIWorkerControl, logger: Logger, load: ASGILoad,
        watchdog: ASGIWatchdog, onLoopEnded: @escaping @Sendable (ASGIWorker) -> Void
    ) {
        self.index = index
        self.interpreter = interpreter
        self.mailbox = mailbox
        self.control = control
        self.logger = logger
        self.load = load
        self.watchdog = watchdog
        self.onLoopEnded = onLoopEnded
    }

    /// Starts the interpreter, loads the app in it, starts its loop and runs lifespan startup.
    /// Throws with the app's traceback if it does not load, or with its message on
    /// `lifespan.startup.failed`.
    static func start(
        index: Int, configuration: ASGIConfiguration, runtime: PythonRuntime, logger: Logger, load: ASGILoad, watchdog: ASGIWatchdog,
        onLoopEnded: @escaping @Sendable (ASGIWorker) -> Void = { _ in }
    ) async throws -> ASGIWorker {
        ASGIHost.installed
        var logger = logger
        logger[metadataKey: "worker"] = "\(index)"
        let control = ASGIWorkerControl(index: index, logger: logger, onIteration: configuration.onLoopIteration)
        guard let mailbox = ASGIMailbox(context: Unmanaged.passUnretained(control).toOpaque()) else {
            throw SubinterpreterError(.runtimeFailed, "could not create an ASGI worker's mailbox (out of file descriptors?)")
        }
        let interpreter = try await Interpreter(
            runtime: runtime,
            options: InterpreterOptions(
                workerIndex: index, workerCount: configuration.workers, path: configuration.path, kind: configuration.interpreterKind))
        do {
            let setup = ASGIAdapter.setup(app: configuration.app, rootPath: configuration.rootPath, lifespan: configuration.lifespan)
            try await interpreter.withPython { python in
                guard cpy_asgi_install(mailbox.pointer) == 0 else {
                    // Only a failing import of asyncio or importlib gets here: repeat it, so the
                    // error carries Python's traceback.
                    cpy_PyErr_Clear()
                    try python.exec("import asyncio, importlib.machinery")
                    throw SubinterpreterError(.runtimeFailed, "could not set up the ASGI worker's module")
                }
                try python.exec(setup, filename: "<subinterp asgi>")
            }
        } catch {
            await interpreter.close()
            throw error
        }
        let worker = ASGIWorker(
            index: index, interpreter: interpreter, mailbox: mailbox, control: control, logger: logger, load: load, watchdog: watchdog,
            onLoopEnded: onLoopEnded)
        worker.loop.withLock { $0 = Task { await worker.runLoop() } }
        do {
            try await control.startup()
        } catch {
            await worker.stop(limit: configuration.stopLimit)
            throw error
        }
        return worker
    }

    /// The loop, for the worker's whole life: one job on the interpreter's thread.
    private func runLoop() async {
        do {
            try await interpreter.withInterruptiblePython { python in
                _ = try python.resolve("_asgi_run").call()
            }
        } catch {
            logger.error("the worker's event loop ended with an error", metadata: ["error": "\((error as? SubinterpreterError)?.detailedDescription ?? "\(error)")"])
        }
        // What the loop's last turn sent goes out (its `onLoopIteration` did not run after it).
        control.iterationEnded()
        // A loop that ends during startup (lifespan startup failed) is reported by `start`.
        let wasServing = control.isServing
        control.loopEnded()
        // Nothing is served here any more: requests still running get 503.
        mailbox.close()
        for exchange in running.withLock({ Array($0.values) }) { exchange.end(.failed(status: 503)) }
        let waiting = ended.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.done = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for continuation in waiting { continuation.resume(returning: true) }
        if wasServing && !stopping.load(ordering: .relaxed) {
            logger.error("the worker's event loop ended; it no longer serves")
            onLoopEnded(self)
        }
    }

    var isServing: Bool { control.isServing }

    /// Asks the loop to stop (lifespan shutdown, then the loop ends), waits for it, and ends the
    /// interpreter. A loop held by Python code that ignores the request is interrupted after the
    /// watchdog's cancel grace, like a request that ignores its cancellation. One still running
    /// after `limit` (blocked in a system call, which no interrupt ends) is left to the process's
    /// exit: this returns without ending its interpreter.
    func stop(limit: Duration) async {
        stopping.store(true, ordering: .relaxed)
        if mailbox.post(CPY_ASGI_SHUTDOWN, stream: nil) { expectProgress() }
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.loopEnded() }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        mailbox.close()
        guard ended else {
            logger.error("the worker's event loop did not stop; leaving it to the process's exit", metadata: ["limit": "\(limit)"])
            return
        }
        await loop.withLock({ $0 })?.value
        await interpreter.close()
    }

    /// Returns true once the loop has ended, or false when the waiting task is cancelled.
    private func loopEnded() async -> Bool {
        let id = ended.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = ended.withLock { state -> Bool? in
                    if state.done { return true }
                    if Task.isCancelled { return false }
                    state.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            ended.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: false)
        }
    }

    // MARK: - Requests

    /// Records an exchange about to be posted here.
    func begin(_ exchange: ASGIExchange) {
        active.add(1, ordering: .relaxed)
        running.withLock { $0[exchange.id] = exchange }
        watchdog.wake()
    }

    /// Called once per exchange, whoever ended it.
    func exchangeEnded(_ exchange: ASGIExchange) {
        active.subtract(1, ordering: .relaxed)
        let empty = running.withLock { running -> Bool in
            running.removeValue(forKey: exchange.id)
            return running.isEmpty
        }
        load.ended()
        if empty {
            let waiting = drainWaiters.withLock { state -> [CheckedContinuation<Bool, Never>] in
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for continuation in waiting { continuation.resume(returning: true) }
        }
    }

    /// Returns true once nothing is in flight here (a replaced worker finishing its requests),
    /// or false when the waiting task is cancelled.
    func drained() async -> Bool {
        let id = drainWaiters.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                // Registered under the waiters' lock, then checked: an exchange that ends in
                // between finds the waiter and resumes it.
                drainWaiters.withLock { $0.waiters[id] = continuation }
                let now: Bool? = Task.isCancelled ? false : (running.withLock { $0.isEmpty } ? true : nil)
                if let now, let waiting = drainWaiters.withLock({ $0.waiters.removeValue(forKey: id) }) {
                    waiting.resume(returning: now)
                }
            }
        } onCancel: {
            drainWaiters.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: false)
        }
    }

    /// The worker's report of how a request ended (on its thread).
    func finished(_ exchange: ASGIExchange, outcome: Int32, detail: String?) {
        let metadata: Logger.Metadata = ["target": "\(exchange.target)"]
        let result: ASGIOutcome
        switch outcome {
        case CPY_ASGI_COMPLETED:
            result = .completed
        case CPY_ASGI_DISCONNECTED:
            result = .disconnected
        case CPY_ASGI_INTERRUPTED:
            result = .failed(status: 504)
        case CPY_ASGI_CANCELLED:
            // Not by the host (that ends the exchange first): the worker is stopping, or the
            // app cancelled its own task.
            result = .failed(status: 503)
        default:
            result = .failed(status: 500)
        }
        guard exchange.end(result) else { return }  // the host ended it first (deadline, shutdown)
        switch outcome {
        case CPY_ASGI_FAILED:
            logger.error("Exception in ASGI application\n\(detail ?? "")", metadata: metadata)
        case CPY_ASGI_INCOMPLETE:
            logger.error("\(detail ?? "the ASGI app did not complete its response")", metadata: metadata)
        case CPY_ASGI_INTERRUPTED:
            logger.error("request interrupted: it held the worker's event loop", metadata: metadata)
        case CPY_ASGI_CANCELLED:
            logger.warning("request ended: its task was cancelled", metadata: metadata)
        default:
            break
        }
    }

    /// Cancels an exchange's task on the worker (after the host ended it).
    func cancel(_ exchange: ASGIExchange) {
        if mailbox.post(CPY_ASGI_CANCEL, stream: exchange.stream.pointer) { expectProgress() }
    }

    /// Exchanges running here now.
    var runningExchanges: [ASGIExchange] { running.withLock { Array($0.values) } }

    // MARK: - Watchdog

    /// The loop must act on what was just posted (a cancellation, the shutdown) soon: if it
    /// does not go round within the watchdog's cancel grace, some code holds it.
    private func expectProgress() {
        let progress = mailbox.progress
        cancels.withLock { $0.append((.now, progress)) }
        watchdog.wake()
    }

    /// Ends requests past their deadline (504, task cancelled), and interrupts the code that
    /// holds the loop when the loop does not act on a cancellation within `cancelGrace`, or
    /// leaves other events (new requests, body, messages) untaken for `holdLimit`. Runs on the
    /// watchdog's thread; returns whether anything here still needs watching.
    func watch(now: ContinuousClock.Instant, cancelGrace: Duration, holdLimit: Duration) -> Bool {
        let (expired, inFlight) = running.withLock { running -> ([ASGIExchange], Bool) in
            (running.values.filter { $0.deadline.map { $0 <= now } ?? false }, !running.isEmpty)
        }
        for exchange in expired {
            logger.error("request timed out; its task was cancelled", metadata: ["target": "\(exchange.target)"])
            exchange.abandon(status: 504)
        }
        let progress = mailbox.progress
        let busy = !mailbox.isIdle
        let cancelledSince = cancels.withLock { cancels -> ContinuousClock.Instant? in
            // Taken once the loop went round after the post.
            cancels.removeAll { $0.progress != progress }
            return cancels.first?.at
        }
        let heldSince = held.withLock { held -> ContinuousClock.Instant? in
            guard busy, mailbox.hasWaitingEvents else {
                held = nil
                return nil
            }
            if held?.progress != progress { held = (progress, now) }
            return held?.since
        }
        var reason: String?
        if busy, let since = cancelledSince, now - since >= cancelGrace {
            reason = "it did not act on a cancellation within \(cancelGrace)"
        } else if let since = heldSince, now - since >= holdLimit {
            reason = "it left new events waiting for \(holdLimit)"
        }
        if let reason {
            let mailbox = self.mailbox
            if interpreter.interruptRunningCode(when: { mailbox.progress == progress && !mailbox.isIdle }) {
                logger.warning("code held the worker's event loop; interrupted it", metadata: ["reason": "\(reason)"])
            }
            // Still held after another period (the code caught it): interrupt again then.
            cancels.withLock { cancels in
                for i in cancels.indices { cancels[i].at = now }
            }
            held.withLock { if $0 != nil { $0!.since = now } }
        }
        return inFlight || stopping.load(ordering: .relaxed) || cancels.withLock { !$0.isEmpty }
    }
}

/// What a worker's loop reports to the host (lifespan, logs), and the per-iteration hook. The
/// mailbox's context: C reaches it without retaining it, so it must outlive the loop (the
/// worker holds it, and the loop's task holds the worker).
final class ASGIWorkerControl: Sendable {
    enum Phase {
        case starting([CheckedContinuation<Void, any Error>])
        case serving
        case failed(String)
        case ended
    }

    let index: Int
    let logger: Logger
    let onIteration: (@Sendable (Int) -> Void)?
    private let phase = Mutex<Phase>(.starting([]))

    init(index: Int, logger: Logger, onIteration: (@Sendable (Int) -> Void)?) {
        self.index = index
        self.logger = logger
        self.onIteration = onIteration
    }

    var isServing: Bool {
        phase.withLock { if case .serving = $0 { return true } else { return false } }
    }

    /// Waits for lifespan startup; throws with the app's message if it failed.
    func startup() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ready = phase.withLock { phase -> Result<Void, any Error>? in
                switch phase {
                case .starting(let waiting):
                    phase = .starting(waiting + [continuation])
                    return nil
                case .serving:
                    return .success(())
                case .failed(let message):
                    return .failure(Self.startupError(message))
                case .ended:
                    return .failure(Self.startupError("the worker's event loop ended during startup"))
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    private static func startupError(_ message: String) -> SubinterpreterError {
        SubinterpreterError(.runtimeFailed, "ASGI lifespan startup failed: \(message.isEmpty ? "(no message)" : message)")
    }

    private func settle(_ next: Phase, _ result: Result<Void, any Error>) {
        let waiting = phase.withLock { phase -> [CheckedContinuation<Void, any Error>] in
            guard case .starting(let waiting) = phase else {
                // A loop that ends after serving is over; one that ends after its startup
                // failed keeps the app's message for a `startup()` that asks late.
                if case .ended = next, case .serving = phase { phase = .ended }
                return []
            }
            phase = next
            return waiting
        }
        for continuation in waiting { continuation.resume(with: result) }
    }

    func report(_ kind: Int32, _ text: String) {
        switch ASGIAdapter.Report(rawValue: kind) {
        case .started:
            settle(.serving, .success(()))
        case .startupFailed:
            // Debug only: the failure reaches whoever started the worker, as one error with this text.
            logger.debug("application startup failed", metadata: ["message": "\(text)"])
            settle(.failed(text), .failure(Self.startupError(text)))
        case .stopped:
            break
        case .shutdownFailed:
            logger.error("application shutdown failed", metadata: ["message": "\(text)"])
        case .info:
            logger.info("\(text)")
        case .warning:
            logger.warning("\(text)")
        case .error, .none:
            logger.error("\(text)")
        }
    }

    func loopEnded() {
        settle(.ended, .failure(Self.startupError("the worker's event loop ended during startup")))
    }

    func iterationEnded() { onIteration?(index) }
}
