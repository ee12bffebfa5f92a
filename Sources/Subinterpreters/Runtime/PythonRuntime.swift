import CPython
import Foundation
import Synchronization

/// The process's CPython runtime: the loaded libpython and its main interpreter.
///
/// The main interpreter starts once per process, on a thread of its own that never runs user
/// code; it outlives every sub-interpreter. Start it with `start(_:)` (or let the first
/// `Interpreter` start it with the default installation). When this library is itself loaded
/// into a running Python (the `subinterp` extension module), `attach(packageDirectory:)` uses
/// that Python's main interpreter instead, and its owner finalizes it.
public final class PythonRuntime: Sendable {
    /// The installation that was loaded.
    public let installation: PythonInstallation
    /// The exact version of the loaded library, e.g. `3.13.0`.
    public let version: String

    /// The main interpreter's state. Only read by interpreter threads while they create a
    /// sub-interpreter, under that interpreter's GIL rules.
    nonisolated(unsafe) let mainInterpreter: OpaquePointer
    /// The thread that owns the main interpreter, or nil when attached to a running Python.
    private let finalizer: RuntimeThread?
    private let state = Mutex(State())

    private struct State {
        var liveInterpreters = 0
        var finalized = false
    }

    private static let shared = Mutex<PythonRuntime?>(nil)

    private init(installation: PythonInstallation, version: String, mainInterpreter: OpaquePointer, finalizer: RuntimeThread?) {
        self.installation = installation
        self.version = version
        self.mainInterpreter = mainInterpreter
        self.finalizer = finalizer
    }

    /// The running runtime, if one was started.
    public static var current: PythonRuntime? { shared.withLock { $0 } }

    /// Starts the runtime with `installation`, or with `PythonInstallation.find()` when nil, and
    /// waits without blocking a Swift concurrency thread: finding Python (which may run it),
    /// loading it and initializing it happen on a thread of their own. Starting again returns
    /// the running runtime; asking for another installation once one runs is an error (one
    /// libpython per process).
    @discardableResult
    public static func start(_ installation: PythonInstallation? = nil) async throws -> PythonRuntime {
        if installation == nil, let running = current { return running }
        return try await onOwnThread { try start(installation) }
    }

    /// Starts the runtime with the Python named by `explicit` (a path, as `--python` takes), or
    /// the default one, finding it on the same thread of its own as the rest of the start.
    package static func start(explicit: String?) async throws -> PythonRuntime {
        if explicit == nil, let running = current { return running }
        return try await onOwnThread { try start(PythonInstallation.find(explicit: explicit)) }
    }

    /// Runs blocking work on a new thread and waits for it without blocking a Swift
    /// concurrency thread. Starting Python happens once per process, so a thread each time is
    /// cheaper than any pool.
    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "python-start"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Starts the runtime as above, blocking the calling thread until Python is initialized.
    /// For callers that are not async; from async code use the async `start`.
    @discardableResult
    public static func start(_ installation: PythonInstallation? = nil) throws -> PythonRuntime {
        try shared.withLock { running in
            if let running {
                if let installation, installation.library != running.installation.library
                    || installation.executable != running.installation.executable
                {
                    throw SubinterpreterError(
                        .runtimeFailed,
                        "Python is already running from \(running.installation.executable); one process hosts one Python. "
                            + "Start the runtime with the installation you want before creating interpreters.")
                }
                return running
            }
            let chosen = try installation ?? PythonInstallation.find()
            let runtime = try launch(chosen)
            running = runtime
            return runtime
        }
    }

    private static func launch(_ installation: PythonInstallation) throws -> PythonRuntime {
        var error = [CChar](repeating: 0, count: 512)
        guard cpy_load(installation.library, &error, error.count) == 0 else {
            let reason = String(nulTerminated: error)
            throw SubinterpreterError(
                .pythonNotFound,
                "\(reason). Point \(PythonInstallation.environmentVariable) (or --python) at a CPython 3.12 or 3.13 built with --enable-shared.")
        }
        ExecutorBridge.install()
        let thread = RuntimeThread()
        let main = try thread.initialize(executable: installation.executable)
        return PythonRuntime(installation: installation, version: loadedVersion(), mainInterpreter: main, finalizer: thread)
    }

    private static func loadedVersion() -> String {
        let v = cpy_version()
        return "\(v >> 24).\((v >> 16) & 0xFF).\((v >> 8) & 0xFF)"
    }

    /// Attaches to the Python that is already running this process: this library was loaded as
    /// the extension module `subinterp._core`, with the calling thread holding the main
    /// interpreter's GIL. The C API is resolved from the process (`dlsym(RTLD_DEFAULT, …)`), so
    /// libpython may be a shared library or linked into the executable; nothing is started, and
    /// nothing is finalized by us. Interpreters created from then on import the package from
    /// `packageDirectory` and this binary's `subinterp._core`. Attaching again returns the same
    /// runtime.
    package static func attach(packageDirectory: String?) throws -> PythonRuntime {
        try shared.withLock { running in
            if let running { return running }
            var error = [CChar](repeating: 0, count: 512)
            guard cpy_load_process(&error, error.count) == 0 else {
                throw SubinterpreterError(.pythonNotFound, String(nulTerminated: error))
            }
            cpy_package_set_directory(packageDirectory)
            ExecutorBridge.install()
            let v = cpy_version()
            let major = Int(v >> 24), minor = Int((v >> 16) & 0xFF)
            let executable = (cpy_PySys_GetObject("executable")).flatMap { object -> String? in
                var size = 0
                guard let text = cpy_PyUnicode_AsUTF8AndSize(object, &size) else {
                    cpy_PyErr_Clear()
                    return nil
                }
                return String(cString: text)
            } ?? ""
            let library = cpy_library_path().map { String(cString: $0) } ?? executable
            let installation = PythonInstallation(
                executable: executable, library: library, major: major, minor: minor,
                virtualEnvironment: PythonInstallation.virtualEnvironment(of: executable))
            let runtime = PythonRuntime(
                installation: installation, version: loadedVersion(), mainInterpreter: cpy_PyInterpreterState_Main(),
                finalizer: nil)
            running = runtime
            return runtime
        }
    }

    /// Counts interpreters so `finalize` can refuse while any is alive.
    func interpreterStarted() throws {
        try state.withLock {
            guard !$0.finalized else {
                throw SubinterpreterError(.runtimeFailed, "the Python runtime was finalized; no interpreter can start")
            }
            $0.liveInterpreters += 1
        }
    }

    func interpreterEnded() {
        state.withLock { $0.liveInterpreters -= 1 }
    }

    /// Finalizes the main interpreter, which runs its exit handlers and flushes its streams.
    /// Close every `Interpreter` first; returns false (and does nothing) while one is alive.
    /// Optional: a process may also simply exit.
    @discardableResult
    public func finalize() -> Bool {
        guard let finalizer else { return false }  // attached: the running Python's owner finalizes it
        let go = state.withLock { state -> Bool in
            guard state.liveInterpreters == 0, !state.finalized else { return false }
            state.finalized = true
            return true
        }
        // CPython 3.12.1 can abort in Py_FinalizeEx after isolated interpreters imported
        // asyncio (free(): invalid pointer); there the process exits without finalizing, which
        // is safe because every sub-interpreter has already ended and run its exit handlers.
        if go && installation.minor >= 13 { finalizer.finalize() }
        return go
    }
}

/// The thread that owns the main interpreter's thread state: it initializes Python, then
/// waits, holding no GIL, until it is asked to finalize.
private final class RuntimeThread: @unchecked Sendable {
    // Safe: `condition` guards every mutable field.
    private let condition = NSCondition()
    private var mainInterpreter: OpaquePointer?
    private var failure: String?
    private var started = false
    private var finalizeRequested = false
    private var finished = false

    func initialize(executable: String) throws -> OpaquePointer {
        let thread = Thread { [self] in run(executable: executable) }
        thread.name = "python-main"
        thread.stackSize = 8 << 20
        thread.start()
        condition.lock()
        while !started { condition.wait() }
        defer { condition.unlock() }
        if let failure { throw SubinterpreterError(.runtimeFailed, failure) }
        return mainInterpreter!
    }

    func finalize() {
        condition.lock()
        finalizeRequested = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
    }

    private func run(executable: String) {
        var error = [CChar](repeating: 0, count: 512)
        let status = cpy_initialize(executable, &error, error.count)
        condition.lock()
        if status != 0 {
            failure = "Python failed to start from \(executable): \(String(nulTerminated: error))"
        } else {
            mainInterpreter = cpy_PyInterpreterState_Main()
        }
        started = true
        condition.broadcast()
        condition.unlock()
        guard failure == nil else { return }

        let mainThreadState = cpy_PyEval_SaveThread()
        condition.lock()
        while !finalizeRequested { condition.wait() }
        condition.unlock()
        cpy_PyEval_RestoreThread(mainThreadState)
        _ = cpy_Py_FinalizeEx()
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }
}
