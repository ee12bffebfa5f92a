import Foundation
import Testing

/// The pip-installable Python package: `scripts/python-tests` builds the wheel, installs it into
/// fresh virtual environments of CPython 3.13 and 3.12, and runs Tests/python with pytest
/// (InterpreterPoolExecutor, channels from Python, and CPython's own executor tests on 3.13),
/// without Swift on PATH. Run here so that `swift test` stays the one command for every test.
@Suite struct PythonPackageTests {
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
