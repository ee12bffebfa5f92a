import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Subinterpreters
import Synchronization

/// What `subinterp serve` is when worker processes serve the app (`--processes M`,
/// `--isolation processes`, `--max-memory`, or `--isolation auto` after a refusal). It runs no
/// Python: it holds the listening sockets (bound before it starts), spawns the worker processes
/// (`serve-worker`, which inherit them), and keeps `processes` of them serving:
///
/// - **A worker process that dies** (a crash, `os._exit`, the OOM killer) is replaced at once;
///   only its own connections are lost. Deaths soon after a start back off exponentially; a
///   worker process that keeps failing to start stops the server with one line.
/// - **Recycling** (`--max-requests` in processes isolation, `--max-memory`): the worker asks
///   (`retire`); a replacement starts, and once it is ready the old one drains and exits.
/// - **SIGHUP** (`reload()`) replaces the worker processes one after another the same way, so
///   there are always `processes` of them accepting. **SIGTERM/SIGINT** (graceful shutdown)
///   drains them all; `run()` then returns.
/// - **Metrics**: its own endpoint sums the counters its worker processes report, and gives
///   each process's series with the label `process`.
package final class Supervisor: Service, Sendable {
    /// Back-off and limits of replacing worker processes.
    package struct Policy: Sendable {
        /// A worker process that dies within this long of being ready counts as dying soon.
        package var stableAfter: Duration = .seconds(5)
        /// The wait before the second replacement in a row of processes that died soon; it
        /// doubles with each further one, up to `maximumDelay`. The first is replaced at once.
        package var firstDelay: Duration = .milliseconds(100)
        package var maximumDelay: Duration = .seconds(5)
        /// Worker processes that fail to start (exit before they are ready) this many times in a
        /// row stop the server.
        package var startFailureLimit = 5

        package init() {}
    }

    private enum Event: Sendable {
        case message(Int, ControlMessage)
        case exited(Int, ExitStatus)
        case respawn(slot: Int)
        case reload
        case shutdown
        case killStragglers
    }

    private let initialSettings: ServeSettings
    private let sockets: ServerSockets
    private let executable: String
    private let argv0: String
    private let policy: Policy
    private let logger: Logger
    private let announce: @Sendable (String) -> Void
    private let group: MultiThreadedEventLoopGroup
    private let events: AsyncStream<Event>
    private let post: AsyncStream<Event>.Continuation
    private let metricsServer: HTTPServer
    let registry = SupervisedProcesses()

    /// `executable` is this program (`/proc/self/exe`), started as `argv0 serve-worker`.
    /// `announce` gets the readiness line once every worker process is ready.
    package init(
        settings: ServeSettings, sockets: ServerSockets, executable: String = "/proc/self/exe", argv0: String,
        policy: Policy = Policy(), logger: Logger, announce: @escaping @Sendable (String) -> Void
    ) {
        self.initialSettings = settings
        self.sockets = sockets
        self.executable = executable
        self.argv0 = argv0
        self.policy = policy
        self.logger = logger
        self.announce = announce
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        (events, post) = AsyncStream<Event>.makeStream()
        metricsServer = HTTPServer(group: group, maxConnections: 64)
    }

    /// Replaces every worker process, one after another (SIGHUP).
    package func reload() {
        post.yield(.reload)
    }

    /// `Service`: starts the worker processes and supervises them until graceful shutdown;
    /// throws (with one line) if the app cannot be served.
    package func run() async throws {
        var metricsURL: String?
        if let socket = sockets.metrics {
            let context = HTTPServerContext(
                application: SupervisorMetrics(registry: registry), limits: HTTPLimits(), bodyBudget: HTTPBodyBudget(limit: 1 << 20),
                logger: logger)
            let address = AppServer.Address(socket, try await metricsServer.adopt(socket, context: context, backlog: 64))
            metricsURL = "\(address.url)/metrics" + (address.allInterfaces ? " (all interfaces)" : "")
            metricsServer.startAccepting()
        }
        defer { post.finish() }
        do {
            try await withGracefulShutdownHandler {
                var loop = Loop(supervisor: self, settings: initialSettings, metricsURL: metricsURL)
                try await loop.run(events)
            } onGracefulShutdown: { [post] in
                post.yield(.shutdown)
            }
        } catch {
            await finish()
            throw error
        }
        await finish()
    }

    private func finish() async {
        await metricsServer.closeListeners()
        await metricsServer.drain(until: .now())
        try? await group.shutdownGracefully()
    }

    // MARK: - Starting a worker process

    private static let nextID = Atomic<Int>(1)

    /// Spawns a worker process for `slot` with `settings`; its messages and its end come back
    /// as events.
    fileprivate func spawn(slot: Int, settings: ServeSettings) async throws -> SupervisedProcess {
        let id = Self.nextID.add(1, ordering: .relaxed).oldValue
        let (ours, theirs) = try ProcessSpawner.socketPair()
        // The child's descriptors: 3, 4, … the app's sockets, then the control channel.
        let numbers = (0..<sockets.app.count).map { CInt(3 + $0) }
        let controlNumber = CInt(3 + sockets.app.count)
        var environment = ProcessInfo.processInfo.environment
        environment[ServeSettings.environmentVariable] = settings.encoded()
        environment[ServerSockets.environmentVariable] = ServerSockets(app: sockets.app, metrics: nil)
            .environmentValue(numbers: numbers, includingMetrics: false)
        environment[WorkerProcess.controlVariable] = String(controlNumber)
        environment[WorkerProcess.indexVariable] = String(slot)
        // A worker process that crashes (usually in an extension module) dies at once, and the
        // supervisor says so in one line; Swift's backtracer would print pages and take seconds.
        // PYTHONFAULTHANDLER=1 gives the Python traceback instead.
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        let pid: pid_t
        do {
            pid = try ProcessSpawner.spawn(
                executable: executable, arguments: [argv0, "serve-worker"], environment: environment,
                descriptors: zip(sockets.app, numbers).map { (from: $0.0.descriptor, to: $0.1) } + [(from: theirs, to: controlNumber)])
        } catch {
            close(ours)
            close(theirs)
            throw error
        }
        close(theirs)
        let post = self.post
        let process = SupervisedProcess(id: id, slot: slot, pid: pid) { status in post.yield(.exited(id, status)) }
        let loop = group.next()
        ProcessSpawner.watch(pid) { [process] status in process.exited(status, on: loop) }
        do {
            let channel = try await ControlChannel.open(
                ours, on: group,
                onMessage: { [weak process] message in
                    if case .stats(let stats) = message {
                        process?.received(stats)
                    } else {
                        post.yield(.message(id, message))
                    }
                },
                onClose: { [weak process] in process?.controlClosed() })
            process.attach(channel)
        } catch {
            // The process starts without a channel; it exits when it finds none, and its end
            // comes back as an event like any other.
            close(ours)
            process.controlClosed()
            kill(pid, SIGKILL)
        }
        return process
    }

    // MARK: - The supervision loop

    /// The supervisor's state, changed only by the events it handles, one at a time.
    private struct Loop {
        enum Phase { case starting, serving, stopping }
        enum Purpose: Equatable {
            /// Serves `slot` when the server starts (or after the fallback to processes).
            case initial
            /// Replaces the slot's process that died.
            case respawn
            /// Replaces a live process (`retire`, SIGHUP); it drains once this one is ready.
            case replacing(old: Int)
        }
        struct Record {
            let process: SupervisedProcess
            var purpose: Purpose
            var ready = false
            var draining = false
            var readyAt: ContinuousClock.Instant?
            /// Part of the SIGHUP sequence.
            var reloading = false
        }

        let supervisor: Supervisor
        var settings: ServeSettings
        let metricsURL: String?
        var phase = Phase.starting
        var records: [Int: Record] = [:]
        /// The process serving each slot.
        var current: [Int?]
        /// The slots the SIGHUP sequence still has to replace, and whether another SIGHUP came.
        var reloadQueue: [Int] = []
        var reloadAgain = false
        var failedStarts = 0
        /// Why the last worker process that could not load the app said so.
        var lastFailure: String?
        var soonDeaths = 0
        var fellBack = false
        var interface = "wsgi"

        init(supervisor: Supervisor, settings: ServeSettings, metricsURL: String?) {
            self.supervisor = supervisor
            self.settings = settings
            self.metricsURL = metricsURL
            self.current = Array(repeating: nil, count: settings.processes)
        }

        var logger: Logger { supervisor.logger }

        mutating func run(_ events: AsyncStream<Event>) async throws {
            supervisor.registry.reset(slots: settings.processes)
            for slot in 0..<settings.processes { try await start(slot: slot, purpose: .initial) }
            for await event in events {
                try await handle(event)
                if phase == .stopping && records.isEmpty { return }
            }
        }

        mutating func start(slot: Int, purpose: Purpose, reloading: Bool = false) async throws {
            let process = try await supervisor.spawn(slot: slot, settings: settings)
            records[process.id] = Record(process: process, purpose: purpose, reloading: reloading)
            supervisor.registry.add(process)
            logger.debug("started worker process \(slot) (pid \(process.pid))")
        }

        mutating func handle(_ event: Event) async throws {
            switch event {
            case .message(let id, let message):
                guard records[id] != nil else { return }
                try await received(message, from: id)
            case .exited(let id, let status):
                guard let record = records.removeValue(forKey: id) else { return }
                supervisor.registry.remove(record.process)
                try await exited(record, status)
            case .respawn(let slot):
                guard phase != .stopping, current[slot] == nil,
                    !records.values.contains(where: { $0.process.slot == slot && !$0.draining })
                else { return }
                do {
                    try await start(slot: slot, purpose: .respawn)
                } catch {
                    // Out of processes or memory, say: try again later, like a process that died.
                    logger.error("\(error)")
                    soonDeaths += 1
                    scheduleRespawn(slot: slot)
                }
            case .reload:
                guard phase == .serving else { return }
                if !reloadQueue.isEmpty || records.values.contains(where: \.reloading) {
                    reloadAgain = true
                    return
                }
                logger.info("replacing the worker processes one after another (SIGHUP)")
                reloadQueue = Array(0..<settings.processes)
                try await reloadNext()
            case .shutdown:
                guard phase != .stopping else { return }
                phase = .stopping
                // Once the worker processes close theirs too, the port is closed: new clients
                // are refused at once instead of waiting in a backlog nobody accepts from.
                supervisor.sockets.app.forEach { $0.close() }
                for record in records.values { kill(record.process.pid, SIGTERM) }
                let grace = settings.server.gracePeriod + .seconds(5)
                let post = supervisor.post
                supervisor.group.next().scheduleTask(in: .nanoseconds(Int64(grace.components.seconds) * 1_000_000_000)) {
                    post.yield(.killStragglers)
                }
            case .killStragglers:
                for record in records.values {
                    logger.warning("worker process \(record.process.slot) (pid \(record.process.pid)) did not stop in time; killing it")
                    kill(record.process.pid, SIGKILL)
                }
            }
        }

        mutating func received(_ message: ControlMessage, from id: Int) async throws {
            guard var record = records[id] else { return }
            let process = record.process
            // A process that is on its way out (ended after the fallback, say) has nothing left
            // to say about loading the app.
            if record.draining, case .refused = message { return }
            if record.draining, case .failed = message { return }
            switch message {
            case .ready(let ready):
                record.ready = true
                record.readyAt = .now
                interface = ready.interface
                records[id] = record
                failedStarts = 0
                if phase == .stopping {
                    kill(process.pid, SIGTERM)
                    return
                }
                if case .replacing(let old) = record.purpose, var replaced = records[old] {
                    replaced.draining = true
                    records[old] = replaced
                    replaced.process.send(.drain)
                }
                current[process.slot] = id
                if phase == .starting {
                    logger.debug("worker process \(process.slot) ready (pid \(process.pid))")
                    if current.allSatisfy({ $0.flatMap { records[$0]?.ready } == true }) { announceReady() }
                } else {
                    logger.info("worker process \(process.slot) is serving (pid \(process.pid))")
                }
                if record.reloading { try await reloadNext() }
            case .refused(let module, let reason):
                if settings.isolation == .auto && !fellBack {
                    try await fallBack(module: module)
                } else {
                    try await failed(record, message: reason)
                }
            case .failed(let reason):
                try await failed(record, message: reason)
            case .retire(let reason):
                guard phase == .serving, !record.draining,
                    !records.values.contains(where: { $0.purpose == .replacing(old: id) })
                else { return }
                logger.info("worker process \(process.slot) (pid \(process.pid)) \(reason); replacing it")
                try await start(slot: process.slot, purpose: .replacing(old: id))
            case .stats, .statsRequest, .drain:
                break
            }
        }

        /// A worker process could not load the app: at startup that stops the server; for a
        /// replacement, the old process serves on.
        mutating func failed(_ record: Record, message: String) async throws {
            lastFailure = message
            switch (phase, record.purpose) {
            case (.starting, _):
                stopAll()
                throw SubinterpreterError(.invalidArgument, message)
            case (_, .replacing):
                let what = record.reloading ? "reload failed" : "could not replace worker process \(record.process.slot)"
                logger.error("\(what): \(message); the old worker processes serve on")
                records[record.process.id]?.draining = true  // it exits now; nothing to replace
                reloadQueue = []
                reloadAgain = false
                for (id, other) in records where other.reloading { records[id]?.reloading = false }
            default:
                logger.error("worker process \(record.process.slot) could not load the app: \(message)")
            }
        }

        /// `--isolation auto` and an extension module refused: one warning, then every worker
        /// again, as processes.
        mutating func fallBack(module: String) async throws {
            fellBack = true
            let fallback = settings.fallingBackToProcesses()
            logger.warning(
                "\(Supervisor.fallbackWarning(app: settings.server.app, module: module, processes: fallback.processes))")
            stopAll()
            settings = fallback
            current = Array(repeating: nil, count: settings.processes)
            supervisor.registry.reset(slots: settings.processes)
            for slot in 0..<settings.processes { try await start(slot: slot, purpose: .initial) }
        }

        /// Ends every worker process now (none serves yet, or the server cannot go on).
        mutating func stopAll() {
            for (id, record) in records {
                kill(record.process.pid, SIGKILL)
                records[id]?.draining = true
            }
        }

        mutating func exited(_ record: Record, _ status: ExitStatus) async throws {
            let process = record.process
            if current[process.slot] == process.id { current[process.slot] = nil }
            supervisor.registry.retire(process)
            if phase == .stopping || record.draining {
                logger.debug("worker process \(process.slot) (pid \(process.pid)) \(status)")
                return
            }
            if !record.ready {
                // It never served. A replacement's old process serves on: that is no crash loop.
                if case .replacing(let old) = record.purpose, records[old] != nil {
                    logger.error("the replacement for worker process \(process.slot) \(status) before it was ready; the old one serves on")
                    if record.reloading {
                        reloadQueue = []
                        reloadAgain = false
                    }
                    return
                }
                failedStarts += 1
                if failedStarts >= supervisor.policy.startFailureLimit {
                    stopAll()
                    let reason = lastFailure.map { "the last said: \($0)" } ?? "the last \(status)"
                    throw SubinterpreterError(
                        .runtimeFailed, "worker processes keep failing to start (\(failedStarts) in a row; \(reason)); stopping")
                }
                logger.error("worker process \(process.slot) (pid \(process.pid)) \(status) before it was ready; starting another")
            } else {
                logger.error("worker process \(process.slot) (pid \(process.pid)) \(status); starting another")
            }
            let soon = record.readyAt.map { ContinuousClock.now - $0 < supervisor.policy.stableAfter } ?? true
            soonDeaths = soon ? soonDeaths + 1 : 0
            scheduleRespawn(slot: process.slot)
        }

        /// Replaces the slot's process: at once the first time, later with a delay that doubles
        /// with each process in a row that died soon after starting.
        func scheduleRespawn(slot: Int) {
            let post = supervisor.post
            guard soonDeaths > 1 else {
                post.yield(.respawn(slot: slot))
                return
            }
            let policy = supervisor.policy
            var delay = policy.firstDelay
            for _ in 2..<soonDeaths where delay < policy.maximumDelay { delay *= 2 }
            delay = min(delay, policy.maximumDelay)
            let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
            logger.warning("worker processes keep dying soon after they start; waiting \(delay) before the next")
            supervisor.group.next().scheduleTask(in: .nanoseconds(nanoseconds)) { post.yield(.respawn(slot: slot)) }
        }

        mutating func reloadNext() async throws {
            for (id, record) in records where record.reloading && record.ready { records[id]?.reloading = false }
            guard !reloadQueue.isEmpty else {
                if reloadAgain {
                    reloadAgain = false
                    reloadQueue = Array(0..<settings.processes)
                } else {
                    logger.info("every worker process was replaced")
                    return
                }
                return try await reloadNext()
            }
            let slot = reloadQueue.removeFirst()
            guard let old = current[slot] else { return try await reloadNext() }
            try await start(slot: slot, purpose: .replacing(old: old), reloading: true)
        }

        mutating func announceReady() {
            phase = .serving
            let addresses = supervisor.sockets.app
                .map { AppServer.Address(host: $0.local.ipAddress ?? $0.address.host, port: $0.local.port ?? $0.address.port,
                    allInterfaces: $0.address.allInterfaces).description }
                .joined(separator: ", ")
            var line = "subinterp: serving \(settings.server.app) on \(addresses) with \(settings.describeWorkers(interface: interface))"
            if let metricsURL { line += "; metrics on \(metricsURL)" }
            supervisor.announce(line)
        }
    }
}

/// A worker process as its supervisor sees it: its control channel and its last counters.
final class SupervisedProcess: Sendable {
    let id: Int
    let slot: Int
    let pid: pid_t
    private struct State {
        var channel: ControlChannel?
        var pending: [EventLoopPromise<WorkerStats?>] = []
        var last: WorkerStats?
        var closed = false
        /// From `waitpid`, until the end is reported.
        var status: ExitStatus?
        var reported = false
    }
    private let state = Mutex(State())
    private let ended: @Sendable (ExitStatus) -> Void

    /// `ended` gets the process's exit status once, after every message it sent before it
    /// exited has been delivered (see `exited`).
    init(id: Int, slot: Int, pid: pid_t, ended: @escaping @Sendable (ExitStatus) -> Void) {
        self.id = id
        self.slot = slot
        self.pid = pid
        self.ended = ended
    }

    /// The process has exited (`waitpid` returned). Its end is reported once its control
    /// channel has closed too: the exit and the lines it wrote just before (`failed` with the
    /// reason, its final counters) reach the supervisor on different threads, and the lines
    /// must be handled first. The channel closes when the last holder of the other end goes; a
    /// child the app forked may still hold it, so the end is reported after `grace` regardless.
    func exited(_ status: ExitStatus, on loop: any EventLoop, grace: TimeAmount = .seconds(2)) {
        let closed = state.withLock { state -> Bool in
            state.status = status
            return state.closed
        }
        if closed {
            reportEnd()
        } else {
            loop.scheduleTask(in: grace) { [self] in reportEnd() }
        }
    }

    private func reportEnd() {
        let status = state.withLock { state -> ExitStatus? in
            guard let status = state.status, !state.reported else { return nil }
            state.reported = true
            return status
        }
        if let status { ended(status) }
    }

    func attach(_ channel: ControlChannel) {
        state.withLock { $0.channel = channel }
    }

    func send(_ message: ControlMessage) {
        state.withLock { $0.channel }?.send(message)
    }

    /// The counters the process reported last (at its end, its final ones).
    var lastStats: WorkerStats? { state.withLock { $0.last } }

    /// Asks for fresh counters; the future gives them, or the last ones if the process cannot
    /// answer (it is gone, or busy past `limit`).
    func requestStats(on eventLoop: any EventLoop, limit: TimeAmount) -> EventLoopFuture<WorkerStats?> {
        let promise = eventLoop.makePromise(of: WorkerStats?.self)
        let channel = state.withLock { state -> ControlChannel? in
            guard !state.closed, let channel = state.channel else { return nil }
            state.pending.append(promise)
            return channel
        }
        guard let channel else {
            promise.succeed(lastStats)
            return promise.futureResult
        }
        channel.send(.statsRequest)
        eventLoop.scheduleTask(in: limit) { [weak self] in
            let late = self?.state.withLock { state -> Bool in
                guard let index = state.pending.firstIndex(where: { $0.futureResult === promise.futureResult }) else { return false }
                state.pending.remove(at: index)
                return true
            } ?? false
            if late { promise.succeed(self?.lastStats) }
        }
        return promise.futureResult
    }

    func received(_ stats: WorkerStats) {
        let waiter = state.withLock { state -> EventLoopPromise<WorkerStats?>? in
            state.last = stats
            return state.pending.isEmpty ? nil : state.pending.removeFirst()
        }
        waiter?.succeed(stats)
    }

    func controlClosed() {
        let waiters = state.withLock { state -> [EventLoopPromise<WorkerStats?>] in
            state.closed = true
            defer { state.pending = [] }
            return state.pending
        }
        let last = lastStats
        for waiter in waiters { waiter.succeed(last) }
        reportEnd()  // if the process has exited already
    }
}

/// The worker processes alive now, and each slot's counters from the processes that served it
/// before: what the supervisor's metrics endpoint reads.
final class SupervisedProcesses: Sendable {
    private struct Slot {
        var base = MetricsSnapshot()
        var restarts = 0
        var started = 0
    }
    private struct State {
        var slots: [Slot] = []
        var live: [Int: SupervisedProcess] = [:]
    }
    private let state = Mutex(State())

    func reset(slots: Int) {
        state.withLock { $0.slots = Array(repeating: Slot(), count: slots) }
    }

    func add(_ process: SupervisedProcess) {
        state.withLock { state in
            state.live[process.id] = process
            guard process.slot < state.slots.count else { return }
            state.slots[process.slot].started += 1
            state.slots[process.slot].restarts = state.slots[process.slot].started - 1
        }
    }

    func remove(_ process: SupervisedProcess) {
        _ = state.withLock { $0.live.removeValue(forKey: process.id) }
    }

    /// The process ended: its last counters stay in its slot's totals.
    func retire(_ process: SupervisedProcess) {
        guard let last = process.lastStats else { return }
        state.withLock { state in
            guard process.slot < state.slots.count else { return }
            state.slots[process.slot].base.add(last.metrics)
        }
    }

    var snapshot: (slots: [(base: MetricsSnapshot, restarts: Int)], live: [SupervisedProcess]) {
        state.withLock { state in
            (state.slots.map { ($0.base, $0.restarts) }, state.live.values.sorted { $0.id < $1.id })
        }
    }
}

/// The supervisor's metrics endpoint: asks every worker process for its counters, then
/// answers with their sums and each process's series.
struct SupervisorMetrics: HTTPApplication {
    let registry: SupervisedProcesses

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange) {
        let (slots, live) = registry.snapshot
        let eventLoop = exchange.eventLoop
        let answers = live.map { process in
            process.requestStats(on: eventLoop, limit: .seconds(2)).map { (process, $0) }
        }
        EventLoopFuture.whenAllComplete(answers, on: eventLoop).whenSuccess { results in
            var series = slots.enumerated().map { slot, info in
                ProcessSeries(
                    process: slot, snapshot: info.base, busyWorkers: 0, queued: 0, workers: 0, residentBytes: nil,
                    restarts: info.restarts)
            }
            for case .success(let (process, stats)) in results {
                guard process.slot < series.count, let stats else { continue }
                series[process.slot].snapshot.add(stats.metrics)
                series[process.slot].busyWorkers += stats.busyWorkers
                series[process.slot].queued += stats.queued
                series[process.slot].workers = max(series[process.slot].workers, stats.workers)
                series[process.slot].residentBytes = (series[process.slot].residentBytes ?? 0) + (stats.residentBytes ?? 0)
            }
            var total = MetricsSnapshot()
            for item in series { total.add(item.snapshot) }
            let text = MetricsExposition.text(
                total: total, busyWorkers: series.reduce(0) { $0 + $1.busyWorkers }, queued: series.reduce(0) { $0 + $1.queued },
                workers: series.reduce(0) { $0 + $1.workers }, processes: series)
            MetricsApplication.answer(exchange, text)
        }
    }
}

extension Supervisor {
    /// The one warning line of `--isolation auto` when it falls back to processes.
    package static func fallbackWarning(app: String, module: String, processes: Int) -> String {
        "\(app) cannot run in a sub-interpreter (extension module '\(module)' does not support them); serving it in "
            + "\(processes) worker process\(processes == 1 ? "" : "es") instead (--isolation processes: each holds its own "
            + "Python and copy of the app, so more memory than interpreters, and a WSGI app serves one request at a time in each)"
    }

    /// Replaces this process with a supervisor of worker processes for `settings` (an `exec` of
    /// this executable as `serve-supervisor`): its Python, threads and memory go, `sockets` stay
    /// bound and open, so connections wait in their backlog meanwhile. Returns only by throwing.
    package static func exec(settings: ServeSettings, sockets: ServerSockets, argv0: String, executable: String = "/proc/self/exe") throws {
        sockets.inheritAcrossExec()
        var environment = ProcessInfo.processInfo.environment
        environment[ServeSettings.environmentVariable] = settings.encoded()
        environment[ServerSockets.environmentVariable] = sockets.environmentValue(
            numbers: sockets.all.map(\.descriptor), includingMetrics: true)
        // The mask and ignored signals survive exec; the supervisor starts from the defaults.
        var empty = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, nil)
        for signal in [SIGHUP, SIGINT, SIGTERM] { Glibc.signal(signal, SIG_DFL) }
        let argv: [UnsafeMutablePointer<CChar>?] = ([argv0, "serve-supervisor"] as [String]).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        execve(executable, argv, envp)
        let reason = String(cString: strerror(errno))
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
        throw SubinterpreterError(.runtimeFailed, "cannot start worker processes (exec \(executable)): \(reason)")
    }
}
