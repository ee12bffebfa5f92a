import CPython
import Logging
import Subinterpreters
import Synchronization

/// `--lifespan`: whether the app gets ASGI lifespan events, as uvicorn has it.
public enum ASGILifespanMode: String, Sendable, CaseIterable {
    /// Send them; an app that raises on them does not use lifespan (logged at info).
    case auto
    /// Send them; an app that raises on them fails startup.
    case on
    /// Do not send them.
    case off
}

struct ASGIConfiguration: Sendable {
    /// `MODULE:APP`, or `MODULE:factory()` to call a factory once per worker.
    var app: String
    var workers: Int
    /// Directories put first on `sys.path`.
    var path: [String] = []
    /// `--root-path`: the scope's `root_path`, and the prefix of `path` and `raw_path`.
    var rootPath = ""
    var lifespan = ASGILifespanMode.auto
    /// An HTTP request still running after this gets 504, and its task is cancelled.
    var timeout: Duration? = .seconds(30)
    /// `--limit-concurrency`: requests and WebSocket connections beyond this many get 503.
    var limitConcurrency: Int?
    /// `--max-requests`: a worker that has started this many requests and WebSocket connections
    /// is replaced by a fresh interpreter (it finishes what it runs first).
    var maxRequests: Int?
    /// Code that keeps its loop from acting on a cancellation (a deadline, the shutdown) for
    /// this long is interrupted.
    var cancelGrace: Duration = .seconds(1)
    /// Code that holds its loop while new events (requests, body, messages) wait for this long
    /// is interrupted. nil: the request timeout (30 s without one), so a request may hold its
    /// loop as long as it may run.
    var loopHoldLimit: Duration?

    var effectiveLoopHoldLimit: Duration { loopHoldLimit ?? timeout ?? .seconds(30) }
    /// How long stopping a worker may take (lifespan shutdown, tasks left cancelled) before
    /// the server stops without it.
    var stopLimit: Duration = .seconds(15)
    /// Called on a worker's thread each time its loop is about to poll (or sleep), with the
    /// worker's index: where the HTTP layer flushes the writes that loop iteration queued.
    var onLoopIteration: (@Sendable (Int) -> Void)?
    /// Where the workers' loops run: isolated interpreters, or this process's main interpreter
    /// (a worker process of `--isolation processes`).
    var interpreterKind = InterpreterKind.isolated
}

/// Requests in flight across every worker: the concurrency limit, and draining at shutdown.
final class ASGILoad: Sendable {
    let limit: Int?
    private let state = Mutex<(active: Int, nextWaiter: Int, drained: [Int: CheckedContinuation<Void, Never>])>((0, 0, [:]))

    init(limit: Int?) { self.limit = limit }

    /// Counts one more, unless the limit is reached.
    func admit() -> Bool {
        state.withLock { state in
            if let limit, state.active >= limit { return false }
            state.active += 1
            return true
        }
    }

    func ended() {
        let waiting = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.active -= 1
            guard state.active == 0 else { return [] }
            defer { state.drained = [:] }
            return Array(state.drained.values)
        }
        for continuation in waiting { continuation.resume() }
    }

    var active: Int { state.withLock { $0.active } }

    /// Returns once nothing is in flight, or when the task is cancelled.
    func drained() async {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.active == 0 || Task.isCancelled { return true }
                    state.drained[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.drained.removeValue(forKey: id) }?.resume()
        }
    }
}

/// An ASGI app loaded in a set of worker interpreters, each running one event loop: where the
/// HTTP layer starts requests and WebSocket connections.
///
/// ```swift
/// let app = try await ASGIApplication(configuration: ..., runtime: runtime, logger: logger)
/// let exchange = app.startHTTP(head, body: firstBytes, more: false, sink: connectionSink)
/// // the sink gets respond(...) calls, then finished(...)
/// await app.shutdown(grace: .seconds(30))
/// ```
///
/// Each worker has a slot. A worker is replaced in its slot by a fresh interpreter after
/// `maxRequests`, or when its loop ends on its own (the app stopped it, or it failed): the old
/// one serves until the fresh one has loaded the app and run lifespan startup, then takes no
/// new request, finishes what it runs, and ends.
final class ASGIApplication: Sendable {
    let configuration: ASGIConfiguration
    let load: ASGILoad
    let logger: Logger
    private let runtime: PythonRuntime
    private let watchdog: ASGIWatchdog
    private let accepting = Atomic<Bool>(true)
    private let nextID = Atomic<UInt64>(1)

    private struct Workers {
        /// The worker that takes new requests, per slot.
        var slots: [ASGIWorker]
        /// Replaced workers finishing what they run.
        var retiring: [ASGIWorker] = []
        /// Slots whose fresh worker is starting.
        var replacing: Set<Int> = []
        /// Replacements in progress; awaited at shutdown.
        var tasks: [Int: Task<Void, Never>] = [:]
        var nextTask = 0
        var stopping = false

        var live: [ASGIWorker] { slots + retiring }
    }
    private let state: Mutex<Workers>

    /// The workers that take new requests (one per slot).
    var workers: [ASGIWorker] { state.withLock { $0.slots } }

    /// Starts the workers; each loads the app and runs lifespan startup. Fails (and ends the
    /// workers already started) if any worker cannot.
    init(configuration: ASGIConfiguration, runtime: PythonRuntime, logger: Logger) async throws {
        guard configuration.workers >= 1 else {
            throw SubinterpreterError(.invalidArgument, "--workers must be at least 1")
        }
        if let limit = configuration.limitConcurrency, limit < 1 {
            throw SubinterpreterError(.invalidArgument, "--limit-concurrency must be at least 1")
        }
        if let limit = configuration.maxRequests, limit < 1 {
            throw SubinterpreterError(.invalidArgument, "--max-requests must be at least 1")
        }
        self.configuration = configuration
        self.logger = logger
        self.runtime = runtime
        let load = ASGILoad(limit: configuration.limitConcurrency)
        self.load = load
        let holdLimit = configuration.effectiveLoopHoldLimit
        let tick = min(Duration.milliseconds(100), configuration.cancelGrace / 2, holdLimit / 4, (configuration.timeout ?? .seconds(1)) / 4)
        let watchdog = ASGIWatchdog(tick: max(tick, .milliseconds(5)), cancelGrace: configuration.cancelGrace, holdLimit: holdLimit)
        self.watchdog = watchdog
        // Filled once the workers have started: until then no worker can report to it.
        let ended = ASGIWorkerEnded()
        let results = await withTaskGroup(of: (Int, Result<ASGIWorker, any Error>).self) { group in
            for index in 0..<configuration.workers {
                group.addTask {
                    do {
                        return (index, .success(try await ASGIWorker.start(
                            index: index, configuration: configuration, runtime: runtime, logger: logger, load: load, watchdog: watchdog,
                            onLoopEnded: ended.report)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var results: [(Int, Result<ASGIWorker, any Error>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var started: [ASGIWorker] = []
        var failure: (any Error)?
        for result in results {
            switch result {
            case .success(let worker): started.append(worker)
            case .failure(let error): failure = failure ?? error
            }
        }
        if let error = failure {
            await withTaskGroup(of: Void.self) { group in
                for worker in started { group.addTask { await worker.stop(limit: configuration.stopLimit) } }
            }
            watchdog.stop()
            if let error = error as? SubinterpreterError, error.code == .pythonException || error.code == .incompatibleExtensionModule {
                throw AppLoadError.wrap(app: configuration.app, error)
            }
            throw error
        }
        state = Mutex(Workers(slots: started))
        watchdog.watch(started)
        ended.connect(self)
    }

    /// Starts an HTTP request on the least busy worker. `body` is what arrived with the head
    /// (`more`: the rest follows, through `ASGIExchange.body` when the sink is asked). Returns
    /// nil, after telling the sink `failed(status: 503)`, beyond `--limit-concurrency`, while
    /// stopping, or if no worker serves.
    func startHTTP(_ head: ASGIRequestHead, body: UnsafeRawBufferPointer, more: Bool, sink: any ASGIHTTPSink) -> ASGIExchange? {
        start(head, kind: CPY_ASGI_HTTP, body: body, more: more, sink: .http(sink), deadline: configuration.timeout.map { .now + $0 })
    }

    /// Starts a WebSocket connection (its handshake head) on the least busy worker; as
    /// `startHTTP`. It has no deadline: it lasts as long as the app and the client keep it.
    func startWebSocket(_ head: ASGIRequestHead, sink: any ASGIWebSocketSink) -> ASGIExchange? {
        start(head, kind: CPY_ASGI_WEBSOCKET, body: UnsafeRawBufferPointer(start: nil, count: 0), more: false, sink: .webSocket(sink), deadline: nil)
    }

    private func start(
        _ head: ASGIRequestHead, kind: Int32, body: UnsafeRawBufferPointer, more: Bool, sink: ASGIExchange.Sink,
        deadline: ContinuousClock.Instant?
    ) -> ASGIExchange? {
        func refuse() -> ASGIExchange? {
            switch sink {
            case .http(let sink): sink.finished(.failed(status: 503))
            case .webSocket(let sink): sink.finished(.failed(status: 503))
            }
            return nil
        }
        guard accepting.load(ordering: .acquiring), load.admit() else { return refuse() }
        guard let worker = leastBusyWorker(), let stream = cpy_asgi_stream_create() else {
            load.ended()
            return refuse()
        }
        let exchange = ASGIExchange(
            id: nextID.add(1, ordering: .relaxed).oldValue, sink: sink, worker: worker, target: head.target, deadline: deadline,
            stream: ASGIExchange.Stream(pointer: stream))
        switch sink {
        case .http(let sink): sink.started(exchange)
        case .webSocket(let sink): sink.started(exchange)
        }
        worker.begin(exchange)
        let posted = head.bytes.withUnsafeBytes { encoded in
            worker.mailbox.post(
                kind, flags: more ? CPY_ASGI_MORE : 0, stream: stream, exchange: Unmanaged.passRetained(exchange).toOpaque(),
                head: encoded, payload: body)
        }
        if !posted { exchange.end(.failed(status: 503)) }
        if let limit = configuration.maxRequests, worker.served.add(1, ordering: .relaxed).newValue == limit {
            replace(worker, reason: "it started \(limit) requests (--max-requests)")
        }
        return posted ? exchange : nil
    }

    private func leastBusyWorker() -> ASGIWorker? {
        state.withLock { state in
            var best: ASGIWorker?
            var bestLoad = Int.max
            for worker in state.slots where worker.isServing {
                let load = worker.active.load(ordering: .relaxed)
                if load < bestLoad {
                    best = worker
                    bestLoad = load
                }
            }
            return best
        }
    }

    // MARK: - Replacing workers

    /// Starts a fresh worker for `old`'s slot; `old` serves until it is ready, then finishes
    /// what it runs and ends. Nothing happens if `old` has left its slot or is being replaced.
    func replace(_ old: ASGIWorker, reason: String) {
        let begin = state.withLock { state -> Bool in
            guard !state.stopping, state.slots.indices.contains(old.index), state.slots[old.index] === old,
                !state.replacing.contains(old.index)
            else { return false }
            state.replacing.insert(old.index)
            return true
        }
        guard begin else { return }
        logger.info("replacing a worker with a fresh interpreter", metadata: ["worker": "\(old.index)", "reason": "\(reason)"])
        // Tracked and awaited by `shutdown`: a replacement outlives the request that asked for it.
        state.withLock { state in
            let id = state.nextTask
            state.nextTask += 1
            state.tasks[id] = Task {
                await self.runReplacement(of: old)
                _ = self.state.withLock { $0.tasks.removeValue(forKey: id) }
            }
        }
    }

    private func runReplacement(of old: ASGIWorker) async {
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled {
            let fresh: ASGIWorker
            do {
                fresh = try await ASGIWorker.start(
                    index: old.index, configuration: configuration, runtime: runtime, logger: logger, load: load, watchdog: watchdog,
                    onLoopEnded: { [weak self] worker in self?.replace(worker, reason: "its event loop ended") })
            } catch {
                logger.error(
                    "could not start a fresh worker; the old one stays in its place, trying again in \(delay)",
                    metadata: ["worker": "\(old.index)", "error": "\((error as? SubinterpreterError)?.message ?? "\(error)")"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(30))
                continue
            }
            let installed = state.withLock { state -> Bool in
                state.replacing.remove(old.index)
                guard !state.stopping else { return false }
                state.slots[old.index] = fresh
                state.retiring.append(old)
                return true
            }
            guard installed else {
                await fresh.stop(limit: configuration.stopLimit)
                return
            }
            watchdog.watch(state.withLock { $0.live })
            // What the old worker runs finishes there; at shutdown, `shutdown` ends it instead.
            guard await old.drained() else { return }
            await old.stop(limit: configuration.stopLimit)
            let live = state.withLock { state -> [ASGIWorker] in
                state.retiring.removeAll { $0 === old }
                return state.live
            }
            watchdog.watch(live)
            return
        }
        _ = state.withLock { $0.replacing.remove(old.index) }
    }

    // MARK: - Shutdown

    /// Stops taking requests, lets those in flight finish for up to `grace` (the rest get 503
    /// and their tasks are cancelled), runs lifespan shutdown in every worker, and ends them.
    func shutdown(grace: Duration) async {
        accepting.store(false, ordering: .releasing)
        let load = self.load
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await load.drained() }
            group.addTask { try? await Task.sleep(for: grace) }
            await group.next()
            group.cancelAll()
        }
        let tasks = state.withLock { state -> [Task<Void, Never>] in
            state.stopping = true
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        let live = state.withLock { $0.live }
        for worker in live {
            for exchange in worker.runningExchanges { exchange.abandon(status: 503) }
        }
        await withTaskGroup(of: Void.self) { group in
            let limit = configuration.stopLimit
            for worker in live { group.addTask { await worker.stop(limit: limit) } }
        }
        watchdog.stop()
    }
}

/// Where the first workers report a loop that ended on its own: to their application, once it
/// exists (they start before it does).
final class ASGIWorkerEnded: Sendable {
    private struct Reference {
        // Weak: the application holds its workers, which hold this.
        weak var application: ASGIApplication?
    }
    private let reference = Mutex(Reference())

    func connect(_ application: ASGIApplication) {
        reference.withLock { $0.application = application }
    }

    @Sendable func report(_ worker: ASGIWorker) {
        reference.withLock { $0.application }?.replace(worker, reason: "its event loop ended")
    }
}
