import Foundation
import Testing

@testable import Subinterpreters

@Suite struct LifecycleTests {
    @Test func runtimeReportsTheLoadedPython() throws {
        let runtime = try PythonRuntime.start()
        #expect(runtime.version.hasPrefix("3.1"))
        #expect(runtime.installation.minor >= 12)
        #expect(runtime.installation.library.contains("libpython3.\(runtime.installation.minor)"))
        // Starting again returns the same runtime.
        #expect(try PythonRuntime.start() === runtime)
    }

    /// Starting Python blocks threads of its own, never the concurrency pool's: more starts
    /// than the pool has threads all block at the same moment (each waits at a barrier for all
    /// the others), which blocking on pool threads could never do.
    @Test func startingPythonDoesNotBlockTheConcurrencyPool() async throws {
        #expect(try await PythonRuntime.start() === PythonRuntime.current)
        let count = SystemInfo.cpuCount * 4
        let barrier = Barrier(count)
        let met = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<count {
                group.addTask { try await PythonRuntime.onOwnThread { barrier.arriveAndWait(limit: 30) } }
            }
            var met = 0
            for try await arrived in group where arrived { met += 1 }
            return met
        }
        #expect(met == count, "only \(met) of \(count) blocking starts ran at once")
    }

    @Test func aSecondPythonInOneProcessIsRefused() throws {
        let runtime = try PythonRuntime.start()
        var other = runtime.installation
        other.library = "/elsewhere/libpython3.13.so"
        other.executable = "/elsewhere/python3.13"
        let error = #expect(throws: SubinterpreterError.self) { try PythonRuntime.start(other) }
        #expect(error?.code == .runtimeFailed)
    }

    @Test func cancelledCallThatHasNotStartedIsSkipped() async throws {
        let interpreter = try await Interpreter()
        let gate = PythonQueue(), started = PythonQueue()
        try await interpreter.prepareMain(["gate": .queue(gate), "started": .queue(started), "ran": []])
        let blocker = Task { try await interpreter.exec("started.put(1)\ngate.get()") }
        _ = try await started.get(timeout: .seconds(30))  // the interpreter is busy: what follows queues
        let queued = Task { try await interpreter.exec("ran.append(1)") }
        queued.cancel()
        try await gate.put(.none)  // the interpreter goes on, and finds the queued work cancelled
        let error = await #expect(throws: SubinterpreterError.self) { try await queued.value }
        #expect(error?.code == .cancelled)
        try await blocker.value
        #expect(try await interpreter.eval("ran") == [])
        await interpreter.close()
    }
}

@Suite struct ModuleCheckTests {
    @Test func reportsOkIncompatibleAndError() async throws {
        let runtime = try await PythonRuntime.start()
        let results = try await ModuleCheck.run(["json", "_testsinglephase", "no_such_module_xyz"], runtime: runtime)
        #expect(results.map(\.module) == ["json", "_testsinglephase", "no_such_module_xyz"])
        #expect(results[0].outcome == .ok)
        guard case .incompatible(let name, let message) = results[1].outcome else {
            Issue.record("expected incompatible, got \(results[1].outcome)")
            return
        }
        #expect(name == "_testsinglephase")
        #expect(message.contains("does not support loading in subinterpreters"))
        guard case .error(let exception) = results[2].outcome else {
            Issue.record("expected error, got \(results[2].outcome)")
            return
        }
        #expect(exception.typeName == "ModuleNotFoundError")
    }
}

@Suite struct InstallationTests {
    @Test func findsASupportedSharedPython() throws {
        let installation = try PythonInstallation.find(environment: ProcessInfo.processInfo.environment.filter { $0.key != "SUBINTERP_PYTHON" })
        #expect(installation.major == 3 && installation.minor >= 12)
        #expect(FileManager.default.fileExists(atPath: installation.library))
    }

    @Test func explicitPathThatDoesNotExistSaysWhatToDo() {
        let error = #expect(throws: SubinterpreterError.self) { try PythonInstallation.find(explicit: "/no/such/python3.13") }
        #expect(error?.code == .pythonNotFound)
        #expect(error?.message.contains("does not exist") == true)
    }

    @Test func environmentVariableIsHonoured() {
        let error = #expect(throws: SubinterpreterError.self) {
            try PythonInstallation.find(environment: ["SUBINTERP_PYTHON": "/no/such/python"])
        }
        #expect(error?.message.contains("SUBINTERP_PYTHON") == true)
    }

    @Test func pythonOlderThan312IsRefusedWithItsVersion() throws {
        let old = ["/usr/bin/python3.11", "/usr/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try #require(old != nil, "no older system Python on this machine")
        let error = #expect(throws: SubinterpreterError.self) { try PythonInstallation.find(explicit: old) }
        #expect(error?.message.contains("3.12 or 3.13") == true)
    }

    @Test func virtualEnvironmentIsRecognised() throws {
        let base = try PythonInstallation.find()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-venv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("bin"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let baseBin = (base.executable as NSString).deletingLastPathComponent
        try "home = \(baseBin)\ninclude-system-site-packages = false\nversion = 3.\(base.minor).0\n"
            .write(to: directory.appendingPathComponent("pyvenv.cfg"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory.appendingPathComponent("bin/python").path, withDestinationPath: base.executable)
        let found = try PythonInstallation.find(explicit: directory.path)
        #expect(found.virtualEnvironment == directory.standardizedFileURL.path)
        #expect(found.library == base.library)
    }
}

/// Threads wait until `count` of them arrived (or a limit in seconds passes: then false).
final class Barrier: @unchecked Sendable {
    // Safe: `arrived` is guarded by `condition`. NSCondition: the threads must block.
    private let condition = NSCondition()
    private let count: Int
    private var arrived = 0

    init(_ count: Int) { self.count = count }

    func arriveAndWait(limit: Double) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        arrived += 1
        condition.broadcast()
        let deadline = Date(timeIntervalSinceNow: limit)
        while arrived < count {
            if !condition.wait(until: deadline) { return arrived >= count }
        }
        return true
    }
}
