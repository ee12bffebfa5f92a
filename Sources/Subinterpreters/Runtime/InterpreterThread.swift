import CPython
import Foundation
import Synchronization

/// How a new interpreter is set up before it runs any user code.
public struct InterpreterOptions: Sendable {
    /// What `subinterp.worker_index()` returns inside the interpreter.
    public var workerIndex: Int = 0
    /// What `subinterp.worker_count()` returns inside the interpreter.
    public var workerCount: Int = 1
    /// Replace `sys.stdout` and `sys.stderr` with writers that emit whole lines under a
    /// process-wide lock, so output from concurrent interpreters never interleaves mid-line.
    /// A partial line is written once its newline arrives or when the interpreter ends.
    public var lineAtomicOutput: Bool = true
    /// Directories put in front of `sys.path`.
    public var path: [String] = []
    /// `sys.argv`, if set.
    public var argv: [String]?
    /// Python statements run in `__main__` once the interpreter is set up, before any other work
    /// (imports, configuration). If they raise, creating the interpreter fails with their traceback.
    public var setup: String?
    /// How long the interpreter's thread watches for new work before it sleeps. Spinning saves
    /// a wake-up when calls come one after another (a caller awaiting each call); it costs CPU
    /// that other threads could use when the cores are busy (a server). Zero turns it off.
    public var idleSpin: Duration = .microseconds(50)
    /// Python run after `setup`, as `<subinterp loader>`: the tools' own code that loads the
    /// user's function or app. Its frames are hidden from tracebacks, so a failure reads as the
    /// user's, and one in `setup` is told apart from one in loading.
    package var loader: String?
    /// A fresh isolated sub-interpreter (the default), or the process's main interpreter
    /// entered from this interpreter's own thread, where every extension module loads.
    public var kind: InterpreterKind = .isolated

    public init(
        workerIndex: Int = 0, workerCount: Int = 1, lineAtomicOutput: Bool = true, path: [String] = [],
        argv: [String]? = nil, setup: String? = nil, kind: InterpreterKind = .isolated
    ) {
        self.kind = kind
        self.workerIndex = workerIndex
        self.workerCount = workerCount
        self.lineAtomicOutput = lineAtomicOutput
        self.path = path
        self.argv = argv
        self.setup = setup
    }
}

/// Supplies work to interpreter threads whose own queue is empty: the pool's shared queue.
protocol WorkFeeder: AnyObject, Sendable {
    /// Called on `worker`'s thread. Returns the next work, or nil after recording the worker as
    /// idle (it then waits on its own queue, where the feeder puts work for it).
    func nextWork(for worker: InterpreterThread) -> InterpreterThread.Work?
}

/// The OS thread that owns one sub-interpreter. The interpreter is created, used and ended on
/// this thread only; other threads hand it work through a queue. The one exception is
/// `interrupt`, which attaches a short-lived thread state of its own (see there).
///
/// With `InterpreterKind.main` the thread enters the process's main interpreter instead, with
/// a thread state of its own: the same queue, the same interrupts, and at the end only that
/// thread state is deleted (the main interpreter lives on).
final class InterpreterThread: @unchecked Sendable {
    // Safe: the queue fields are guarded by `condition`; `ending` by `interruptLock`; the
    // interpreter facts are written once on the thread before `ready` and only read after it;
    // the rest are atomics or a Mutex.
    typealias Work = @Sendable (PythonContext) -> Void

    private enum Job {
        case work(Work)
        case end(@Sendable () -> Void)
    }

    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var next = 0
    private var accepting = true
    private var feeder: (any WorkFeeder)?
    /// Jobs in `jobs` not yet taken, readable without the lock (for the spin before sleeping).
    private let queued = Atomic<Int>(0)

    /// The interpreter's id (`PyInterpreterState_GetID`), set once it exists.
    private(set) var interpreterID: Int64 = -1
    /// Facts `interrupt` needs, set on the thread before it reports ready.
    private var interpreterState: OpaquePointer?
    private var threadIdent: UInt = 0
    private var cancelledType: OpaquePointer?
    private let interruptLock = NSLock()
    private var ending = false
    /// The job running now (0 when none); set by the pool's work around each job.
    let currentJob = Atomic<UInt64>(0)
    /// Set (under this interpreter's GIL) when an interrupt was delivered for the current job.
    private let interruptPending = Atomic<Bool>(false)
    /// Whether an interrupter thread is running, and the job a newer request is for.
    private let interrupter = Mutex<(running: Bool, pending: UInt64?)>((false, nil))

    private init(feeder: (any WorkFeeder)?) {
        self.feeder = feeder
    }

    /// Starts the thread and creates the interpreter on it; returns once it is ready to run code.
    static func start(runtime: PythonRuntime, options: InterpreterOptions, feeder: (any WorkFeeder)? = nil) async throws
        -> InterpreterThread
    {
        try await withCheckedThrowingContinuation { continuation in
            launch(runtime: runtime, options: options, feeder: feeder) { continuation.resume(with: $0) }
        }
    }

    /// Starts the thread; `ready` gets the thread once its interpreter can run code, or the error.
    static func launch(
        runtime: PythonRuntime, options: InterpreterOptions, feeder: (any WorkFeeder)?,
        ready: @escaping @Sendable (Result<InterpreterThread, any Error>) -> Void
    ) {
        do {
            try runtime.interpreterStarted()
        } catch {
            ready(.failure(error))
            return
        }
        let owner = InterpreterThread(feeder: feeder)
        let thread = Thread {
            owner.main(runtime: runtime, options: options) { result in
                if case .failure = result { runtime.interpreterEnded() }
                ready(result.map { owner })
            }
        }
        thread.name = "python-interpreter"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Queues work; false if the interpreter is closed or closing.
    func submit(_ work: @escaping Work) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { return false }
        jobs.append(.work(work))
        queued.add(1, ordering: .releasing)
        condition.signal()
        return true
    }

    /// Stops taking work; the interpreter ends after the work already queued, then `done` runs.
    /// False if it was already closing.
    func close(_ done: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { return false }
        accepting = false
        feeder = nil
        // A job blocked on a subinterp.Queue would keep the interpreter from ending: from now on
        // its blocking waits end with an error.
        if threadIdent != 0 { cpy_thread_closing(threadIdent, 1) }
        jobs.append(.end(done))
        queued.add(1, ordering: .releasing)
        condition.signal()
        return true
    }

    /// Asks for `subinterp.CancelledError` to be raised in the Python code running `job`, if it
    /// still is. Returns at once: a thread of this worker's own attaches to the interpreter,
    /// which may take as long as the worker holds its GIL (a long C call), so the caller (the
    /// pool's controller) never waits on it. Requests made while one is in flight are coalesced
    /// into one more attempt after it, which is what repeating an interrupt needs.
    func requestInterrupt(job: UInt64) {
        let start = interrupter.withLock { state -> Bool in
            state.pending = job
            if state.running { return false }
            state.running = true
            return true
        }
        guard start else { return }
        let thread = Thread { [self] in
            while let job = interrupter.withLock({ state -> UInt64? in
                guard let job = state.pending else {
                    state.running = false
                    return nil
                }
                state.pending = nil
                return job
            }) {
                _ = interrupt(job: job)
            }
        }
        thread.name = "python-interrupt"
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Raises `subinterp.CancelledError` in the Python code running `job` on this interpreter,
    /// if it still is. Called from another thread, which attaches a thread state of its own to
    /// this interpreter, waiting for its GIL (at most about one switch interval of running
    /// Python, but as long as a C call that holds the GIL runs), sets the asynchronous exception
    /// for the interpreter's thread, and deletes its thread state again. The corresponding C
    /// API is `PyThreadState_SetAsyncExc`, which only reaches threads of the current
    /// interpreter. `condition` is checked again once this thread holds the interpreter's GIL,
    /// when the interpreter's own thread is paused; the exception is only set if it still holds.
    /// Returns whether the exception was set.
    func interrupt(job: UInt64, when condition: () -> Bool = { true }) -> Bool {
        interruptLock.lock()
        defer { interruptLock.unlock() }
        guard !ending, currentJob.load(ordering: .acquiring) == job, let state = interpreterState,
            let type = cancelledType, let controller = cpy_PyThreadState_New(state)
        else { return false }
        cpy_PyEval_RestoreThread(controller)
        var sent = false
        // Under this interpreter's GIL: the worker reads `currentJob` and `interruptPending`
        // while holding it, so it sees either the job still running and the flag set, or no job.
        if currentJob.load(ordering: .acquiring) == job, condition() {
            sent = cpy_PyThreadState_SetAsyncExc(threadIdent, type) == 1
            // A wait on a subinterp.Queue is not Python bytecode; end it too.
            cpy_thread_cancel_wait(threadIdent)
            interruptPending.store(true, ordering: .releasing)
        }
        cpy_PyThreadState_Clear(controller)
        cpy_PyThreadState_DeleteCurrent()
        return sent
    }

    /// Marks the end of the current job. Call on this thread, holding the GIL, right after the
    /// job's code returned: from then on no interrupt can land (an interrupter checks
    /// `currentJob` under the same GIL), and one that landed but found no Python code to raise
    /// in (the job returned from C straight to Swift) is dropped here, together with the
    /// queue-wait cancellation sent with it, so it reaches neither cleanup code nor the next job.
    func endJob() {
        currentJob.store(0, ordering: .releasing)
        if interruptPending.exchange(false, ordering: .acquiringAndReleasing) {
            _ = cpy_PyThreadState_SetAsyncExc(threadIdent, nil)
            cpy_thread_clear_cancel(threadIdent)
        }
    }

    private func take(wait: Bool) -> Job? {
        condition.lock()
        defer { condition.unlock() }
        while next == jobs.count {
            guard wait else { return nil }
            condition.wait()
        }
        let job = jobs[next]
        next += 1
        queued.subtract(1, ordering: .relaxed)
        if next == jobs.count || next > 1024 {
            jobs.removeFirst(next)
            next = 0
        }
        return job
    }

    /// Watches the queue for a moment before sleeping: a caller awaiting one call at a time
    /// usually sends the next within microseconds, and catching it here saves a futex wake-up
    /// on each side. Returns whether work arrived.
    private func spinForWork(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while true {
            for _ in 0..<64 where queued.load(ordering: .acquiring) > 0 { return true }
            if ContinuousClock.now > deadline { return false }
        }
    }

    private var currentFeeder: (any WorkFeeder)? {
        condition.lock()
        defer { condition.unlock() }
        return feeder
    }

    private func main(runtime: PythonRuntime, options: InterpreterOptions, ready: @Sendable (Result<Void, any Error>) -> Void) {
        let context = PythonContext(thread: pthread_self())
        let state: OpaquePointer
        let entered = options.kind == .main ? Self.enterMainInterpreter(runtime: runtime) : Self.createInterpreter(runtime: runtime)
        switch entered {
        case .failure(let error):
            ready(.failure(error))
            return
        case .success(let created):
            state = created
        }
        interpreterState = cpy_PyInterpreterState_Get()
        interpreterID = cpy_PyInterpreterState_GetID(interpreterState)
        threadIdent = cpy_PyThread_get_thread_ident()
        do {
            try context.bootstrap(isolated: options.kind == .isolated)
            cancelledType = context.cancelledType
            try Self.configure(context, options)
        } catch {
            context.tearDown()
            Self.leave(state, kind: options.kind)
            ready(.failure(error))  // `launch` counts the interpreter as ended
            return
        }
        ready(.success(()))

        // Hold the interpreter's GIL while there is work; release it while idle so threads the
        // Python code started can run.
        while true {
            var job = take(wait: false)
            if job == nil, let feeder = currentFeeder, let work = feeder.nextWork(for: self) {
                job = .work(work)
            }
            if job == nil, options.idleSpin > .zero, spinForWork(options.idleSpin) {
                job = take(wait: false)
            }
            if job == nil {
                let saved = cpy_PyEval_SaveThread()
                job = take(wait: true)
                cpy_PyEval_RestoreThread(saved)
            }
            switch job! {
            case .work(let work):
                work(context)
            case .end(let done):
                // No controller may attach once the interpreter starts ending; wait for one
                // that is attaching now, without holding the GIL it waits for.
                let saved = cpy_PyEval_SaveThread()
                interruptLock.lock()
                ending = true
                interruptLock.unlock()
                cpy_PyEval_RestoreThread(saved)
                context.tearDown()
                Self.leave(state, kind: options.kind)
                cpy_thread_closing(threadIdent, 0)  // the OS may give this thread id to a new thread
                runtime.interpreterEnded()
                done()
                return
            }
        }
    }

    /// Creates an isolated interpreter and leaves its thread state attached to this thread.
    /// The corresponding C API is `Py_NewInterpreterFromConfig`, which needs some thread state
    /// attached: a temporary one of the main interpreter, deleted right after.
    private static func createInterpreter(runtime: PythonRuntime) -> Result<OpaquePointer, any Error> {
        guard let temporary = cpy_PyThreadState_New(runtime.mainInterpreter) else {
            return .failure(SubinterpreterError(.interpreterCreationFailed, "could not create a thread state (out of memory?)"))
        }
        cpy_PyEval_RestoreThread(temporary)
        var created: OpaquePointer?
        var config = cpy_isolated_interpreter_config()
        let status = cpy_Py_NewInterpreterFromConfig(&created, &config)
        if cpy_PyStatus_Exception(status) != 0 || created == nil {
            // On failure the temporary state is attached again.
            cpy_PyThreadState_Clear(temporary)
            cpy_PyThreadState_DeleteCurrent()
            let message = status.err_msg.map { String(cString: $0) } ?? "unknown error"
            return .failure(SubinterpreterError(.interpreterCreationFailed, "CPython could not create a sub-interpreter: \(message)"))
        }
        _ = cpy_PyThreadState_Swap(temporary)
        cpy_PyThreadState_Clear(temporary)
        cpy_PyThreadState_DeleteCurrent()
        cpy_PyEval_RestoreThread(created)
        return .success(created!)
    }

    /// Attaches a new thread state of the main interpreter to this thread and leaves it attached.
    /// The corresponding C API is `PyThreadState_New` + `PyEval_RestoreThread`.
    private static func enterMainInterpreter(runtime: PythonRuntime) -> Result<OpaquePointer, any Error> {
        guard let state = cpy_PyThreadState_New(runtime.mainInterpreter) else {
            return .failure(SubinterpreterError(.interpreterCreationFailed, "could not create a thread state (out of memory?)"))
        }
        cpy_PyEval_RestoreThread(state)
        return .success(state)
    }

    /// Ends what `main` entered, with its thread state attached: the sub-interpreter
    /// (`Py_EndInterpreter`), or for the main interpreter only this thread's state
    /// (`PyThreadState_Clear` + `PyThreadState_DeleteCurrent`, which releases the GIL).
    private static func leave(_ state: OpaquePointer, kind: InterpreterKind) {
        switch kind {
        case .isolated:
            cpy_Py_EndInterpreter(state)
        case .main:
            cpy_PyThreadState_Clear(state)
            cpy_PyThreadState_DeleteCurrent()
        }
    }

    private static func configure(_ context: PythonContext, _ options: InterpreterOptions) throws {
        if cpy_module_set_worker(options.workerIndex, options.workerCount) != 0 { throw context.takeError() }
        var setup: [String: PythonValue] = [:]
        var code = "import sys as _sys, subinterp as _subinterp\n"
        if options.lineAtomicOutput { code += "_subinterp._install_line_writers()\n" }
        if !options.path.isEmpty {
            setup["_subinterp_path"] = .list(options.path.map { .string($0) })
            code += "_sys.path[0:0] = _subinterp_path\ndel _subinterp_path\n"
        }
        if let argv = options.argv {
            setup["_subinterp_argv"] = .list(argv.map { .string($0) })
            code += "_sys.argv = _subinterp_argv\ndel _subinterp_argv\n"
        }
        code += "del _sys, _subinterp\n"
        try context.setMain(setup)
        try context.exec(code, filename: "<subinterp setup>")
        if let user = options.setup { try context.exec(user, filename: "<setup>") }
        if let loader = options.loader { try context.exec(loader, filename: "<subinterp loader>") }
    }
}
