import Foundation
import Testing

@testable import Subinterpreters

@Suite struct InterpreterTests {
    @Test func execEvalAndCallShareMainGlobals() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("def greet(name, punctuation='!'): return f'hello {name}{punctuation}'\ncount = 41")
        #expect(try await interpreter.eval("count + 1") == 42)
        #expect(try await interpreter.call("greet", "swift") == "hello swift!")
        #expect(try await interpreter.call("greet", "swift", keywords: ["punctuation": "?"]) == "hello swift?")
        #expect(try await interpreter.call("math.gcd", 12, 18) == 6)
        #expect(try await interpreter.call("os.path:join", "a", "b") == "a/b")
        await interpreter.close()
    }

    @Test func prepareMainSeedsGlobals() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.prepareMain(["numbers": [1, 2, 3], "label": "total"])
        #expect(try await interpreter.eval("f'{label}={sum(numbers)}'") == "total=6")
        await interpreter.close()
    }

    @Test func globalsAreIsolatedBetweenInterpreters() async throws {
        let first = try await Interpreter()
        let second = try await Interpreter()
        try await first.exec("import sys\nsecret = 'first'\nsys.shared_marker = 1")
        #expect(try await first.eval("secret") == "first")
        #expect(try await second.eval("'secret' in globals()") == false)
        #expect(try await second.eval("hasattr(__import__('sys'), 'shared_marker')") == false)
        #expect(first.id != second.id)
        await first.close()
        await second.close()
    }

    @Test func closedInterpreterRefusesWork() async throws {
        let interpreter = try await Interpreter()
        await interpreter.close()
        await interpreter.close()
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.eval("1") }
        #expect(error?.code == .interpreterClosed)
    }

    @Test func closeWaitsForRunningCode() async throws {
        let interpreter = try await Interpreter()
        let started = PythonQueue()
        try await interpreter.prepareMain(["started": .queue(started)])
        try await interpreter.exec("import time\ndone = []\ndef slow():\n    started.put(1)\n    time.sleep(0.3)\n    done.append(1)\n    return 'finished'")
        async let result = interpreter.call("slow")
        _ = try await started.get(timeout: .seconds(30))  // running: close must wait for it
        await interpreter.close()
        #expect(try await result == "finished")
    }

    @Test func workRunsInSubmissionOrder() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("seen = []")
        for i in 0..<50 { try await interpreter.exec("seen.append(\(i))") }
        #expect(try await interpreter.eval("seen") == .list((0..<50).map { PythonValue($0) }))
        await interpreter.close()
    }

    @Test func withPythonKeepsObjectsOnTheInterpreterThread() async throws {
        let interpreter = try await Interpreter()
        let value = try await interpreter.withPython { python -> PythonValue in
            let collections = try python.import("collections")
            let counter = try collections.attribute("Counter").call("abracadabra")
            return try counter.attribute("most_common").call(1).value
        }
        #expect(value == .list([.tuple(["a", 5])]))
        await interpreter.close()
    }

    @Test func workerIndexAndCountReachPython() async throws {
        let interpreter = try await Interpreter(options: InterpreterOptions(workerIndex: 3, workerCount: 8))
        #expect(try await interpreter.eval("(__import__('subinterp').worker_index(), __import__('subinterp').worker_count())") == .tuple([3, 8]))
        await interpreter.close()
    }

    @Test func isolatedConfigurationRefusesForkAndDaemonThreads() async throws {
        let interpreter = try await Interpreter()
        let fork = await #expect(throws: SubinterpreterError.self) { try await interpreter.exec("import os\nos.fork()") }
        #expect(fork?.pythonException?.typeName == "RuntimeError")
        let daemon = await #expect(throws: SubinterpreterError.self) {
            try await interpreter.exec("import threading\nthreading.Thread(target=print, daemon=True).start()")
        }
        #expect(daemon?.pythonException?.message.contains("daemon") == true)
        // Ordinary threads work and are joined.
        try await interpreter.exec("import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\nt.start(); t.join()")
        #expect(try await interpreter.eval("out") == [1])
        await interpreter.close()
    }
}
