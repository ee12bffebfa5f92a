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
        let error = await #expect(throws: SubinterpreterError.self) { try await pool.call("spin", timeout: .milliseconds(200)) }
        #expect(error?.code == .timedOut)
        #expect(try await pool.call("len", "abcd") == 4)
        #expect(try await pool.withWorker { try $0.eval("caught").value } == ["CancelledError"])
        await pool.shutdown()
    }
}

/// An input sequence that counts how many items were pulled from it.
struct CountingInputs: AsyncSequence, Sendable {
    typealias Element = PythonValue
    let count: Int
    let pulled: Counter

    final class Counter: Sendable {
        let value = Mutex(0)
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var next = 0
        let count: Int
        let pulled: Counter
        mutating func next() async -> PythonValue? {
            guard next < count else { return nil }
            defer { next += 1 }
            pulled.value.withLock { $0 += 1 }
            return PythonValue(next)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(count: count, pulled: pulled) }
}

import Synchronization

@Suite struct PoolMapTests {
    @Test func mapKeepsInputOrderAndSpreadsWithStar() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            import time, random
            def slow_square(x):
                time.sleep(random.random() / 500)
                return x * x
            """))
        var squares: [Int] = []
        for try await value in pool.map("slow_square", (0..<300).map { PythonValue($0) }) {
            squares.append(value.intValue!)
        }
        #expect(squares == (0..<300).map { $0 * $0 })
        var powers: [PythonValue] = []
        for try await value in pool.map("pow", [[2, 10], [3, 3]], star: true) { powers.append(value) }
        #expect(powers == [1024, 27])
        var unordered = Set<Int>()
        for try await value in pool.map("slow_square", (0..<50).map { PythonValue($0) }, ordered: false) {
            unordered.insert(value.intValue!)
        }
        #expect(unordered == Set((0..<50).map { $0 * $0 }))
        await pool.shutdown()
    }

    @Test func mapRespectsItsInFlightBound() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2))
        let pulled = CountingInputs.Counter()
        var consumed = 0
        var worst = 0
        for try await _ in pool.map("abs", CountingInputs(count: 200, pulled: pulled), chunkSize: .fixed(1), maxInFlight: 3) {
            consumed += 1
            worst = max(worst, pulled.value.withLock { $0 } - consumed)
            if consumed % 20 == 0 { await Task.yield() }  // let the workers run ahead if they could
        }
        #expect(consumed == 200)
        #expect(worst <= 3, "read \(worst) inputs ahead of the consumer with at most 3 in flight")
        await pool.shutdown()
    }

    @Test func mapResultsKeepsEveryFailureInItsPlace() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            def check(x):
                if x % 3 == 0:
                    raise ValueError(f"bad {x}")
                return x
            """))
        var items: [PoolMapItem] = []
        for try await item in pool.mapResults("check", (1...9).map { PythonValue($0) }) { items.append(item) }
        #expect(items.map(\.index) == Array(0..<9))
        for item in items {
            let input = item.index + 1
            switch item.result {
            case .success(let value): #expect(input % 3 != 0 && value == PythonValue(input))
            case .failure(let error):
                #expect(input % 3 == 0)
                #expect(error.pythonException?.message == "bad \(input)")
            }
        }
        // `map` throws the first failure.
        await #expect(throws: SubinterpreterError.self) {
            for try await _ in pool.map("check", [1, 2, 3, 4]) {}
        }
        await pool.shutdown()
    }

    @Test func mapWithTimeoutInterruptsOnlyTheSlowItem() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            def maybe_spin(x):
                while x == 2:
                    pass
                return x
            """))
        var results: [Int: Result<PythonValue, SubinterpreterError>] = [:]
        for try await item in pool.mapResults("maybe_spin", [0, 1, 2, 3, 4], timeout: .milliseconds(300)) {
            results[item.index] = item.result
        }
        #expect(try results[0]?.get() == 0)
        #expect(try results[4]?.get() == 4)
        guard case .failure(let error) = results[2] else {
            Issue.record("the spinning item should have timed out")
            return
        }
        #expect(error.code == .timedOut)
        await pool.shutdown()
    }
}

@Suite struct PoolLifecycleTests {
    @Test func cancellingAQueuedCallDropsItAndARunningCallInterruptsIt() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: """
            ran = []
            caught = []
            def spin(started):
                try:
                    started.put("running")
                    while True:
                        pass
                except BaseException as error:
                    caught.append(type(error).__name__)
                    raise
            def record(x):
                ran.append(x)
            """))
        let started = PythonQueue()
        let running = try pool.submit("spin", arguments: [.queue(started)])
        #expect(try await started.get(timeout: .seconds(30)) == "running")
        let queued = try pool.submit("record", arguments: ["queued"])
        queued.cancel()
        let queuedError = await #expect(throws: SubinterpreterError.self) { try await queued.value }
        #expect(queuedError?.code == .cancelled)
        let task = Task { try await running.value }
        task.cancel()
        let runningError = await #expect(throws: SubinterpreterError.self) { try await task.value }
        #expect(runningError?.code == .cancelled)
        // The worker is free again, the running call was interrupted inside its code, and the
        // dropped call never ran.
        _ = try await pool.call("record", "after")
        #expect(try await pool.withWorker { try $0.eval("ran").value } == ["after"])
        #expect(try await pool.withWorker { try $0.eval("caught").value } == ["CancelledError"])
        let stats = pool.statistics
        #expect(stats.cancelled == 2)
        await pool.shutdown()
    }

    @Test func recyclingReplacesWorkersWithoutLosingCalls() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: "import os\nmarker = object()", maxTasksPerWorker: 5))
        let values = try await withThrowingTaskGroup(of: PythonValue.self) { group in
            for i in 0..<60 { group.addTask { try await pool.call("abs", PythonValue(-i)) } }
            var all: [PythonValue] = []
            for try await value in group { all.append(value) }
            return all
        }
        #expect(Set(values) == Set((0..<60).map { PythonValue($0) }))
        let stats = pool.statistics
        #expect(stats.completed == 60)
        #expect(stats.recycled >= 10)
        await pool.shutdown()
    }

    @Test func setupFailureStopsThePoolWithItsTraceback() async throws {
        let error = await #expect(throws: SubinterpreterError.self) {
            _ = try await InterpreterPool(configuration: .init(workers: 2, setup: "import json\nraise RuntimeError('setup broke')"))
        }
        #expect(error?.message.contains("setup broke") == true)
        #expect(error?.pythonException?.traceback.contains("File \"<setup>\", line 2") == true)
    }

    @Test func shutdownFinishesPendingWork() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: "import time"))
        let tasks = try (0..<5).map { _ in try pool.submit("time.sleep", arguments: [0.02]) }
        await pool.shutdown(cancelPending: false)
        for task in tasks { #expect(try await task.value == .none) }
        let late = #expect(throws: SubinterpreterError.self) { try pool.submit("len", arguments: ["x"]) }
        #expect(late?.code == .interpreterClosed)
    }

    @Test func shutdownCanCancelPendingAndRunningWork() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: "def spin(started):\n    started.put(1)\n    while True: pass"))
        let started = PythonQueue()
        let running = try pool.submit("spin", arguments: [.queue(started)])
        _ = try await started.get(timeout: .seconds(30))
        let queued = try (0..<3).map { _ in try pool.submit("len", arguments: ["x"]) }
        await pool.shutdown(cancelPending: true)
        for task in queued + [running] {
            let error = await #expect(throws: SubinterpreterError.self) { try await task.value }
            #expect(error?.code == .cancelled)
        }
    }

    @Test func aFailingCallLeavesItsWorkerHealthy() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1))
        await #expect(throws: SubinterpreterError.self) { try await pool.call("int", "not a number") }
        #expect(try await pool.call("int", "42") == 42)
        #expect(pool.statistics.failed == 1)
        #expect(pool.statistics.recycled == 0)
    }
}
