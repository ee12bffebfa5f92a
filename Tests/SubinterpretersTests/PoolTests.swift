import Foundation
import Testing

@testable import Subinterpreters

@Suite struct PoolTests {
    @Test func callsRunOnWorkersWithSetup() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: "import math\nfactor = 10"))
        #expect(try await pool.call("math.sqrt", 16.0) == 4.0)
        #expect(try await pool.withWorker { try $0.eval("factor * 2").value } == 20)
        let indices = try await withThrowingTaskGroup(of: PythonValue.self) { group in
            for _ in 0..<20 {
                group.addTask { try await pool.call("subinterp.worker_index") }
            }
            var seen = Set<PythonValue>()
            for try await index in group { seen.insert(index) }
            return seen
        }
        #expect(indices.isSubset(of: [0, 1]))
        await pool.shutdown()
    }

    @Test func timeoutInterruptsABusyLoopAndTheWorkerKeepsServing() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: """
            import time
            caught = []
            def spin():
                try:
                    while True:
                        pass
                except BaseException as error:
                    caught.append(type(error).__name__)
                    raise
            """))
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: SubinterpreterError.self) { try await pool.call("spin", timeout: .milliseconds(200)) }
        #expect(error?.code == .timedOut)
        #expect(clock.now - start < .seconds(5))
        #expect(try await pool.call("len", "abcd") == 4)
        #expect(try await pool.withWorker { try $0.eval("caught").value } == ["CancelledError"])
        await pool.shutdown()
    }
}
