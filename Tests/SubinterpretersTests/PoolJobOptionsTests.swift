import Foundation
import Synchronization
import Testing

@testable import Subinterpreters

/// What a server needs from the pool: a run timeout apart from the wait in the queue, cleanup
/// after every started job, and a stuck worker given up on so capacity returns.
@Suite struct PoolJobOptionsTests {
    /// A one-worker pool and a way to hold its worker busy until released.
    struct HeldPool {
        let pool: InterpreterPool
        let gate = PythonQueue()
        let started = PythonQueue()

        init(_ configuration: InterpreterPool.Configuration = .init(workers: 1), logger: CollectedLog? = nil) async throws {
            pool = try await InterpreterPool(configuration: configuration, logger: logger?.logger)
        }

        /// Occupies the worker; returns once its code runs.
        func hold() async throws -> PoolTask<Void> {
            let (gate, started) = (self.gate, self.started)
            let task = try pool.submit(timeout: nil) { context in
                _ = try context.object(.queue(started)).attribute("put").call("held")
                _ = try context.object(.queue(gate)).attribute("get").call()
            }
            #expect(try await started.get(timeout: .seconds(30)) == "held")
            return task
        }

        func release() async throws { try await gate.put(.none) }
    }

    @Test func aTimeoutThatStartsWithTheJobDoesNotCountTheQueue() async throws {
        let held = try await HeldPool()
        let blocker = try await held.hold()
        let clock = ContinuousClock()
        let submitted = clock.now
        let fromStart = try held.pool.submit(options: .init(timeout: .milliseconds(200), timeoutStart: .start)) { context in
            try context.eval("21 * 2").value
        }
        let fromSubmission = try held.pool.submit(options: .init(timeout: .milliseconds(200))) { context in
            try context.eval("21 * 2").value
        }
        // Let both wait in the queue longer than their timeout: only the second counts that.
        let error = await #expect(throws: SubinterpreterError.self) { try await fromSubmission.value }
        #expect(error?.code == .timedOut)
        #expect(error?.message.contains("never started") == true)
        #expect(clock.now - submitted >= .milliseconds(200))
        try await held.release()
        _ = try await blocker.value
        #expect(try await fromStart.value == 42)
        await held.pool.shutdown()
    }

    @Test func aQueueTimeoutFailsWithItsOwnCodeAndTheJobNeverRuns() async throws {
        let held = try await HeldPool()
        let blocker = try await held.hold()
        let ran = PythonQueue()
        let waiting = try held.pool.submit(options: .init(timeout: .seconds(60), timeoutStart: .start, queueTimeout: .milliseconds(100))) {
            context in _ = try context.object(.queue(ran)).attribute("put").call("ran")
        }
        let error = await #expect(throws: SubinterpreterError.self) { try await waiting.value }
        #expect(error?.code == .queueTimedOut)
        #expect(held.pool.statistics.queueTimedOut == 1)
        #expect(held.pool.statistics.queued == 0)
        try await held.release()
        _ = try await blocker.value
        #expect(try await held.pool.call("len", "after") == 5)  // the worker is past the dropped job
        #expect(ran.count == 0)
        await held.pool.shutdown()
    }

    /// The cleanup runs after every job that started, on the worker, with Python usable: an
    /// interrupt meant for a timed-out job (here one that returned from C straight to Swift,
    /// leaving the exception pending) reaches neither the cleanup nor the next job.
    @Test func cleanupRunsAfterEveryStartedJobAndNoInterruptReachesIt() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: """
            import time, subinterp
            cleaned = []
            def tidy(tag):
                total = 0
                for i in range(20000):   # bytecode: a pending CancelledError would fire here
                    total += i
                cleaned.append(tag)
                subinterp.Queue().put(tag)  # and a cancelled queue wait here
            """))
        func cleanup(_ tag: String) -> @Sendable (PythonContext) -> Void {
            { context in
                do {
                    _ = try context.resolve("tidy").call(tag)
                } catch {
                    Issue.record("the cleanup for \(tag) failed: \(error)")
                }
            }
        }
        #expect(try await pool.submit(options: .init(cleanup: cleanup("ok"))) { try $0.eval("1").value }.value == 1)
        let failing = try pool.submit(options: .init(cleanup: cleanup("raised"))) { try $0.eval("1 / 0").value }
        await #expect(throws: SubinterpreterError.self) { try await failing.value }
        let sleeping = try pool.submit(options: .init(timeout: .milliseconds(50), cleanup: cleanup("timed out"))) { context in
            try context.resolve("time.sleep").call(0.5).value
        }
        let error = await #expect(throws: SubinterpreterError.self) { try await sleeping.value }
        #expect(error?.code == .timedOut)
        #expect(try await pool.call("tidy", "next job") == .none)
        #expect(try await pool.withWorker { try $0.eval("cleaned").value } == ["ok", "raised", "timed out", "next job"])
        await pool.shutdown()
    }

    @Test func theCleanupDoesNotRunForAJobThatNeverStarted() async throws {
        let held = try await HeldPool()
        let blocker = try await held.hold()
        let cleaned = Atomic<Int>(0)
        let queued = try held.pool.submit(options: .init(cleanup: { _ in cleaned.add(1, ordering: .relaxed) })) { _ in 1 }
        queued.cancel()
        await #expect(throws: SubinterpreterError.self) { try await queued.value }
        try await held.release()
        _ = try await blocker.value
        _ = try await held.pool.call("len", "x")
        #expect(cleaned.load(ordering: .relaxed) == 0)
        await held.pool.shutdown()
    }

    /// Code that swallows every interrupt keeps its worker only for the grace: it is interrupted
    /// again, then abandoned and replaced, and the log names the job.
    @Test func aWorkerThatSwallowsInterruptsIsAbandonedAndReplaced() async throws {
        let log = CollectedLog()
        var configuration = InterpreterPool.Configuration(workers: 1, setup: """
            import time
            def stubborn(stop, started):
                # A retry loop that catches BaseException. (CPython raises an interrupt that
                # arrives at a loop's backward jump outside every try of the loop, so the call
                # inside the try is what makes this one swallow them reliably; the signal is
                # inside the try too, in case the first interrupt comes that early.)
                signalled = False
                while not stop.view[0]:
                    try:
                        if not signalled:
                            signalled = True
                            started.put("swallowing")
                        time.sleep(0.005)
                    except BaseException:
                        pass
            """)
        configuration.interruptGrace = .milliseconds(600)
        let held = try await HeldPool(configuration, logger: log)
        let stop = SharedBuffer(size: 1)
        let stubborn = try held.pool.submit(options: .init(timeout: .milliseconds(100), timeoutStart: .start, label: "request 17")) { context in
            try context.resolve("stubborn").call(.buffer(stop), .queue(held.started)).value
        }
        #expect(try await held.started.get(timeout: .seconds(30)) == "swallowing")
        let error = await #expect(throws: SubinterpreterError.self) { try await stubborn.value }
        #expect(error?.code == .timedOut)
        // The replacement serves while the stubborn code still spins in the abandoned interpreter.
        let value = try await withFailureTimeout(.seconds(30), "a call after the abandonment") {
            try await held.pool.call("len", "served")
        }
        #expect(value == 6)
        #expect(held.pool.statistics.abandoned == 1)
        #expect(log.all.contains { $0.contains("abandoned a worker") && $0.contains("request 17") })
        let abandoned = await held.pool.shutdown()
        #expect(abandoned == [InterpreterPool.AbandonedWorker(index: 0, job: "request 17")])
        stop.withUnsafeMutableBytes { $0[0] = 1 }  // let the abandoned interpreter end
    }

    /// Shutdown with a grace period returns although a worker is blocked in C (here `os.read`
    /// on a pipe, which an interrupt cannot break), and names the worker it abandoned.
    @Test func shutdownWithAGracePeriodReturnsDespiteAWorkerStuckInC() async throws {
        var configuration = InterpreterPool.Configuration(workers: 1, setup: "import os")
        configuration.interruptGrace = .milliseconds(300)
        let pool = try await InterpreterPool(configuration: configuration)
        let pipe = BlockingPipe()
        let started = PythonQueue()
        let stuck = try pool.submit(options: .init(label: "reader")) { context in
            _ = try context.object(.queue(started)).attribute("put").call("reading")
            return try context.resolve("os.read").call(pipe.readEnd, 1).value
        }
        #expect(try await started.get(timeout: .seconds(30)) == "reading")
        let abandoned = try await withFailureTimeout(.seconds(30), "shutdown") {
            await pool.shutdown(cancelPending: false, gracePeriod: .milliseconds(200))
        }
        #expect(abandoned == [InterpreterPool.AbandonedWorker(index: 0, job: "reader")])
        let error = await #expect(throws: SubinterpreterError.self) { try await stuck.value }
        #expect(error?.code == .cancelled)
        pipe.release()  // the abandoned interpreter returns and ends
    }
}
