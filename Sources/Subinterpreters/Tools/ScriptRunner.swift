import Foundation

/// Runs one script as `__main__` in several isolated interpreters at once: `subinterp run`.
///
/// Each interpreter gets `sys.argv = [script, *arguments]`, the script's directory first on
/// `sys.path`, and `subinterp.worker_index()` / `subinterp.worker_count()` telling it which of
/// the `count` copies it is.
package enum ScriptRunner {
    package struct Outcome: Sendable {
        /// The copy's index, 0-based.
        package var index: Int
        /// The script's exit status: 0, the code of `SystemExit`, or 1 for an uncaught exception.
        package var status: Int32
        /// The uncaught exception (or an error creating the interpreter), if any.
        package var error: SubinterpreterError?
    }

    /// Runs `script` in `count` interpreters concurrently and returns each one's outcome, by index.
    package static func run(script: String, arguments: [String] = [], count: Int, runtime: PythonRuntime) async throws -> [Outcome] {
        guard count >= 1 else {
            throw SubinterpreterError(.invalidArgument, "the number of interpreters must be at least 1 (got \(count))")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: script, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw SubinterpreterError(.invalidArgument, "no such script: \(script); give the path of a Python file")
        }
        let absolute = URL(fileURLWithPath: script).standardizedFileURL.path
        let directory = (absolute as NSString).deletingLastPathComponent
        return await withTaskGroup(of: Outcome.self) { group in
            for index in 0..<count {
                group.addTask {
                    await runOne(script: script, absolute: absolute, directory: directory, arguments: arguments,
                                 index: index, count: count, runtime: runtime)
                }
            }
            var outcomes: [Outcome] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes.sorted { $0.index < $1.index }
        }
    }

    private static func runOne(
        script: String, absolute: String, directory: String, arguments: [String], index: Int, count: Int, runtime: PythonRuntime
    ) async -> Outcome {
        let options = InterpreterOptions(workerIndex: index, workerCount: count, path: [directory], argv: [script] + arguments)
        let interpreter: Interpreter
        do {
            interpreter = try await Interpreter(runtime: runtime, options: options)
        } catch {
            return Outcome(index: index, status: 1, error: error as? SubinterpreterError
                ?? SubinterpreterError(.interpreterCreationFailed, "\(error)"))
        }
        var outcome = Outcome(index: index, status: 0, error: nil)
        do {
            let status = try await interpreter.call("subinterp._run_path", .string(absolute))
            outcome.status = Int32(truncatingIfNeeded: status.intValue ?? 1)
        } catch let error as SubinterpreterError {
            outcome = Outcome(index: index, status: 1, error: error)
        } catch {
            outcome = Outcome(index: index, status: 1, error: SubinterpreterError(.runtimeFailed, "\(error)"))
        }
        await interpreter.close()
        return outcome
    }
}
