import CPython
import Foundation
import Subinterpreters

/// The entry point CPython calls when a plain Python process imports `subinterp._core`, the
/// native core of the pip-installed `subinterp` package (this library, renamed by the package's
/// build backend). It attaches the library to the running Python and returns the module's
/// definition (multi-phase init): the same `subinterp._core` the `subinterp` command puts into its
/// interpreters, with the executor's pools behind it.
@_cdecl("PyInit__core")
public func initializeCoreModule() -> OpaquePointer? {
    let directory = cpy_package_binary_directory().map { String(cString: $0) }
    do {
        _ = try PythonRuntime.attach(packageDirectory: directory)
    } catch {
        let message = (error as? SubinterpreterError)?.message ?? "\(error)"
        guard cpy_version() != 0 else {
            // Without the C API there is no way to raise a Python exception; say it on stderr, and
            // the import fails with "initialization of _core failed without raising an exception".
            FileHandle.standardError.write(Data("subinterp: cannot load into this Python: \(message)\n".utf8))
            return nil
        }
        cpy_PyErr_SetString(cpy_exc_import_error(), "subinterp cannot load into this Python: \(message)")
        return nil
    }
    return cpy_PyModuleDef_Init(cpy_module_definition())
}
