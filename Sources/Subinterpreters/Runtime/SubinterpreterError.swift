/// A Python exception, as it left its interpreter.
public struct PythonException: Sendable, Hashable, CustomStringConvertible {
    /// The exception's qualified type name, e.g. `ValueError` or `json.decoder.JSONDecodeError`.
    public var typeName: String
    /// `str(exception)`.
    public var message: String
    /// The formatted traceback, as `traceback.format_exception` prints it, chained exceptions
    /// included. Frames of this library's own Python and of the import machinery are left out.
    public var traceback: String
    /// Where the exception was raised: its own frames (not those of chained exceptions),
    /// outermost first, without this library's and the import machinery's.
    public var frames: [Frame]

    /// One frame of a traceback.
    public struct Frame: Sendable, Hashable, CustomStringConvertible {
        /// The file name as Python reports it (`<string>`, `<setup>` for code given as text).
        public var filename: String
        public var line: Int
        public var function: String

        public init(filename: String, line: Int, function: String) {
            self.filename = filename
            self.line = line
            self.function = function
        }

        public var description: String { "\(filename), line \(line), in \(function)" }
    }

    public init(typeName: String, message: String, traceback: String, frames: [Frame] = []) {
        self.typeName = typeName
        self.message = message
        self.traceback = traceback
        self.frames = frames
    }

    public var description: String { message.isEmpty ? typeName : "\(typeName): \(message)" }
}

/// An error from this library. Compare `code` to tell the kinds apart; new codes may be added.
public struct SubinterpreterError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case pythonNotFound = "python not found"
            case runtimeFailed = "runtime failed"
            case interpreterCreationFailed = "interpreter creation failed"
            case interpreterClosed = "interpreter closed"
            case pythonException = "python exception"
            case incompatibleExtensionModule = "incompatible extension module"
            case unpicklable = "unpicklable"
            case invalidArgument = "invalid argument"
            case cancelled = "cancelled"
            case timedOut = "timed out"
            case queueTimedOut = "queue timed out"
            case workerProcessDied = "worker process died"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No CPython >= 3.12 with a shared libpython was found, or the one named cannot be used.
        public static let pythonNotFound = Code(.pythonNotFound)
        /// The Python runtime could not start, or was asked to start twice with different settings.
        public static let runtimeFailed = Code(.runtimeFailed)
        /// CPython refused to create a sub-interpreter.
        public static let interpreterCreationFailed = Code(.interpreterCreationFailed)
        /// The interpreter was closed (or is closing) and takes no more work.
        public static let interpreterClosed = Code(.interpreterClosed)
        /// Python code raised; `pythonException` holds it.
        public static let pythonException = Code(.pythonException)
        /// An import was refused because an extension module does not support sub-interpreters;
        /// `moduleName` names it.
        public static let incompatibleExtensionModule = Code(.incompatibleExtensionModule)
        /// A value of a non-native type could not be pickled to leave its interpreter.
        public static let unpicklable = Code(.unpicklable)
        /// An argument was malformed (a function name, a value that cannot convert).
        public static let invalidArgument = Code(.invalidArgument)
        /// The call was cancelled before it finished.
        public static let cancelled = Code(.cancelled)
        /// The call ran past its deadline.
        public static let timedOut = Code(.timedOut)
        /// The call waited in a pool's queue past its `queueTimeout` and never ran (overload).
        public static let queueTimedOut = Code(.queueTimedOut)
        /// A pool's worker process died (a signal, `os._exit`) while it ran the call; its
        /// `pythonException`'s type name is the signal's (`SIGSEGV`), or `WorkerExited`.
        public static let workerProcessDied = Code(.workerProcessDied)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// What happened and what to do next.
    public var message: String
    /// The Python exception behind this error, if one was raised.
    public var pythonException: PythonException?
    /// For `.incompatibleExtensionModule`: the extension module that refused to load.
    public var moduleName: String?

    public init(_ code: Code, _ message: String, pythonException: PythonException? = nil, moduleName: String? = nil) {
        self.code = code
        self.message = message
        self.pythonException = pythonException
        self.moduleName = moduleName
    }

    public var description: String { message }

    /// The message followed by the Python traceback, if there is one.
    public var detailedDescription: String {
        guard let traceback = pythonException?.traceback, !traceback.isEmpty else { return message }
        return message + "\n" + traceback.trimmingSuffixNewlines()
    }
}

extension SubinterpreterError {
    /// The error for a raised Python exception: an import refused by an extension module that
    /// does not support sub-interpreters becomes `.incompatibleExtensionModule`.
    static func raised(_ exception: PythonException, incompatibleModule: String?) -> SubinterpreterError {
        if let module = incompatibleModule {
            return SubinterpreterError(
                .incompatibleExtensionModule,
                "extension module '\(module)' does not support loading in sub-interpreters (CPython: \(exception.message)); "
                    + "it must use multi-phase init and declare per-interpreter GIL support. Run `subinterp check` on your imports.",
                pythonException: exception, moduleName: module)
        }
        return SubinterpreterError(.pythonException, exception.description, pythonException: exception)
    }

    static func closed() -> SubinterpreterError {
        SubinterpreterError(.interpreterClosed, "the interpreter is closed; create a new one to run more code")
    }
}

extension String {
    func trimmingSuffixNewlines() -> String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    /// The text of a C buffer up to its first NUL.
    init(nulTerminated buffer: [CChar]) {
        self = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
