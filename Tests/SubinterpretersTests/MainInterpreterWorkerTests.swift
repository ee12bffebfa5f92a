import Foundation
import Testing

@testable import Subinterpreters

/// Workers of `InterpreterKind.main`: the process's main interpreter, entered from a thread of
/// the worker's own, where extension modules that refuse sub-interpreters load.
@Suite(.serialized) struct MainInterpreterWorkerTests {
    @Test func anExtensionModuleThatRefusesSubInterpretersLoadsInTheMainInterpreter() async throws {
        let isolated = try await Interpreter()
        let refused = await #expect(throws: SubinterpreterError.self) { try await isolated.exec("import _testsinglephase") }
        #expect(refused?.code == .incompatibleExtensionModule)
        await isolated.close()

        let main = try await Interpreter(options: InterpreterOptions(kind: .main))
        try await main.exec("import _testsinglephase, datetime")
        #expect(try await main.eval("_testsinglephase.__name__") == "_testsinglephase")
        // The host refuses C datetime only in isolated interpreters; here it is the real one.
        #expect(try await main.eval("type(datetime.date.today()).__module__ + ':' + str('_datetime' in __import__('sys').modules)") == "datetime:True")
        #expect(main.id == 0)
        #expect(try await main.call("subinterp.worker_count") == 1)
        await main.close()
    }

    @Test func closingAMainInterpreterWorkerLeavesTheMainInterpreterRunning() async throws {
        let first = try await Interpreter(options: InterpreterOptions(kind: .main))
        try await first.exec("import sys\nsys.left_by_first_worker = 42")
        await first.close()
        // Another worker enters the same interpreter: what the first left is there.
        let second = try await Interpreter(options: InterpreterOptions(kind: .main))
        #expect(try await second.eval("__import__('sys').left_by_first_worker") == 42)
        try await second.exec("del __import__('sys').left_by_first_worker")
        await second.close()
    }

    /// Each worker entering the main interpreter runs the bootstrap, which installs the
    /// `subinterp` package's finder there: once, not once more per worker.
    @Test func mainInterpreterWorkersShareOnePackageFinder() async throws {
        let finders = "sum(type(f).__module__ == 'subinterp._importer' for f in __import__('sys').meta_path)"
        for _ in 0..<3 {
            let worker = try await Interpreter(options: InterpreterOptions(kind: .main))
            #expect(try await worker.eval(finders) == 1)
            await worker.close()
        }
    }

    @Test func aPoolOfMainInterpreterWorkersInterruptsCodePastItsDeadline() async throws {
        var configuration = InterpreterPool.Configuration(workers: 1, setup: "def spin():\n    while True: pass\ndef square(x): return x * x")
        configuration.interpreterKind = .main
        let pool = try await InterpreterPool(configuration: configuration)
        let error = await #expect(throws: SubinterpreterError.self) { try await pool.call("spin", timeout: .milliseconds(200)) }
        #expect(error?.code == .timedOut)
        // The worker serves on, and what raised in it was subinterp.CancelledError.
        #expect(try await pool.call("square", 7) == 49)
        #expect(try await pool.call("subinterp.worker_index") == 0)
        await pool.shutdown()
    }
}
