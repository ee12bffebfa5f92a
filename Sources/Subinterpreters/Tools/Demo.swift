import Foundation

/// The built-in first job: one CPU-bound pure-Python workload run three ways, so the gain of
/// one GIL per interpreter shows in seconds. What `subinterp demo` prints.
package enum Demo {
    package struct Report: Sendable {
        package var workers: Int
        package var tasks: Int
        package var fibonacci: Int
        /// Wall time of all tasks on one interpreter.
        package var oneInterpreter: Duration
        /// Wall time with the tasks split over `workers` interpreters.
        package var manyInterpreters: Duration
        /// Wall time with the tasks split over `workers` threads of one interpreter (one GIL).
        package var manyThreads: Duration
        /// Mean time to create one interpreter.
        package var creation: Duration
        /// Resident memory added per idle interpreter, if measurable.
        package var residentBytesPerInterpreter: Int?
    }

    static let workload = """
        import time as _time

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        def run_tasks(count, n):
            for _ in range(count):
                fib(n)

        def run_threads(workers, count, n):
            import threading
            share = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
            threads = [threading.Thread(target=run_tasks, args=(s, n)) for s in share]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        """

    /// Runs `tasks` calls of `fib(fibonacci)` on 1 interpreter, on `workers` interpreters, and on
    /// `workers` threads of one interpreter.
    package static func run(workers: Int, tasks: Int, fibonacci: Int = 25, runtime: PythonRuntime) async throws -> Report {
        guard workers >= 1, tasks >= 1, (1...35).contains(fibonacci) else {
            throw SubinterpreterError(.invalidArgument, "workers and tasks must be at least 1, and fib between 1 and 35")
        }
        let clock = ContinuousClock()
        let before = SystemInfo.residentBytes()
        var interpreters: [Interpreter] = []
        let created = try await clock.measure {
            for index in 0..<workers {
                interpreters.append(try await Interpreter(runtime: runtime, options: InterpreterOptions(workerIndex: index, workerCount: workers)))
            }
        }
        let after = SystemInfo.residentBytes()
        do {
            for interpreter in interpreters { try await interpreter.exec(workload, filename: "<demo>") }
            let n = PythonValue(fibonacci)
            let one = try await clock.measure {
                _ = try await interpreters[0].call("run_tasks", PythonValue(tasks), n)
            }
            let many = try await clock.measure {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, interpreter) in interpreters.enumerated() {
                        let share = tasks / workers + (index < tasks % workers ? 1 : 0)
                        group.addTask { _ = try await interpreter.call("run_tasks", PythonValue(share), n) }
                    }
                    try await group.waitForAll()
                }
            }
            let threads = try await clock.measure {
                _ = try await interpreters[0].call("run_threads", PythonValue(workers), PythonValue(tasks), n)
            }
            for interpreter in interpreters { await interpreter.close() }
            var perInterpreter: Int?
            if let before, let after { perInterpreter = max(0, after - before) / workers }
            return Report(
                workers: workers, tasks: tasks, fibonacci: fibonacci, oneInterpreter: one, manyInterpreters: many,
                manyThreads: threads, creation: created / workers, residentBytesPerInterpreter: perInterpreter)
        } catch {
            for interpreter in interpreters { await interpreter.close() }
            throw error
        }
    }
}
