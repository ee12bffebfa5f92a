import Foundation
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

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
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
        try process.run()
        process.waitUntilExit()
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

        try "0.01\n5\n".write(toFile: input, atomically: true, encoding: .utf8)
        let slow = try CLI.run(["map", "time:sleep", "--timeout", "0.3", "--input", input])
        #expect(slow.status == 1)
        let lines = slow.stdout.split(separator: "\n")
        #expect(lines.first == "null")
        #expect(lines.last?.contains("\"type\":\"timed out\"") == true)
    }

    @Test func unknownFunctionIsOneLine() throws {
        let result = try CLI.run(["map", "no_such_module_xyz:f", "--input", "/dev/null"])
        #expect(result.status == 1)
        #expect(result.stderr == "subinterp: cannot load no_such_module_xyz:f: No module named 'no_such_module_xyz'\n")
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
