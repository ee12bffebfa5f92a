import Foundation
import Testing

/// The `subinterp` package as the interpreters of the `subinterp` command see it. The package as
/// pip installs it is tested from Python (Tests/python, run by scripts/python-tests after
/// `swift test` in scripts/test, the one test command).
@Suite struct PythonPackageTests {
    /// `import subinterp` inside `subinterp run` is the same package as in a plain Python: its
    /// executor runs nested pools, and the script's own functions reach the workers.
    @Test func scriptsRunBySubinterpRunUseTheExecutorAndChannels() throws {
        let script = try CLI.script("""
            import subinterp
            from subinterp import InterpreterPoolExecutor

            def square(x):
                return x * x

            if __name__ == "__main__":
                queue = subinterp.queue(f"results-{subinterp.worker_index()}")
                with InterpreterPoolExecutor(max_workers=2) as pool:
                    squares = list(pool.map(square, range(5)))
                    pool.submit(queue.put, sum(squares)).result()
                print(subinterp.worker_index(), squares, queue.get(timeout=60), subinterp._core.__name__)
            """)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let result = try CLI.run(["run", "-n", "2", script])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init).sorted()
        #expect(lines == ["0 [0, 1, 4, 9, 16] 30 subinterp._core", "1 [0, 1, 4, 9, 16] 30 subinterp._core"])
    }
}
