import Subinterpreters

/// An app that does not load, told as one line: what was loaded, the exception, and the
/// innermost frame of the user's own code (`could not load app:app: RuntimeError: no database
/// configured (app.py, line 12, in connect)`), never our frames or importlib's. The traceback,
/// the user's frames only, stays in the error for `--log-level debug` (`traceback(of:app:)`).
package enum AppLoadError {
    package static func wrap(app: String, _ error: SubinterpreterError) -> SubinterpreterError {
        if error.code == .incompatibleExtensionModule, let module = error.moduleName {
            return SubinterpreterError(
                .incompatibleExtensionModule,
                "\(app) cannot run in a sub-interpreter: extension module '\(module)' does not support loading in subinterpreters "
                    + "(it needs multi-phase init and per-interpreter GIL support). Check your imports with `subinterp check`.",
                pythonException: error.pythonException, moduleName: module)
        }
        guard error.pythonException != nil else { return error }
        return SubinterpreterError(
            error.code, "could not load \(app): \(LoadFailure(error, loading: app).detail)",
            pythonException: error.pythonException, moduleName: error.moduleName)
    }

    /// The traceback of a load failure, the user's frames only; empty when there is none.
    package static func traceback(of error: SubinterpreterError, app: String) -> String {
        LoadFailure(error, loading: app).traceback
    }
}
