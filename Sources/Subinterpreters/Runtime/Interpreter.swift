import Foundation
import Synchronization

/// An isolated CPython sub-interpreter with its own GIL, living on a dedicated OS thread.
///
/// Its configuration is CPython's isolated one: own GIL, own allocator, only extension modules
/// with multi-phase init, no `fork`, no `exec`, no daemon threads. Every method hands work to
/// the interpreter's thread and suspends until it is done; work runs in the order it was given.
///
/// ```swift
/// let interpreter = try await Interpreter()
/// try await interpreter.exec("def square(x): return x * x")
/// let nine = try await interpreter.call("square", 3)   // .int(9)
/// try await interpreter.close()
/// ```
public final class Interpreter: Sendable {
    public let runtime: PythonRuntime
    public let options: InterpreterOptions
    let thread: InterpreterThread
    private let closed = Mutex(false)

    /// Creates an interpreter, starting the runtime with the default installation if needed.
    /// The corresponding C API is `Py_NewInterpreterFromConfig`.
    public init(runtime: PythonRuntime? = nil, options: InterpreterOptions = InterpreterOptions()) async throws {
        let runtime = if let runtime { runtime } else { try await PythonRuntime.start() }
        self.runtime = runtime
        self.options = options
        self.thread = try await InterpreterThread.start(runtime: runtime, options: options)
    }

    deinit {
        // Not closed by its owner: end it once its queued work is done, without waiting.
        _ = thread.close {}
    }

    /// The interpreter's id in CPython (`PyInterpreterState_GetID`).
    public var id: Int64 { thread.interpreterID }

    /// Runs `body` on the interpreter's thread with access to its Python objects. Objects cannot
    /// leave the closure; return values that are `Sendable` (such as `PythonValue`).
    /// Cancelling the task before the work starts skips it and throws `.cancelled`.
    public func withPython<T: Sendable>(_ body: @escaping @Sendable (PythonContext) throws -> T) async throws -> T {
        let skipped = Atomic<Bool>(false)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let accepted = thread.submit { context in
                    if skipped.load(ordering: .relaxed) {
                        continuation.resume(throwing: SubinterpreterError(.cancelled, "the call was cancelled before it started"))
                        return
                    }
                    continuation.resume(with: Result { try body(context) })
                }
                if !accepted { continuation.resume(throwing: SubinterpreterError.closed()) }
            }
        } onCancel: {
            skipped.store(true, ordering: .relaxed)
        }
    }

    /// Runs statements in `__main__`. `filename` appears in tracebacks.
    public func exec(_ source: String, filename: String = "<string>") async throws {
        try await withPython { try $0.exec(source, filename: filename) }
    }

    /// Evaluates an expression in `__main__` and returns its value.
    public func eval(_ expression: String) async throws -> PythonValue {
        try await withPython { try $0.eval(expression).value }
    }

    /// Calls a function by name — `"package.module.function"`, `"package.module:Class.method"`, or
    /// a global of `__main__` — and returns its result. Arguments and keyword values are
    /// `PythonValue`s, or any `Encodable` Swift value (numbers, strings, arrays, dictionaries,
    /// your own types), converted with `PythonValueEncoder`:
    ///
    /// ```swift
    /// let xs = [1, 2, 3, 4]
    /// let result = try await interpreter.call("stats", xs, keywords: ["weights": [1.0, 2.0, 1.0, 1.0]])
    /// ```
    public func call<each Argument: Encodable>(
        _ function: String, _ arguments: repeat each Argument, keywords: KeyValuePairs<String, any Encodable> = [:]
    ) async throws -> PythonValue {
        try await call(function, arguments: try PythonValue.arguments(repeat each arguments), keywords: try PythonValue.keywords(keywords))
    }

    /// Calls a function with `PythonValue` arguments (any mix of literals, queues, buffers).
    public func call(_ function: String, _ arguments: PythonValue..., keywords: KeyValuePairs<String, PythonValue> = [:]) async throws
        -> PythonValue
    {
        try await call(function, arguments: arguments, keywords: keywords.map { ($0.key, $0.value) })
    }

    /// Calls a function by name with an array of positional arguments.
    public func call(_ function: String, arguments: [PythonValue], keywords: [(String, PythonValue)] = []) async throws -> PythonValue {
        try await withPython { try $0.call(function, arguments, keywords: keywords) }
    }

    /// Calls a function with `Encodable` arguments and decodes its result.
    public func call<Result: Decodable>(
        _ function: String, arguments: [any Encodable] = [], keywords: KeyValuePairs<String, any Encodable> = [:],
        returning type: Result.Type = Result.self
    ) async throws -> Result {
        let values = try arguments.map { try PythonValue.converting($0) }
        let result = try await call(function, arguments: values, keywords: try PythonValue.keywords(keywords))
        return try PythonValueDecoder().decode(Result.self, from: result)
    }

    /// Sets globals of `__main__`.
    public func prepareMain(_ values: [String: PythonValue]) async throws {
        try await withPython { try $0.setMain(values) }
    }

    /// Ends the interpreter once the work already given to it is done (waiting for code that is
    /// running), then stops its thread. Work given after `close` fails with `.interpreterClosed`.
    /// Closing twice is harmless.
    public func close() async {
        guard closed.withLock({ let was = $0; $0 = true; return !was }) else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !thread.close({ continuation.resume() }) { continuation.resume() }
        }
    }
}
