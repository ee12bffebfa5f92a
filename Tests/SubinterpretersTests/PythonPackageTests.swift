import Foundation
import Testing

/// The pip-installable Python package: `scripts/python-tests` builds the wheel, installs it into
/// fresh virtual environments of CPython 3.13 and 3.12, and runs Tests/python with pytest
/// (InterpreterPoolExecutor, channels from Python, and CPython's own executor tests on 3.13),
/// without Swift on PATH. Run here so that `swift test` stays the one command for every test.
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

    @Test(.timeLimit(.minutes(60))) func pythonPackageTestsPassOnCPython313And312() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-python-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("output")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/python-tests")
        process.currentDirectoryURL = root
        process.standardInput = FileHandle.nullDevice
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        let output = try String(contentsOf: log, encoding: .utf8)
        // pytest's summary lines ("N passed, M skipped in Ts") for each Python, and every failure.
        let summary = output.split(separator: "\n").filter {
            $0.contains(" passed") || $0.contains(" failed") || $0.contains("error") || $0.hasPrefix("FAILED")
                || $0.hasPrefix("ERROR") || $0.hasPrefix("python-tests:")
        }.joined(separator: "\n")
        #expect(process.terminationStatus == 0, "scripts/python-tests failed:\n\(summary)\n\nfull output:\n\(output.suffix(20_000))")
    }
}
