import Subinterpreters

/// `--interface`: how `subinterp serve` calls the app.
public enum AppInterface: String, Sendable, CaseIterable {
    case wsgi, asgi

    /// What `--interface auto` picks for `app`: ASGI for an async callable (a coroutine
    /// function, or an object whose `__call__` is one), as uvicorn decides; WSGI otherwise.
    /// Imports the app once in a fresh interpreter (of `kind`), which is then closed; throws
    /// with the app's traceback if it does not load.
    package static func detect(
        app: String, path: [String], runtime: PythonRuntime, kind: InterpreterKind = .isolated
    ) async throws -> AppInterface {
        let interpreter = try await Interpreter(runtime: runtime, options: InterpreterOptions(path: path, kind: kind))
        do {
            let found = try await interpreter.withPython { python -> String in
                try python.exec(ASGIAdapter.loader(app: app), filename: "<subinterp asgi>")
                return try python.eval("_app_interface(_app)").value.stringValue ?? "wsgi"
            }
            await interpreter.close()
            return AppInterface(rawValue: found) ?? .wsgi
        } catch {
            await interpreter.close()
            throw error
        }
    }
}
