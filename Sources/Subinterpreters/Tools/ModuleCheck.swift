/// Whether modules can be imported in an isolated sub-interpreter: what `subinterp check` reports.
package enum ModuleCheck {
    package enum Outcome: Sendable, Equatable {
        /// The module imported.
        case ok
        /// An extension module refused to load in a sub-interpreter.
        case incompatible(extensionModule: String, message: String)
        /// The import raised something else.
        case error(PythonException)
    }

    package struct Result: Sendable, Equatable {
        package var module: String
        package var outcome: Outcome
    }

    /// Imports each module in a fresh isolated interpreter, at most `parallelism` at a time.
    /// Results come back in the order of `modules`.
    package static func run(_ modules: [String], runtime: PythonRuntime, parallelism: Int = SystemInfo.cpuCount) async throws -> [Result] {
        var results = [Result?](repeating: nil, count: modules.count)
        try await withThrowingTaskGroup(of: (Int, Result).self) { group in
            var next = 0
            func startNext() {
                guard next < modules.count else { return }
                let index = next
                next += 1
                group.addTask { (index, try await check(modules[index], runtime: runtime)) }
            }
            for _ in 0..<max(1, parallelism) { startNext() }
            while let (index, result) = try await group.next() {
                results[index] = result
                startNext()
            }
        }
        return results.map { $0! }
    }

    /// Imports one module in a fresh isolated interpreter.
    package static func check(_ module: String, runtime: PythonRuntime) async throws -> Result {
        let interpreter = try await Interpreter(runtime: runtime)
        let imported: Swift.Result<Void, any Error>
        do {
            imported = .success(try await interpreter.withPython { _ = try $0.import(module) })
        } catch {
            imported = .failure(error)
        }
        await interpreter.close()
        do {
            try imported.get()
            return Result(module: module, outcome: .ok)
        } catch let error as SubinterpreterError {
            if error.code == .incompatibleExtensionModule, let name = error.moduleName {
                // CPython's own words: a package's ImportError around it (numpy's is 20 lines) would
                // break the one-line-per-module output.
                let message = "module \(name) does not support loading in subinterpreters"
                return Result(module: module, outcome: .incompatible(extensionModule: name, message: message))
            }
            if let exception = error.pythonException {
                return Result(module: module, outcome: .error(exception))
            }
            throw error
        }
    }
}
