import BigInt
import CPython
import Foundation
import Logging
import Synchronization

/// Supplies work to process workers whose own queue is empty: the pool's shared queue.
protocol ProcessWorkFeeder: AnyObject, Sendable {
    /// Called on `worker`'s thread. Returns the next work, or nil after recording the worker as
    /// idle (it then waits on its own queue, where the feeder puts work for it).
    func nextWork(for worker: ProcessWorker) -> ProcessWorker.Work?
}

/// A pool worker that is a child Python process: the pool's `PythonInstallation` running
/// python/subinterp/_process_worker.py, which runs calls by name in its main interpreter, one at
/// a time, so every extension module loads. One thread of this process per worker sends it
/// each call and waits for the answer with blocking reads (the thread has nothing else to do
/// while its child works). Between calls it sleeps in `poll` on its wake-up socket and the
/// child's socket, so it hears of new work and of a child that died while idle at once; its
/// queue works like an `InterpreterThread`'s.
///
/// The child is spawned with `posix_spawn` (never `fork()` of this multithreaded process) with
/// fd 3 a Unix stream socket for requests and answers (a socket rather than two pipes: `send`
/// with `MSG_NOSIGNAL` reports a dead child as an error instead of raising SIGPIPE in the host)
/// and fd 4 a one-way socket (a pipe in effect, created close-on-exec in one call) that names
/// the call to interrupt before `SIGUSR1` is sent. Its stdin is
/// /dev/null; stdout and stderr are the host's, line-buffered.
///
/// A child that dies (a signal, `os._exit`) is replaced at once, on this thread, by a fresh one
/// that runs the setup again; the call it was running fails with `.workerProcessDied`, whose
/// Python type name is the signal's (`SIGSEGV`) or `WorkerExited`. If the fresh one cannot
/// start, the worker reports itself unhealthy and the pool replaces it (with its back-off).
final class ProcessWorker: @unchecked Sendable {
    // Safe: the queue is a Mutex; `channel` is set once on the worker's thread before it
    // reports ready, and read by others only after that; the rest are atomics or constants.
    typealias Work = @Sendable (ProcessChannel) -> Void

    private enum Job {
        case work(Work)
        case end(@Sendable () -> Void)
    }

    private struct Queue {
        var jobs: [Job] = []
        var accepting = true
        var feeder: (any ProcessWorkFeeder)?
        /// The worker's thread is in (or about to enter) `poll`: the next job must wake it.
        var sleeping = false
        /// The wake-up socket pair (read end, write end); -1 once the thread ended.
        var wake: (Int32, Int32)
    }

    private let queue: Mutex<Queue>
    private(set) var channel: ProcessChannel!
    /// The job running now (0 when none), as for `InterpreterThread.currentJob`.
    let currentJob = Atomic<UInt64>(0)

    private init(feeder: (any ProcessWorkFeeder)?) {
        var pair: [Int32] = [-1, -1]
        // Close-on-exec in one call; if it fails, `poll` ignores -1 and submit writes nothing,
        // and the worker falls back to finding work only through its feeder.
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair)
        queue = Mutex(Queue(feeder: feeder, wake: (pair[0], pair[1])))
    }

    /// Starts the worker's thread, which spawns the child and runs its setup; `ready` gets the
    /// worker once the child can take calls, or the error (the setup's, with its traceback).
    static func launch(
        executable: String, options: InterpreterOptions, feeder: (any ProcessWorkFeeder)?, logger: Logger,
        ready: @escaping @Sendable (Result<ProcessWorker, any Error>) -> Void
    ) {
        let owner = ProcessWorker(feeder: feeder)
        let thread = Thread {
            let channel = ProcessChannel(executable: executable, options: options, logger: logger)
            do {
                try channel.spawn()
            } catch {
                channel.shutDown()
                ready(.failure(error))
                return
            }
            owner.channel = channel
            ready(.success(owner))
            owner.main()
        }
        thread.name = "python-process-worker"
        thread.stackSize = 1 << 20
        thread.start()
    }

    static func start(executable: String, options: InterpreterOptions, feeder: (any ProcessWorkFeeder)?, logger: Logger) async throws
        -> ProcessWorker
    {
        try await withCheckedThrowingContinuation { continuation in
            launch(executable: executable, options: options, feeder: feeder, logger: logger) { continuation.resume(with: $0) }
        }
    }

    /// Queues work; false if the worker is closed or closing.
    func submit(_ work: @escaping Work) -> Bool {
        enqueue(.work(work), closing: false)
    }

    /// Stops taking work; the child ends after the work already queued, then `done` runs.
    func close(_ done: @escaping @Sendable () -> Void) -> Bool {
        enqueue(.end(done), closing: true)
    }

    private func enqueue(_ job: Job, closing: Bool) -> Bool {
        queue.withLock { queue in
            guard queue.accepting else { return false }
            if closing {
                queue.accepting = false
                queue.feeder = nil
            }
            queue.jobs.append(job)
            if queue.sleeping {
                queue.sleeping = false
                // Under the lock, so the thread cannot have closed the socket meanwhile. One
                // byte, never blocking: a full socket already holds a wake-up.
                var byte: UInt8 = 1
                _ = Glibc.send(queue.wake.1, &byte, 1, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            return true
        }
    }

    /// Raises `subinterp.CancelledError` in the call running `job` in the child, if it still
    /// runs there: writes the job's id to the interrupt pipe, then sends SIGUSR1. Returns at once.
    func requestInterrupt(job: UInt64) {
        guard currentJob.load(ordering: .acquiring) == job else { return }
        channel.interrupt(job: job)
    }

    /// Kills the child now (SIGKILL) and starts no other: for a worker the pool abandons.
    func kill() {
        channel.kill()
    }

    func endJob() {
        currentJob.store(0, ordering: .releasing)
    }

    /// The next job of this worker's own queue. With `wait`, sleeps in `poll` until one comes,
    /// replacing the child meanwhile if it dies (it writes only in answer to a request, so its
    /// socket turning readable between calls means it is gone).
    private func take(wait: Bool) -> Job? {
        while true {
            let (job, wakeFD) = queue.withLock { queue -> (Job?, Int32) in
                if !queue.jobs.isEmpty { return (queue.jobs.removeFirst(), -1) }
                if wait { queue.sleeping = true }
                return (nil, queue.wake.0)
            }
            if let job { return job }
            guard wait else { return nil }
            var entries = [
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: channel.socket ?? -1, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&entries, 2, -1) > 0 else { continue }  // EINTR
            if entries[0].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                _ = Glibc.recv(wakeFD, &drain, drain.count, Int32(MSG_DONTWAIT))
            }
            if entries[1].revents != 0 { channel.replaceIfDead() }
        }
    }

    private var currentFeeder: (any ProcessWorkFeeder)? {
        queue.withLock { $0.feeder }
    }

    /// The thread ends: nothing may wake it any more.
    private func closeWakeSocket() {
        queue.withLock { queue in
            Glibc.close(queue.wake.0)
            Glibc.close(queue.wake.1)
            queue.wake = (-1, -1)
        }
    }

    private func main() {
        while true {
            var job = take(wait: false)
            if job == nil, let feeder = currentFeeder, let work = feeder.nextWork(for: self) {
                job = .work(work)
            }
            if job == nil { job = take(wait: true) }
            switch job! {
            case .work(let work):
                // A child that died while idle (killed, out of memory) is replaced before the
                // work goes to it, so the work never fails for it.
                channel.replaceIfDead()
                work(channel)
            case .end(let done):
                channel.shutDown()
                closeWakeSocket()
                done()
                return
            }
        }
    }
}

/// The connection to a process worker's child: spawning it, its requests and answers, its
/// interrupts, its death. Requests are sent only from the worker's thread; `interrupt` and
/// `kill` come from any thread and reach only the child that runs now (the pid is used only
/// while that child is not yet reaped, so a signal never reaches a recycled pid).
final class ProcessChannel: @unchecked Sendable {
    // Safe: `child` is guarded by its Mutex, the flags are atomics, the rest is set in init.
    private struct Child {
        var pid: pid_t
        var socket: Int32
        var interrupts: Int32
    }

    let executable: String
    let options: InterpreterOptions
    private let logger: Logger
    private let child = Mutex<Child?>(nil)
    /// Set by `kill`: the child is not replaced any more.
    private let killed = Atomic<Bool>(false)
    /// The job an interrupt was asked for (so a chunk stops instead of going on in a new child).
    private let interrupted = Atomic<UInt64>(0)

    fileprivate init(executable: String, options: InterpreterOptions, logger: Logger) {
        self.executable = executable
        self.options = options
        self.logger = logger
    }

    /// Whether a child runs and can take calls.
    var isHealthy: Bool { child.withLock { $0 != nil } }

    /// The socket of the child that runs now, if any.
    var socket: Int32? { child.withLock { $0?.socket } }

    /// The child's resident memory (/proc/PID/statm), 0 if unknown.
    func residentBytes() -> Int {
        guard let pid = child.withLock({ $0?.pid }) else { return 0 }
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    // MARK: - Calls (on the worker's thread)

    /// Calls `function` in the child.
    func call(_ function: String, _ arguments: [PythonValue], keywords: [(String, PythonValue)], job: UInt64) throws -> PythonValue {
        let request = PythonValue.tuple([
            .int(.init(job)), .string("call"), .string(function), .list(arguments),
            .dict(keywords.map { (PythonValue.string($0.0), $0.1) }),
        ])
        guard let socket = child.withLock({ $0?.socket }) else { throw notRunning() }
        try send(request, on: socket)
        guard let answer = receive(on: socket) else { throw died(while: "running this call") }
        return try Self.outcome(answer).get()
    }

    /// Calls `function` with each input in the child, as one request; the answers come one per
    /// input. If the child dies, the input it was running fails, a fresh child takes its place
    /// and the rest of the inputs go on there, unless the job was interrupted.
    func chunk(_ function: String, _ inputs: [PythonValue], star: Bool, job: UInt64)
        -> (results: [Result<PythonValue, SubinterpreterError>], elapsed: Duration)
    {
        var results: [Result<PythonValue, SubinterpreterError>] = []
        results.reserveCapacity(inputs.count)
        var elapsed = Duration.zero
        while results.count < inputs.count {
            let rest = Array(inputs[results.count...])
            let started = ContinuousClock.now
            guard let socket = child.withLock({ $0?.socket }) else {
                let failure = notRunning()
                results += rest.map { _ in .failure(failure) }
                break
            }
            do {
                try send(.tuple([.int(.init(job)), .string("chunk"), .string(function), .list(rest), .bool(star)]), on: socket)
            } catch {
                let failure = error as? SubinterpreterError ?? SubinterpreterError(.runtimeFailed, "\(error)")
                results += rest.map { _ in .failure(failure) }
                break
            }
            var done = false
            while !done {
                guard let answer = receive(on: socket) else {
                    // The child died running input `results.count`.
                    elapsed += ContinuousClock.now - started
                    results.append(.failure(died(while: "running this input")))
                    if interrupted.load(ordering: .acquiring) == job || killed.load(ordering: .acquiring) {
                        let stopped = SubinterpreterError(.cancelled, "the call was cancelled")
                        results += inputs[results.count...].map { _ in .failure(stopped) }
                    }
                    break
                }
                if case .tuple(let items) = answer, items.count == 3, items[1] == .string("done") {
                    if case .float(let seconds) = items[2] { elapsed += .seconds(seconds) }
                    done = true
                } else {
                    results.append(Self.outcome(answer))
                }
            }
            if done && results.count < inputs.count {
                // Stopped by an interrupt: the rest never ran.
                let stopped = SubinterpreterError(.cancelled, "the call was cancelled")
                results += inputs[results.count...].map { _ in .failure(stopped) }
            }
        }
        return (results, elapsed)
    }

    /// `(id, True, value)` or `(id, False, error)` as a result.
    private static func outcome(_ answer: PythonValue) -> Result<PythonValue, SubinterpreterError> {
        guard case .tuple(let items) = answer, items.count == 3 else {
            return .failure(SubinterpreterError(.runtimeFailed, "a worker process answered with something unexpected"))
        }
        if items[1] == .bool(true) { return .success(items[2]) }
        return .failure(error(from: items[2]))
    }

    /// The error a child described as `(type name, message, traceback, refused module, frames)`.
    private static func error(from description: PythonValue) -> SubinterpreterError {
        guard case .tuple(let fields) = description, fields.count == 5 else {
            return SubinterpreterError(.runtimeFailed, "a worker process reported an error it could not describe")
        }
        func text(_ value: PythonValue) -> String { if case .string(let s) = value { s } else { "" } }
        var frames: [PythonException.Frame] = []
        if case .list(let list) = fields[4] {
            for frame in list {
                guard case .tuple(let parts) = frame, parts.count == 3, case .int(let line) = parts[1] else { continue }
                frames.append(PythonException.Frame(filename: text(parts[0]), line: Int(line), function: text(parts[2])))
            }
        }
        let exception = PythonException(
            typeName: text(fields[0]).isEmpty ? "Exception" : text(fields[0]), message: text(fields[1]), traceback: text(fields[2]),
            frames: frames)
        if case .string(let module) = fields[3] { return .raised(exception, incompatibleModule: module) }
        return .raised(exception, incompatibleModule: nil)
    }

    // MARK: - The child's life

    /// Spawns a child and runs its setup; throws the setup's error (the child is gone then).
    func spawn() throws {
        let spawned = try Self.spawnChild(executable: executable)
        child.withLock { $0 = spawned }
        let start = PythonValue.tuple([
            .int(0), .string("start"),
            .dict([
                (.string("index"), .int(.init(options.workerIndex))), (.string("count"), .int(.init(options.workerCount))),
                (.string("path"), .list(options.path.map { .string($0) })),
                (.string("setup"), options.setup.map { .string($0) } ?? .none),
                (.string("loader"), options.loader.map { .string($0) } ?? .none),
                (.string("line_buffered"), .bool(options.lineAtomicOutput)),
            ]),
        ])
        do {
            try send(start, on: spawned.socket)
            guard let answer = receive(on: spawned.socket) else { throw died(while: "starting") }
            _ = try Self.outcome(answer).get()
        } catch {
            reap(kill: true)
            throw error
        }
    }

    /// On the worker's thread, between jobs: a child that died while idle is reaped and, unless
    /// the pool gave up on this worker, replaced.
    func replaceIfDead() {
        guard let socket = child.withLock({ $0?.socket }) else { return }
        // The child writes only in answer to a request: readable or hung up now means it is gone.
        var entry = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 0) > 0 else { return }
        let status = reap(kill: true)
        guard !killed.load(ordering: .acquiring) else { return }
        logger.warning("a worker process \(Self.describe(status)) while idle; starting a fresh one",
                       metadata: ["worker": "\(options.workerIndex)"])
        respawn()
    }

    /// The error for a child that died (it is reaped and, unless killed, replaced at once).
    private func died(while doing: String) -> SubinterpreterError {
        let status = reap(kill: true)
        let wasKilled = killed.load(ordering: .acquiring)
        let (name, what) = Self.name(of: status)
        let error = SubinterpreterError(
            .workerProcessDied,
            "the worker process \(what) while \(doing); \(wasKilled ? "it was not replaced (the pool gave up on it)" : "a fresh process replaces it")",
            pythonException: PythonException(
                typeName: name, message: "the worker process \(what) while \(doing)"
                    + (wasKilled ? "" : "; a fresh process replaces it"), traceback: ""))
        if !wasKilled && doing != "starting" {
            logger.warning("a worker process \(Self.describe(status)) while \(doing); starting a fresh one", metadata: ["worker": "\(options.workerIndex)"])
            respawn()
        }
        return error
    }

    private func respawn() {
        guard !killed.load(ordering: .acquiring) else { return }
        do {
            try spawn()
        } catch {
            // No child now: the worker reports itself unhealthy and the pool replaces it.
            logger.error("could not start a fresh worker process", metadata: [
                "worker": "\(options.workerIndex)", "error": "\((error as? SubinterpreterError)?.message ?? "\(error)")",
            ])
        }
    }

    private func notRunning() -> SubinterpreterError {
        SubinterpreterError(.workerProcessDied, "the worker process is not running (a fresh one could not start); the pool replaces it")
    }

    /// Asks the child to raise `subinterp.CancelledError` in the call for `job`.
    func interrupt(job: UInt64) {
        interrupted.store(job, ordering: .releasing)
        child.withLock { child in
            guard let child else { return }
            withUnsafeBytes(of: job.littleEndian) { _ = write(child.interrupts, $0.baseAddress, 8) }
            _ = Glibc.kill(child.pid, SIGUSR1)
        }
    }

    /// SIGKILL for the child that runs now; no other replaces it.
    func kill() {
        killed.store(true, ordering: .releasing)
        child.withLock { child in
            if let child { _ = Glibc.kill(child.pid, SIGKILL) }
        }
    }

    /// Ends the child: closing the socket ends its loop, and it exits. The worker's thread gets
    /// here only between calls (or after `kill`), so the child is reading its next request.
    func shutDown() {
        guard let current = child.withLock({ child -> Child? in
            defer { child = nil }
            return child
        }) else { return }
        close(current.socket)
        close(current.interrupts)
        var status: Int32 = 0
        while waitpid(current.pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Takes the child out, kills it if asked (a zombie ignores it: its status stays the one it
    /// died with), and waits for its exit status.
    @discardableResult
    private func reap(kill: Bool) -> Int32? {
        guard let current = child.withLock({ child -> Child? in
            defer { child = nil }
            return child
        }) else { return nil }
        if kill { _ = Glibc.kill(current.pid, SIGKILL) }
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(current.pid, &status, 0) } while result < 0 && errno == EINTR
        close(current.socket)
        close(current.interrupts)
        return result == current.pid ? status : nil
    }

    /// The Python type name for a death (`SIGSEGV`, or `WorkerExited`) and what happened.
    static func name(of status: Int32?) -> (String, String) {
        guard let status else { return ("WorkerExited", "ended") }
        let signal = status & 0x7f
        if signal != 0 && signal != 0x7f {
            let name = signalNames[signal] ?? "SIG\(signal)"
            return (name, "died of \(name) (signal \(signal))")
        }
        return ("WorkerExited", "exited with status \((status >> 8) & 0xff)")
    }

    private static func describe(_ status: Int32?) -> String { name(of: status).1 }

    private static let signalNames: [Int32: String] = [
        SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP", SIGABRT: "SIGABRT",
        SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1", SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2",
        SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGSYS: "SIGSYS",
    ]

    // MARK: - Framing: a u64 length, then one item

    private func send(_ value: PythonValue, on socket: Int32) throws {
        let item = try ItemCoding.encodeBytes(value)
        var frame = [UInt8]()
        frame.reserveCapacity(8 + item.count)
        withUnsafeBytes(of: UInt64(item.count).littleEndian) { frame.append(contentsOf: $0) }
        frame += item
        var sent = 0
        while sent < frame.count {
            let count = frame.withUnsafeBytes { Glibc.send(socket, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw died(while: "taking a call")
            }
            sent += count
        }
    }

    /// The next message, or nil if the child closed the socket (it died).
    private func receive(on socket: Int32) -> PythonValue? {
        var header = [UInt8](repeating: 0, count: 8)
        guard readExactly(socket, &header) else { return nil }
        let size = header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard size < 1 << 40 else { return nil }
        var body = [UInt8](repeating: 0, count: Int(size))
        guard readExactly(socket, &body) else { return nil }
        do {
            return try body.withUnsafeBufferPointer { try ItemCoding.decodeBytes($0) }
        } catch {
            return .tuple([.none, .bool(false), .tuple([
                .string("RuntimeError"), .string("a worker process sent a corrupt answer"), .string(""), .none, .list([]),
            ])])
        }
    }

    private func readExactly(_ socket: Int32, _ buffer: inout [UInt8]) -> Bool {
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(socket, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return false }
            filled += count
        }
        return true
    }

    // MARK: - Spawning

    /// Runs the worker's source in its own module, so the user's setup in `__main__` cannot
    /// overwrite its functions.
    private static let bootstrap = """
        import sys, types
        module = types.ModuleType("subinterp._process_worker")
        source = sys.argv.pop(1)
        exec(compile(source, "<subinterp process worker>", "exec"), module.__dict__)
        del sys, types, source
        module.main()
        """

    /// `posix_spawn`s `executable -P -c <bootstrap> <source>` with the socket as fd 3 and the
    /// interrupt pipe as fd 4, every other descriptor closed (`addclosefrom_np`), the signal
    /// mask emptied and the signals Python handles at their defaults (a host that ignores
    /// SIGINT or SIGPIPE would otherwise pass that on).
    private static func spawnChild(executable: String) throws -> Child {
        func failure(_ what: String) -> SubinterpreterError {
            SubinterpreterError(.runtimeFailed, "could not start a worker process (\(executable)): \(what): \(String(cString: strerror(errno)))")
        }
        // Descriptors above 4, so the dup2s into 3 and 4 cannot overwrite one another.
        func high(_ fd: Int32) -> Int32 {
            let moved = fcntl(fd, F_DUPFD_CLOEXEC, 10)
            close(fd)
            return moved
        }
        var sockets: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sockets) == 0 else {
            throw failure("socketpair")
        }
        var pipes: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pipes) == 0 else {
            close(sockets[0]); close(sockets[1])
            throw failure("socketpair")
        }
        let (host, remote, interruptRead, interruptWrite) = (high(sockets[0]), high(sockets[1]), high(pipes[0]), high(pipes[1]))
        // Interrupts are written under the child's lock: never block there (a full pipe means
        // the child has many unread already).
        _ = fcntl(interruptWrite, F_SETFL, fcntl(interruptWrite, F_GETFL) | O_NONBLOCK)
        defer {
            close(remote)
            close(interruptRead)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, remote, 3)
        posix_spawn_file_actions_adddup2(&actions, interruptRead, 4)
        cpy_spawn_file_actions_addclosefrom(&actions, 5)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGCHLD, SIGXFSZ] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let arguments = [executable, "-P", "-c", bootstrap, String(cString: cpy_process_worker_source())]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, &argv, environ)
        guard result == 0 else {
            close(host)
            close(interruptWrite)
            errno = result
            throw failure("posix_spawn")
        }
        return Child(pid: pid, socket: host, interrupts: interruptWrite)
    }
}

extension ProcessWorker {
    /// What a pool of processes says to work given as a Swift closure.
    static func closureRefused() -> SubinterpreterError {
        SubinterpreterError(
            .invalidArgument,
            "this pool's workers are processes (isolation .processes), and a Swift closure cannot run in another process; "
                + "submit a call by name (pool.submit(\"module.function\", arguments: …)) or use isolation .interpreters")
    }
}
