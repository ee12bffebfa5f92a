import Dispatch
import Foundation
import Synchronization
import Testing

@testable import Subinterpreters

/// The `subinterp` executable, run as a user would run it.
struct CLI {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("subinterp")
    }

    /// Runs the executable to the end. `limit` is a failure bound: a process still running then
    /// is killed and the test fails.
    static func run(
        _ arguments: [String], environment: [String: String] = [:], limit: Duration = .seconds(300),
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("out"), err = directory.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        if exited.wait(timeout: .now() + limit.timeInterval) == .timedOut {
            Issue.record("subinterp \(arguments.joined(separator: " ")) still ran after \(limit); killed it", sourceLocation: sourceLocation)
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
            exited.wait()
        }
        return Result(
            status: process.terminationStatus,
            stdout: try String(contentsOf: out, encoding: .utf8),
            stderr: try String(contentsOf: err, encoding: .utf8))
    }

    static func script(_ source: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-\(UUID().uuidString).py").path
        try source.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

@Suite struct CommandLineTests {
    @Test func infoNamesPythonAndLibrary() throws {
        let result = try CLI.run(["info", "--json"])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect((object?["python"] as? String)?.hasPrefix("3.1") == true)
        #expect((object?["libpython"] as? String)?.contains("libpython3.1") == true)
        #expect(object?["cpus"] as? Int == ProcessInfo.processInfo.activeProcessorCount)
    }

    @Test func checkPrintsOneLinePerModuleAndFailsIfAnyIsNotOk() throws {
        let good = try CLI.run(["check", "json", "re"])
        #expect(good.status == 0)
        #expect(good.stdout.split(separator: "\n").count == 2)
        let mixed = try CLI.run(["check", "--json", "json", "_testsinglephase", "no_such_module_xyz"])
        #expect(mixed.status == 1)
        let lines = mixed.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String] }
        #expect(lines.map { $0?["status"] } == ["ok", "incompatible", "error"])
        #expect(lines[1]?["extension_module"] == "_testsinglephase")
        #expect(lines[2]?["type"] == "ModuleNotFoundError")
    }

    @Test func runGivesEachCopyItsIndexAndArguments() throws {
        let path = try CLI.script("""
            import sys, subinterp
            print(f"copy {subinterp.worker_index()} of {subinterp.worker_count()} args {sys.argv[1:]}")
            """)
        let result = try CLI.run(["run", "-n", "3", path, "--flag", "value"])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n").map(String.init).sorted()
        #expect(lines == (0..<3).map { "copy \($0) of 3 args ['--flag', 'value']" })
    }

    @Test func runOutputLinesNeverInterleave() throws {
        let path = try CLI.script("""
            import subinterp
            i = subinterp.worker_index()
            for n in range(200):
                print(str(i) * 3000, end="")
                print(f"|{i}")
            """)
        let result = try CLI.run(["run", "-n", "4", path])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 800)
        for line in lines {
            let digit = line.last!
            #expect(line == Substring(String(repeating: String(digit), count: 3000) + "|" + String(digit)))
        }
    }

    @Test func runFailureIsLabelledAndExitsNonZero() throws {
        let path = try CLI.script("""
            import subinterp
            if subinterp.worker_index() == 1:
                raise ValueError("copy one fails")
            print("fine")
            """)
        let result = try CLI.run(["run", "-n", "2", path])
        #expect(result.status != 0)
        #expect(result.stdout == "fine\n")
        #expect(result.stderr.contains("[1] ValueError: copy one fails"))
        #expect(result.stderr.contains("1 of 2 interpreters failed"))
        #expect(!result.stderr.contains("[0]"))
    }

    @Test func runPassesSystemExitStatus() throws {
        let path = try CLI.script("import sys\nsys.exit(3)")
        #expect(try CLI.run(["run", path]).status == 3)
        let clean = try CLI.script("import sys\nsys.exit()")
        #expect(try CLI.run(["run", "-n", "2", clean]).status == 0)
    }

    /// A last line without its newline gets one, so the next copy's output starts a line of its own.
    @Test func runNeverGluesAFinalPartialLineToAnotherCopysOutput() throws {
        let path = try CLI.script("""
            import subinterp, sys
            i = subinterp.worker_index()
            for n in range(50):
                print(f"line-{i}-{n}")
            sys.stdout.write(f"tail-without-newline-{i}")
            """)
        let result = try CLI.run(["run", "-n", "4", path])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "")  // the output ends with a newline
        for line in lines.dropLast() {
            #expect(line.wholeMatch(of: /(line-\d-\d+|tail-without-newline-\d)/) != nil, "glued: \(line)")
        }
        #expect(lines.filter { $0.hasPrefix("tail-without-newline-") }.count == 4)
    }

    @Test func negativeNumbersAndBadPathsSayWhatIsWrong() throws {
        let negative = try CLI.run(["run", "-n", "-1", "x.py"])
        #expect(negative.status != 0)
        #expect(negative.stderr.contains("-n must be at least 1; -1 is negative"))
        #expect(negative.stderr.contains("Usage: subinterp run"))

        let timeout = try CLI.run(["map", "m:f", "--timeout", "-1"])
        #expect(timeout.stderr.contains("--timeout must be a positive number of seconds; -1 is negative"))
        #expect(timeout.stderr.contains("Usage: subinterp map"))

        let workers = try CLI.run(["demo", "--workers", "0"])
        #expect(workers.stderr.contains("--workers must be at least 1"))
        #expect(workers.stderr.contains("Usage: subinterp demo"))

        let level = try CLI.run(["map", "m:f", "--log-level", "bogus"])
        #expect(level.stderr.contains("--log-level must be one of"))
        #expect(level.stderr.contains("Usage: subinterp map"))

        let output = try CLI.run(["map", "json:dumps", "--input", "/dev/null", "--output", "/nonexistent/dir/out"])
        #expect(output.status == 1)
        #expect(output.stderr == "subinterp: cannot write --output /nonexistent/dir/out: no such directory: /nonexistent/dir\n")

        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md").path
        let python = try CLI.run(["info", "--python", readme])
        #expect(python.status == 1)
        #expect(python.stderr == "subinterp: --python: \(readme) is not a Python executable; name a python executable or a virtual environment\n")
    }

    @Test func badInputGetsOneClearLine() throws {
        let missing = try CLI.run(["run", "/no/such/script.py"])
        #expect(missing.status != 0)
        #expect(missing.stderr == "subinterp: no such script: /no/such/script.py; give the path of a Python file\n")

        let flag = try CLI.run(["run", "--no-such-flag", "x.py"])
        #expect(flag.status != 0)
        #expect(flag.stderr.contains("Unknown option '--no-such-flag'"))

        let count = try CLI.run(["run", "-n", "0", "x.py"])
        #expect(count.status != 0)
        #expect(count.stderr.contains("-n must be at least 1"))

        let python = try CLI.run(["info", "--python", "/no/such/python"])
        #expect(python.status == 1)
        #expect(python.stderr.split(separator: "\n").count == 1)
        #expect(python.stderr.contains("does not exist"))

        let syntax = try CLI.run(["run", "-n", "2", try CLI.script("def broken(:\n")])
        #expect(syntax.status == 1)
        #expect(syntax.stderr.contains("[0,1] SyntaxError"))
        #expect(!syntax.stderr.contains("Fatal error"))
    }

    /// After interpreters imported asyncio and threading, the process still exits cleanly,
    /// on every supported Python this machine has.
    @Test(arguments: ["3.12", "3.13"])
    func exitIsCleanAfterAsyncioAndThreads(version: String) throws {
        let candidates = PythonInstallation.candidateExecutables(environment: ProcessInfo.processInfo.environment)
            .filter { $0.hasSuffix("python\(version)") }
        guard let python = candidates.first(where: { (try? PythonInstallation.at($0)) != nil }) else { return }
        let path = try CLI.script("""
            import asyncio, threading, datetime, json
            async def main():
                await asyncio.sleep(0.01)
                return datetime.datetime.now().isoformat()
            stamp = asyncio.run(main())
            t = threading.Thread(target=json.dumps, args=({"a": 1},))
            t.start(); t.join()
            print("done")
            """)
        let result = try CLI.run(["run", "--python", python, "-n", "3", path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "done\ndone\ndone\n")
        #expect(result.stderr.isEmpty)
    }

    @Test func demoPrintsTheThreeTimes() throws {
        let result = try CLI.run(["demo", "--tasks", "4", "--fib", "18"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("1 interpreter"))
        #expect(result.stdout.contains("interpreters (one GIL each)"))
        #expect(result.stdout.contains("threads in 1 interpreter"))
    }
}

@Suite struct MapCommandTests {
    static let module = """
        def double(x):
            if x == 3:
                raise ValueError("three is bad")
            return x * 2
        def add(a, b):
            return a + b
        """

    private func moduleDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-map-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.module.write(to: directory.appendingPathComponent("mapmod.py"), atomically: true, encoding: .utf8)
        return directory.path
    }

    @Test func writesResultsInOrderWithErrorRecordsInPlace() throws {
        let directory = try moduleDirectory()
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        let output = (directory as NSString).appendingPathComponent("out.jsonl")
        try "1\n2\n3\nnot json\n12345678901234567890123\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(
            ["map", "mapmod:double", "--input", input, "--output", output, "-j", "2"], environment: ["PYTHONPATH": directory])
        #expect(result.status == 1)
        #expect(result.stderr.contains("2 of 5 lines failed"))
        let lines = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(lines[0] == "2" && lines[1] == "4" && lines[4] == "24691357802469135780246")
        let three = try JSONSerialization.jsonObject(with: Data(lines[2].utf8)) as? [String: [String: Any]]
        #expect(three?["error"]?["line"] as? Int == 3)
        #expect(three?["error"]?["type"] as? String == "ValueError")
        #expect((three?["error"]?["traceback"] as? String)?.contains("three is bad") == true)
        let malformed = try JSONSerialization.jsonObject(with: Data(lines[3].utf8)) as? [String: [String: Any]]
        #expect(malformed?["error"]?["line"] as? Int == 4)
        #expect((malformed?["error"]?["message"] as? String)?.hasPrefix("malformed JSON input") == true)
    }

    @Test func starSpreadsArraysAndTimeoutInterrupts() throws {
        let directory = try moduleDirectory()
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "[1, 2]\n[3, 4]\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(["map", "mapmod:add", "--star", "--input", input], environment: ["PYTHONPATH": directory])
        #expect(result.status == 0)
        #expect(result.stdout == "3\n7\n")
        #expect(result.stderr.isEmpty)

        try "0.01\n[2]\n".write(toFile: input, atomically: true, encoding: .utf8)
        try "import time\ndef spin(x):\n    while True:\n        time.sleep(0.001)\n".write(
            toFile: (directory as NSString).appendingPathComponent("spinmod.py"), atomically: true, encoding: .utf8)
        let slow = try CLI.run(["map", "spinmod:spin", "--timeout", "0.3", "--input", input], environment: ["PYTHONPATH": directory])
        #expect(slow.status == 1)
        let lines = slow.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        for line in lines {
            let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: [String: Any]]
            #expect(record?["error"]?["type"] as? String == "TimeoutError")
            #expect((record?["error"]?["message"] as? String)?.contains("--timeout 0.3 s") == true)
        }
    }

    /// A load failure is one line: what failed to load, the exception, the user's own frame.
    /// Never this tool's frames (`<setup>`, the per-line wrapper) or importlib's; the traceback,
    /// filtered the same way, comes with `--log-level debug`. A failing `--setup` is blamed on it.
    @Test func loadFailuresAreOneLineWithTheUsersFrameOnly() throws {
        let directory = try moduleDirectory()
        try "import json\nvalue = json.loads('{}')['missing']\n".write(
            toFile: (directory as NSString).appendingPathComponent("broken.py"), atomically: true, encoding: .utf8)
        let broken = try CLI.run(["map", "broken:f", "--input", "/dev/null"], environment: ["PYTHONPATH": directory])
        #expect(broken.status == 1)
        #expect(broken.stderr.hasPrefix("subinterp: cannot load broken:f: KeyError: 'missing' ("))
        #expect(broken.stderr.contains("broken.py, line 2, in <module>)"))
        #expect(broken.stderr.split(separator: "\n").count == 1)

        let debug = try CLI.run(["map", "broken:f", "--input", "/dev/null", "--log-level", "debug"], environment: ["PYTHONPATH": directory])
        #expect(debug.stderr.contains("Traceback (most recent call last):"))
        #expect(debug.stderr.contains("broken.py\", line 2, in <module>"))
        for hidden in ["<setup>", "<subinterp", "importlib", "_subinterp_map_line"] {
            #expect(!debug.stderr.contains(hidden), "\(hidden) in \(debug.stderr)")
        }

        let setup = try CLI.run(["map", "mapmod:double", "--setup", "import math\nmath.sqrt(-1)", "--input", "/dev/null"],
                                environment: ["PYTHONPATH": directory])
        #expect(setup.status == 1)
        #expect(setup.stderr == "subinterp: the --setup code failed: ValueError: math domain error (line 2 of --setup)\n")
    }

    @Test func errorRecordsShowTheUsersFramesOnly() throws {
        let directory = try moduleDirectory()
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "3\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(["map", "mapmod:double", "--input", input], environment: ["PYTHONPATH": directory])
        let record = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: [String: Any]]
        let traceback = try #require(record?["error"]?["traceback"] as? String)
        #expect(traceback.contains("mapmod.py\", line 3, in double"))
        for hidden in ["<setup>", "<subinterp", "_subinterp_map_line", "importlib"] {
            #expect(!traceback.contains(hidden), "\(hidden) in \(traceback)")
        }
    }

    /// Each result is written, and flushed, as soon as it and every earlier one are ready: the
    /// test sends the next line only after reading the answer to the previous one.
    @Test func mapStreamsEachResultAsItsLineArrives() async throws {
        let directory = try moduleDirectory()
        let process = Process()
        process.executableURL = CLI.executable
        process.arguments = ["map", "mapmod:double", "-j", "2"]
        process.environment = ProcessInfo.processInfo.environment.merging(["PYTHONPATH": directory]) { $1 }
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let lines = LineReaderForTests(output.fileHandleForReading)
        for n in [1, 2, 5, 10] {
            input.fileHandleForWriting.write(Data("\(n)\n".utf8))
            let answer = try await withFailureTimeout(.seconds(60), "the answer to line \(n)") { await lines.nextOnItsOwnThread() }
            guard let answer else {
                process.terminate()  // ends the read the timed-out wait is stuck in
                return
            }
            #expect(answer == "\(n * 2)")
        }
        try input.fileHandleForWriting.close()
        #expect(lines.next() == nil)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// Peak memory does not grow with the input: 400,000 lines take no more than 50,000 do, give or
    /// take allocator noise. (Finished chunks, with their inputs, used to stay referenced by the
    /// pool's queue, hundreds of them at a time.)
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "needs /usr/bin/time to read peak memory"))
    func mapMemoryDoesNotGrowWithTheInput() throws {
        let directory = try moduleDirectory()
        func peak(lines: Int) throws -> Int {
            let input = (directory as NSString).appendingPathComponent("in-\(lines).jsonl")
            var text = ""
            text.reserveCapacity(lines * 72)
            for i in 0..<lines { text += #"{"id": \#(i), "name": "user\#(i)", "tags": ["a", "b"], "score": 0.5}"# + "\n" }
            try text.write(toFile: input, atomically: false, encoding: .utf8)
            let report = (directory as NSString).appendingPathComponent("peak-\(lines)")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/time")
            process.arguments = ["-f", "%M", "-o", report, CLI.executable.path, "map", "json:dumps", "--input", input, "--output", "/dev/null", "-j", "2"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            return Int(try String(contentsOfFile: report, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        let small = try peak(lines: 50_000), large = try peak(lines: 400_000)
        #expect(large - small < 8 * 1024, "peak RSS \(small) KiB for 50,000 lines, \(large) KiB for 400,000")
    }

    /// A call stuck in C past its timeout has its worker abandoned after the grace, and the
    /// process still exits at the end of the input (without finalizing Python), status 1.
    @Test func mapExitsWithAWorkerStuckInC() throws {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("stuck")).path
        try "600\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(["map", "time:sleep", "--timeout", "0.2", "--input", input], limit: .seconds(60))
        #expect(result.status == 1)
        #expect(result.stdout.contains("\"type\":\"TimeoutError\""))
        #expect(result.stderr.contains("abandoned a worker"))
    }

    @Test func unknownFunctionIsOneLine() throws {
        let result = try CLI.run(["map", "no_such_module_xyz:f", "--input", "/dev/null"])
        #expect(result.status == 1)
        #expect(result.stderr == "subinterp: cannot load no_such_module_xyz:f: ModuleNotFoundError: No module named 'no_such_module_xyz'\n")
    }
}

@Suite struct ExampleTests {
    @Test func pipelineExampleDeliversEveryResult() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Examples/pipeline.py").path
        let result = try CLI.run(["run", "-n", "4", example, "2000"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("collector: 2000 results from 2 workers"))
        #expect(result.stdout.contains("correct: True"))
    }
}

/// Lines of a pipe, read as they arrive (blocking the calling thread).
final class LineReaderForTests: @unchecked Sendable {
    // Safe: used by one task at a time.
    private let handle: FileHandle
    private var buffer = Data()

    init(_ handle: FileHandle) { self.handle = handle }

    /// `next()`, blocking a thread of its own rather than one of the concurrency pool.
    func nextOnItsOwnThread() async -> String? {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: self.next()) }.start()
        }
    }

    func next() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                return line
            }
            let more = handle.availableData
            if more.isEmpty { return buffer.isEmpty ? nil : String(decoding: buffer, as: UTF8.self) }
            buffer.append(more)
        }
    }
}
