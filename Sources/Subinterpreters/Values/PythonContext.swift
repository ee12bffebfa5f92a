import BigInt
import CPython
import Foundation
import Synchronization

/// Access to one interpreter's Python objects, valid only inside a closure the interpreter runs
/// on its own thread (`Interpreter.withPython`). Not `Sendable`: it cannot leave that closure.
public final class PythonContext {
    /// The thread that owns this interpreter; every use is checked against it.
    let thread: pthread_t
    private var helpers: Helpers?
    /// False once the interpreter ends; a `PythonObject` outliving it must not touch Python.
    private(set) var isAlive = true

    /// Objects fetched once per interpreter (owned references), released before it ends.
    private struct Helpers {
        let module: OpaquePointer
        let describe: OpaquePointer
        let resolve: OpaquePointer
        let pickleDumps: OpaquePointer
        let pickleLoads: OpaquePointer
        let cancelledType: OpaquePointer
        let mainDict: OpaquePointer
    }

    init(thread: pthread_t) {
        self.thread = thread
    }

    func assertOnThread() {
        precondition(pthread_equal(pthread_self(), thread) != 0, "Python objects of an interpreter used off its thread")
    }

    /// Runs the bootstrap and caches the helpers. Called once, on the interpreter's thread.
    /// `isolated` is false in the main interpreter, where extension modules need no refusing.
    func bootstrap(isolated: Bool = true) throws {
        assertOnThread()
        // This binary's `subinterp._core` and the package's Python layer, before anything imports them.
        guard cpy_package_install() == 0 else { throw takeErrorWithoutHelpers() }
        guard let main = cpy_PyImport_AddModule("__main__") else { throw takeError() }  // borrowed
        let mainDict = cpy_PyModule_GetDict(main)!
        cpy_incref(mainDict)  // held even if user code removes __main__ from sys.modules
        let code = try bootstrapCode()
        let globals = try own(cpy_PyDict_New())
        defer { cpy_decref(globals) }
        if let builtinsModule = cpy_PyImport_ImportModule("builtins") {
            _ = cpy_PyDict_SetItemString(globals, "__builtins__", builtinsModule)
            cpy_decref(builtinsModule)
        }
        let name = try own(string: "_subinterp_bootstrap")
        _ = cpy_PyDict_SetItemString(globals, "__name__", name)
        cpy_decref(name)
        let flag = try own(cpy_PyBool_FromLong(isolated ? 1 : 0))
        _ = cpy_PyDict_SetItemString(globals, "_ISOLATED", flag)
        cpy_decref(flag)
        let result = cpy_PyEval_EvalCode(code, globals, globals)
        cpy_decref(code)
        guard let result else { throw takeErrorWithoutHelpers() }
        cpy_decref(result)
        let module = try own(cpy_PyImport_ImportModule("subinterp"))
        func attribute(_ name: String) throws -> OpaquePointer { try own(cpy_PyObject_GetAttrString(module, name)) }
        helpers = Helpers(
            module: module, describe: try attribute("_describe"), resolve: try attribute("_resolve"),
            pickleDumps: try attribute("_pickle_dumps"), pickleLoads: try attribute("_pickle_loads"),
            cancelledType: try attribute("CancelledError"), mainDict: mainDict)
    }

    /// The compiled bootstrap. Compiling it takes a few milliseconds of every interpreter's start,
    /// so the first interpreter marshals the code object and later ones load that (code objects
    /// cannot be shared between interpreters; their marshalled bytes can).
    private func bootstrapCode() throws -> OpaquePointer {
        if let cached = Self.marshalledBootstrap.withLock({ $0 }) {
            let code = cached.withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { cpy_PyMarshal_ReadObjectFromString($0.baseAddress, $0.count) }
            }
            if let code { return code }
            cpy_PyErr_Clear()
        }
        let code = try compile(Bootstrap.source, filename: "<subinterp bootstrap>", mode: .file)
        if let data = cpy_PyMarshal_WriteObjectToString(code, 4) {
            var buffer: UnsafeMutablePointer<CChar>?
            var length = 0
            if cpy_PyBytes_AsStringAndSize(data, &buffer, &length) == 0, let buffer {
                let bytes = Array(UnsafeRawBufferPointer(start: buffer, count: length))
                Self.marshalledBootstrap.withLock { $0 = bytes }
            }
            cpy_decref(data)
        }
        cpy_PyErr_Clear()
        return code
    }

    private static let marshalledBootstrap = Mutex<[UInt8]?>(nil)

    /// Drains line-buffered output and drops cached objects; the interpreter is about to end.
    func tearDown() {
        assertOnThread()
        if let helpers {
            if let beforeEnd = cpy_PyObject_GetAttrString(helpers.module, "_before_end") {
                cpy_xdecref(callRaw(beforeEnd, []))
                cpy_decref(beforeEnd)
            }
            cpy_PyErr_Clear()
            for object in [helpers.describe, helpers.resolve, helpers.pickleDumps, helpers.pickleLoads, helpers.cancelledType, helpers.module, helpers.mainDict] {
                cpy_decref(object)
            }
        }
        helpers = nil
        isAlive = false
    }

    /// Whether the interpreter can still run code: its helpers exist and a trivial evaluation works.
    func isHealthy() -> Bool {
        guard helpers != nil, cpy_PyErr_Occurred() == nil else { return false }
        guard let value = try? eval("1 + 1").value else {
            cpy_PyErr_Clear()
            return false
        }
        return value == 2
    }

    /// `subinterp.CancelledError` of this interpreter (borrowed; alive until `tearDown`).
    var cancelledType: OpaquePointer? { helpers?.cancelledType }

    private var h: Helpers {
        guard let helpers else { preconditionFailure("interpreter used before its bootstrap") }
        return helpers
    }

    // MARK: - Public API

    /// Runs `source` as statements in `__main__`. `filename` appears in tracebacks.
    /// The corresponding C API is `Py_CompileString` + `PyEval_EvalCode`.
    public func exec(_ source: String, filename: String = "<string>") throws {
        assertOnThread()
        let code = try compile(source, filename: filename, mode: .file)
        defer { cpy_decref(code) }
        let result = try own(cpy_PyEval_EvalCode(code, h.mainDict, h.mainDict))
        cpy_decref(result)
    }

    /// Evaluates an expression in `__main__`.
    public func eval(_ expression: String) throws -> PythonObject {
        assertOnThread()
        let code = try compile(expression, filename: "<string>", mode: .eval)
        defer { cpy_decref(code) }
        return PythonObject(owning: try own(cpy_PyEval_EvalCode(code, h.mainDict, h.mainDict)), context: self)
    }

    /// Imports a module. The corresponding C API is `PyImport_ImportModule`.
    public func `import`(_ name: String) throws -> PythonObject {
        assertOnThread()
        return PythonObject(owning: try own(cpy_PyImport_ImportModule(name)), context: self)
    }

    /// The object named by `"package.module.function"`, `"package.module:attr.path"`, or a
    /// global of `__main__` (then a builtin) when the name has no dot.
    public func resolve(_ name: String) throws -> PythonObject {
        assertOnThread()
        return PythonObject(owning: try resolveRaw(name), context: self)
    }

    /// Sets globals of `__main__`.
    public func setMain(_ values: [String: PythonValue]) throws {
        assertOnThread()
        for (name, value) in values {
            let object = try toPython(value)
            defer { cpy_decref(object) }
            guard cpy_PyDict_SetItemString(h.mainDict, name, object) == 0 else { throw takeError() }
        }
    }

    /// A global of `__main__`, or nil if it is not set.
    public func mainGlobal(_ name: String) throws -> PythonValue? {
        assertOnThread()
        let key = try own(string: name)
        defer { cpy_decref(key) }
        guard let object = cpy_PyDict_GetItemWithError(h.mainDict, key) else {
            if cpy_PyErr_Occurred() != nil { throw takeError() }
            return nil
        }
        cpy_incref(object)  // borrowed from __main__, which code run while converting may change
        defer { cpy_decref(object) }
        return try fromPython(object)
    }

    /// Runs `body` with this interpreter's GIL released, so the interpreter's other threads can
    /// run while this one waits (on a socket's back-pressure, say). `body` must not touch Python.
    /// The corresponding C API is `PyEval_SaveThread` / `PyEval_RestoreThread`.
    public func withGILReleased<T>(_ body: () throws -> T) rethrows -> T {
        assertOnThread()
        let saved = cpy_PyEval_SaveThread()
        defer { cpy_PyEval_RestoreThread(saved) }
        return try body()
    }

    /// A Python object for a value.
    public func object(_ value: PythonValue) throws -> PythonObject {
        assertOnThread()
        return PythonObject(owning: try toPython(value), context: self)
    }

    // MARK: - Internal building blocks (raw references; never leave this thread)

    enum Mode: Int32 {
        case file = 257  // Py_file_input
        case eval = 258  // Py_eval_input
    }

    func compile(_ source: String, filename: String, mode: Mode) throws -> OpaquePointer {
        try own(cpy_Py_CompileString(source, filename, mode.rawValue))
    }

    func resolveRaw(_ name: String) throws -> OpaquePointer {
        let key = try own(string: name)
        defer { cpy_decref(key) }
        // Fast path for a global of __main__ (the common case on hot paths): one dict lookup.
        if !name.utf8.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") }) {
            if let found = cpy_PyDict_GetItemWithError(h.mainDict, key) {
                cpy_incref(found)
                return found
            }
            cpy_PyErr_Clear()
        }
        return try own(callRaw(h.resolve, [key]))
    }

    /// Calls with positional arguments (borrowed) and optional keyword arguments; new reference or nil with an exception set.
    func callRaw(_ callable: OpaquePointer, _ arguments: [OpaquePointer], keywords: [(String, OpaquePointer)] = []) -> OpaquePointer? {
        if keywords.isEmpty {
            return arguments.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: Optional<OpaquePointer>.self) {
                    cpy_PyObject_Vectorcall(callable, $0.baseAddress, arguments.count, nil)
                }
            }
        }
        guard let names = cpy_PyTuple_New(keywords.count) else { return nil }
        defer { cpy_decref(names) }
        for (i, (name, _)) in keywords.enumerated() {
            guard let key = cpy_PyUnicode_FromStringAndSize(name, name.utf8.count) else { return nil }
            _ = cpy_PyTuple_SetItem(names, i, key)
        }
        let all = arguments + keywords.map(\.1)
        return all.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: Optional<OpaquePointer>.self) {
                cpy_PyObject_Vectorcall(callable, $0.baseAddress, arguments.count, names)
            }
        }
    }

    /// Calls a function by name with values, returning a value: the path `Interpreter.call` takes.
    func call(_ name: String, _ arguments: [PythonValue], keywords: [(String, PythonValue)] = []) throws -> PythonValue {
        let function = try resolveRaw(name)
        defer { cpy_decref(function) }
        return try call(function, arguments, keywords: keywords)
    }

    func call(_ function: OpaquePointer, _ arguments: [PythonValue], keywords: [(String, PythonValue)] = []) throws -> PythonValue {
        var objects: [OpaquePointer] = []
        objects.reserveCapacity(arguments.count + keywords.count)
        defer { objects.forEach { cpy_decref($0) } }
        for argument in arguments { objects.append(try toPython(argument)) }
        var keywordObjects: [(String, OpaquePointer)] = []
        for (name, value) in keywords {
            let object = try toPython(value)
            objects.append(object)
            keywordObjects.append((name, object))
        }
        let result = try own(callRaw(function, Array(objects.prefix(arguments.count)), keywords: keywordObjects))
        defer { cpy_decref(result) }
        return try fromPython(result)
    }

    /// Drops a reference taken from one of the raw calls above.
    func release(_ object: OpaquePointer) { cpy_decref(object) }

    /// `pointer` if non-nil, else the pending Python exception as an error.
    func own(_ pointer: OpaquePointer?) throws -> OpaquePointer {
        guard let pointer else { throw takeError() }
        return pointer
    }

    func own(string: String) throws -> OpaquePointer {
        try own(cpy_PyUnicode_FromStringAndSize(string, string.utf8.count))
    }

    // MARK: - Errors

    /// Takes the pending Python exception (there must be one) and turns it into an error.
    func takeError() -> SubinterpreterError {
        guard let exception = cpy_PyErr_GetRaisedException() else {
            return SubinterpreterError(.runtimeFailed, "a Python call failed without setting an exception")
        }
        defer { cpy_decref(exception) }
        guard let describe = helpers?.describe, let description = callRaw(describe, [exception]) else {
            cpy_PyErr_Clear()
            return fallbackError(exception)
        }
        defer { cpy_decref(description) }
        func item(_ i: Int) -> String? {
            guard let object = cpy_PyTuple_GetItem(description, i), cpy_type(object) == cpy_unicode_type() else { return nil }
            return string(object)
        }
        var frames: [PythonException.Frame] = []
        if let list = cpy_PyTuple_GetItem(description, 4), cpy_type(list) == cpy_list_type() {
            for i in 0..<cpy_PyList_Size(list) {
                guard let frame = cpy_PyList_GetItem(list, i), cpy_type(frame) == cpy_tuple_type(),
                    let file = cpy_PyTuple_GetItem(frame, 0).flatMap(string), let line = cpy_PyTuple_GetItem(frame, 1),
                    let function = cpy_PyTuple_GetItem(frame, 2).flatMap(string)
                else { continue }
                frames.append(PythonException.Frame(filename: file, line: cpy_PyLong_AsLong(line), function: function))
            }
        }
        cpy_PyErr_Clear()
        let python = PythonException(typeName: item(0) ?? "Exception", message: item(1) ?? "", traceback: item(2) ?? "", frames: frames)
        return .raised(python, incompatibleModule: item(3))
    }

    private func takeErrorWithoutHelpers() -> SubinterpreterError {
        guard let exception = cpy_PyErr_GetRaisedException() else {
            return SubinterpreterError(.runtimeFailed, "a Python call failed without setting an exception")
        }
        defer { cpy_decref(exception) }
        return fallbackError(exception)
    }

    private func fallbackError(_ exception: OpaquePointer) -> SubinterpreterError {
        var typeName = "Exception"
        if let name = cpy_PyType_GetQualName(cpy_type(exception)) {
            typeName = string(name) ?? typeName
            cpy_decref(name)
        }
        var message = ""
        if let text = cpy_PyObject_Str(exception) {
            message = string(text) ?? ""
            cpy_decref(text)
        }
        cpy_PyErr_Clear()
        return .raised(PythonException(typeName: typeName, message: message, traceback: ""), incompatibleModule: nil)
    }

    /// The UTF-8 text of a `str` (lone surrogates escaped), or nil for another type.
    func string(_ object: OpaquePointer) -> String? {
        var size = 0
        guard let data = cpy_PyUnicode_AsUTF8AndSize(object, &size) else {
            cpy_PyErr_Clear()
            return nil
        }
        return data.withMemoryRebound(to: UInt8.self, capacity: size) {
            String(decoding: UnsafeBufferPointer(start: $0, count: size), as: UTF8.self)
        }
    }

    // MARK: - Values

    /// A new reference for `value`.
    func toPython(_ value: PythonValue, depth: Int = 0) throws -> OpaquePointer {
        guard depth < 512 else {
            throw SubinterpreterError(.invalidArgument, "value nested more than 512 levels deep; flatten it or pass it pickled")
        }
        switch value {
        case .none:
            return cpy_new_none()
        case .bool(let b):
            return try own(cpy_PyBool_FromLong(b ? 1 : 0))
        case .int(let n):
            if let small = Int64(exactly: n) { return try own(cpy_PyLong_FromLongLong(small)) }
            let text = String(n, radix: 16)
            return try own(cpy_PyLong_FromString(text, nil, 16))
        case .float(let d):
            return try own(cpy_PyFloat_FromDouble(d))
        case .string(let s):
            var s = s
            return try s.withUTF8 { try own(cpy_PyUnicode_DecodeUTF8(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count, "surrogatepass")) }
        case .bytes(let b), .pickled(let b):
            let bytes = try b.withUnsafeBufferPointer {
                try own(cpy_PyBytes_FromStringAndSize(UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count))
            }
            guard case .pickled = value else { return bytes }
            defer { cpy_decref(bytes) }
            return try own(callRaw(h.pickleLoads, [bytes]))
        case .queue(let queue):
            return try own(cpy_host_wrap_queue(queue.handle))
        case .buffer(let buffer):
            return try own(cpy_host_wrap_buffer(buffer.handle))
        case .list(let items):
            let list = try own(cpy_PyList_New(items.count))
            for (i, item) in items.enumerated() {
                do { _ = cpy_PyList_SetItem(list, i, try toPython(item, depth: depth + 1)) } catch {
                    cpy_decref(list)
                    throw error
                }
            }
            return list
        case .tuple(let items):
            let tuple = try own(cpy_PyTuple_New(items.count))
            for (i, item) in items.enumerated() {
                do { _ = cpy_PyTuple_SetItem(tuple, i, try toPython(item, depth: depth + 1)) } catch {
                    cpy_decref(tuple)
                    throw error
                }
            }
            return tuple
        case .dict(let items):
            let dict = try own(cpy_PyDict_New())
            do {
                for (key, item) in items {
                    let k = try toPython(key, depth: depth + 1)
                    defer { cpy_decref(k) }
                    let v = try toPython(item, depth: depth + 1)
                    defer { cpy_decref(v) }
                    guard cpy_PyDict_SetItem(dict, k, v) == 0 else { throw takeError() }
                }
            } catch {
                cpy_decref(dict)
                throw error
            }
            return dict
        }
    }

    /// The value of a (borrowed) object: native for the exact basic types, pickled otherwise.
    func fromPython(_ object: OpaquePointer, depth: Int = 0) throws -> PythonValue {
        guard depth < 512 else {
            throw SubinterpreterError(
                .invalidArgument, "value nested more than 512 levels deep (or it contains itself); it cannot leave the interpreter")
        }
        let type = cpy_type(object)
        if object == cpy_none() { return .none }
        if type == cpy_bool_type() { return .bool(object == cpy_true()) }
        if type == cpy_long_type() {
            var overflow: Int32 = 0
            let small = cpy_PyLong_AsLongLongAndOverflow(object, &overflow)
            if overflow == 0 { return .int(BigInt(small)) }
            let text = try own(cpy_PyNumber_ToBase(object, 16))
            defer { cpy_decref(text) }
            guard let hex = string(text) else { throw takeError() }
            // "0x…" or "-0x…"
            let negative = hex.hasPrefix("-")
            guard let magnitude = BigInt(hex.dropFirst(negative ? 3 : 2), radix: 16) else {
                throw SubinterpreterError(.invalidArgument, "could not read the int \(hex)")
            }
            return .int(negative ? -magnitude : magnitude)
        }
        if type == cpy_float_type() { return .float(cpy_PyFloat_AsDouble(object)) }
        if type == cpy_unicode_type() {
            var size = 0
            if let data = cpy_PyUnicode_AsUTF8AndSize(object, &size) {
                return data.withMemoryRebound(to: UInt8.self, capacity: size) {
                    .string(String(decoding: UnsafeBufferPointer(start: $0, count: size), as: UTF8.self))
                }
            }
            // A str with lone surrogates has no UTF-8 form: let it cross pickled.
            cpy_PyErr_Clear()
        } else if type == cpy_bytes_type() {
            return .bytes(try bytes(object))
        } else if type == cpy_list_type() || type == cpy_tuple_type() {
            // Converting an element can run Python code (pickling calls `__reduce__`) that changes
            // or frees this list: walk a snapshot that holds every element (ENCODING.md,
            // "Snapshots"). A tuple cannot change, and whoever passed it holds it.
            let isList = type == cpy_list_type()
            let snapshot = isList ? try own(cpy_PyList_AsTuple(object)) : object
            defer { if isList { cpy_decref(snapshot) } }
            let count = cpy_PyTuple_Size(snapshot)
            var items: [PythonValue] = []
            items.reserveCapacity(count)
            for i in 0..<count { items.append(try fromPython(cpy_PyTuple_GetItem(snapshot, i)!, depth: depth + 1)) }
            return isList ? .list(items) : .tuple(items)
        } else if type == cpy_dict_type() {
            let pairs = try own(cpy_PyDict_Items(object))  // a snapshot of (key, value) tuples, as above
            defer { cpy_decref(pairs) }
            let count = cpy_PyList_Size(pairs)
            var items: [(key: PythonValue, value: PythonValue)] = []
            items.reserveCapacity(count)
            for i in 0..<count {
                let pair = cpy_PyList_GetItem(pairs, i)!
                items.append((try fromPython(cpy_PyTuple_GetItem(pair, 0)!, depth: depth + 1),
                              try fromPython(cpy_PyTuple_GetItem(pair, 1)!, depth: depth + 1)))
            }
            return .dict(items)
        }
        if let queue = cpy_host_queue_of(object) { return .queue(PythonQueue(owning: queue)) }
        if let buffer = cpy_host_buffer_of(object) { return .buffer(SharedBuffer(owning: buffer)) }
        let pickled = try own(callRaw(h.pickleDumps, [object]))
        defer { cpy_decref(pickled) }
        return .pickled(try bytes(pickled))
    }

    private func bytes(_ object: OpaquePointer) throws -> [UInt8] {
        var buffer: UnsafeMutablePointer<CChar>?
        var length = 0
        guard cpy_PyBytes_AsStringAndSize(object, &buffer, &length) == 0, let buffer else { throw takeError() }
        return Array(UnsafeRawBufferPointer(start: buffer, count: length))
    }
}

/// A reference to a Python object, usable only on its interpreter's thread, inside the closure
/// that produced it. Not `Sendable`.
public final class PythonObject {
    let pointer: OpaquePointer
    let context: PythonContext

    init(owning pointer: OpaquePointer, context: PythonContext) {
        self.pointer = pointer
        self.context = context
    }

    deinit {
        context.assertOnThread()
        if context.isAlive { cpy_decref(pointer) }
    }

    /// `getattr(self, name)`.
    public func attribute(_ name: String) throws -> PythonObject {
        context.assertOnThread()
        return PythonObject(owning: try context.own(cpy_PyObject_GetAttrString(pointer, name)), context: context)
    }

    /// Calls the object with `Encodable` Swift values (see `Interpreter.call`); the result stays
    /// a Python object.
    public func call<each Argument: Encodable>(
        _ arguments: repeat each Argument, keywords: KeyValuePairs<String, any Encodable> = [:]
    ) throws -> PythonObject {
        try call(arguments: try PythonValue.arguments(repeat each arguments), keywords: try PythonValue.keywords(keywords))
    }

    /// Calls the object with values; the result stays a Python object.
    public func call(_ arguments: PythonValue..., keywords: KeyValuePairs<String, PythonValue> = [:]) throws -> PythonObject {
        try call(arguments: arguments, keywords: keywords.map { ($0.key, $0.value) })
    }

    /// Calls the object with an array of positional arguments.
    public func call(arguments: [PythonValue], keywords: [(String, PythonValue)] = []) throws -> PythonObject {
        context.assertOnThread()
        var objects: [OpaquePointer] = []
        defer { objects.forEach { cpy_decref($0) } }
        for argument in arguments { objects.append(try context.toPython(argument)) }
        var named: [(String, OpaquePointer)] = []
        for (name, value) in keywords {
            let object = try context.toPython(value)
            objects.append(object)
            named.append((name, object))
        }
        let result = context.callRaw(pointer, Array(objects.prefix(arguments.count)), keywords: named)
        return PythonObject(owning: try context.own(result), context: context)
    }

    /// The object as a value that can leave the interpreter.
    public var value: PythonValue {
        get throws {
            context.assertOnThread()
            return try context.fromPython(pointer)
        }
    }

    /// `str(self)`.
    public var text: String {
        get throws {
            context.assertOnThread()
            let s = try context.own(cpy_PyObject_Str(pointer))
            defer { cpy_decref(s) }
            return context.string(s) ?? ""
        }
    }
}
