import CPython
import Foundation

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

    public init(
        workerIndex: Int = 0, workerCount: Int = 1, lineAtomicOutput: Bool = true, path: [String] = [],
        argv: [String]? = nil
    ) {
        self.workerIndex = workerIndex
        self.workerCount = workerCount
        self.lineAtomicOutput = lineAtomicOutput
        self.path = path
        self.argv = argv
    }
}

/// The OS thread that owns one sub-interpreter. The interpreter is created, used and ended on
/// this thread only; other threads hand it work through a queue.
final class InterpreterThread: @unchecked Sendable {
    // Safe: every mutable field is guarded by `condition`.
    typealias Work = @Sendable (PythonContext) -> Void

    private enum Job {
        case work(Work)
        case end(@Sendable () -> Void)
    }

    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var next = 0
    private var accepting = true
    /// The interpreter's id (`PyInterpreterState_GetID`), set once it exists.
    private(set) var interpreterID: Int64 = -1

    /// Starts the thread and creates the interpreter on it; returns once it is ready to run code.
    static func start(runtime: PythonRuntime, options: InterpreterOptions) async throws -> InterpreterThread {
        try runtime.interpreterStarted()
        let owner = InterpreterThread()
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let thread = Thread {
                    owner.main(runtime: runtime, options: options) { continuation.resume(with: $0) }
                }
                thread.name = "python-interpreter"
                thread.stackSize = 16 << 20
                thread.start()
            }
        } catch {
            runtime.interpreterEnded()
            throw error
        }
        return owner
    }

    /// Queues work; false if the interpreter is closed or closing.
    func submit(_ work: @escaping Work) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { return false }
        jobs.append(.work(work))
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
        jobs.append(.end(done))
        condition.signal()
        return true
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
        if next == jobs.count || next > 1024 {
            jobs.removeFirst(next)
            next = 0
        }
        return job
    }

    private func main(runtime: PythonRuntime, options: InterpreterOptions, ready: @Sendable (Result<Void, any Error>) -> Void) {
        let context = PythonContext(thread: pthread_self())
        let state: OpaquePointer
        switch Self.createInterpreter(runtime: runtime) {
        case .failure(let error):
            ready(.failure(error))
            return
        case .success(let created):
            state = created
        }
        interpreterID = cpy_PyInterpreterState_GetID(cpy_PyInterpreterState_Get())
        do {
            try context.bootstrap()
            try Self.configure(context, options)
        } catch {
            context.tearDown()
            cpy_Py_EndInterpreter(state)
            ready(.failure(error))  // `start` counts the interpreter as ended
            return
        }
        ready(.success(()))

        // Hold the interpreter's GIL while there is work; release it while idle so threads the
        // Python code started can run.
        while true {
            var job = take(wait: false)
            if job == nil {
                let saved = cpy_PyEval_SaveThread()
                job = take(wait: true)
                cpy_PyEval_RestoreThread(saved)
            }
            switch job! {
            case .work(let work):
                work(context)
            case .end(let done):
                context.tearDown()
                cpy_Py_EndInterpreter(state)
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
    }
}
