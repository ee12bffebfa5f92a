import Foundation
import Subinterpreters

/// `--interface`: how `subinterp serve` calls the app.
public enum AppInterface: String, Sendable, CaseIterable {
    case wsgi, asgi

    /// What `--interface auto` picks for `app`: ASGI for an async callable (a coroutine
    /// function, or an object whose `__call__` is one), as uvicorn decides; WSGI otherwise.
    ///
    /// The app is imported once to tell, in a separate Python process when the runtime's
    /// Python can be run: CPython keeps most of the memory of an isolated interpreter that has
    /// ended (an app's imports become immortal objects), so a throwaway interpreter here would
    /// leave the server a worker's worth of memory bigger for good. If that process cannot tell
    /// (the app does not import there), the app is imported in a fresh interpreter, which is then
    /// closed; that throws with the app's traceback if it does not load. With `kind: .main` (a
    /// worker process of `--isolation processes`) the app is imported in this process's main
    /// interpreter straight away: its worker imports the app there anyway, so that costs nothing.
    package static func detect(
        app: String, path: [String], runtime: PythonRuntime, kind: InterpreterKind = .isolated
    ) async throws -> AppInterface {
        if kind == .isolated, let found = await detectInProcess(app: app, path: path, python: runtime.installation.executable) {
            return found
        }
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

    /// Asks `python` (a process of its own) what the app is; nil if it cannot tell.
    private static func detectInProcess(app: String, path: [String], python: String) async -> AppInterface? {
        guard FileManager.default.isExecutableFile(atPath: python) else { return nil }
        let directories = path.map(AppLoader.pythonString).joined(separator: ", ")
        // An app may `import subinterp`: the package itself where this Python has it installed,
        // else an empty stand-in lets the app import here; one that uses the module while it
        // loads cannot, and is asked in-process instead.
        let script = "import sys, types\nsys.path[:0] = [\(directories)]\n"
            + "try:\n    import subinterp\nexcept ImportError:\n"
            + "    sys.modules['subinterp'] = types.ModuleType('subinterp')\n" + ASGIAdapter.loader(app: app)
            + "\nsys.stdout.flush()\nprint('\\n' + _app_interface(_app))\n"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script]
        process.standardInput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let output = Pipe()
        process.standardOutput = output
        return await withCheckedContinuation { (continuation: CheckedContinuation<AppInterface?, Never>) in
            // Read on a thread of its own: the child may print more than a pipe holds.
            let reader = Thread {
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                let last = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init)
                continuation.resume(returning: process.terminationStatus == 0 ? last.flatMap(AppInterface.init(rawValue:)) : nil)
            }
            do {
                try process.run()
            } catch {
                continuation.resume(returning: nil)
                return
            }
            reader.start()
        }
    }
}
