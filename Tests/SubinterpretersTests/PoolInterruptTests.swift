import CPython
import Foundation
import Synchronization
import Testing

@testable import Subinterpreters

/// Interrupts, deadlines, stuck workers and a pool that cannot replace its workers.
@Suite struct PoolInterruptTests {
    /// Python that keeps a core busy until its buffer's first byte is set: other threads then
    /// compete with the pool's, so a thread that wakes another is often preempted right there.
    static let hog = """
        def hog(flag):
            view = flag.view
            while not view[0]:
                pass
        """

    /// A late interrupt must not reach the next job. The window: the interrupter sets the
    /// asynchronous exception and the queue-wait cancellation under the worker's GIL, then
    /// gives the GIL back; a worker waiting for it can finish its job (returning from C
    /// straight to Swift, so no bytecode consumes the exception) before the interrupter records
    /// that it sent something. Here the job's code waits in C until the interrupt's
    /// queue-wait cancellation arrives, so it is always waiting for the GIL at that moment, and
    /// two spinning interpreters make a preemption of the interrupter likely. Each round's next
    /// job runs Python and a queue wait: a stale interrupt would raise CancelledError in it.
    @Test func aLateInterruptNeverReachesTheNextJob() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: """
            import subinterp
            def probe():
                total = 0
                for i in range(5000):
                    total += i
                try:
                    subinterp.Queue().get(timeout=0.001)
                except subinterp.QueueEmpty:
                    return "clean"
            """))
        let flag = SharedBuffer(size: 1)
        let hogs = [try await Interpreter(), try await Interpreter()]
        var spinning: [Task<PythonValue, any Error>] = []
        for hog in hogs {
            try await hog.exec(Self.hog)
            spinning.append(Task { try await hog.call("hog", .buffer(flag)) })
        }
        let never = PythonQueue()
        for round in 0..<150 {
            let task = try pool.submit(timeout: .milliseconds(2)) { context -> Bool in
                let thread = cpy_PyThread_get_thread_ident()
                return context.withGILReleased {
                    // Returns when the interrupt cancels this thread's queue waits.
                    var item: OpaquePointer?
                    while cpy_queue_get(never.handle, &item, 1, 5, thread) != CPY_WAIT_CANCELLED {}
                    return true
                }
            }
            let error = await #expect(throws: SubinterpreterError.self) { try await task.value }
            #expect(error?.code == .timedOut)
            do {
                #expect(try await pool.call("probe") == "clean")
            } catch {
                Issue.record("round \(round): a stale interrupt reached the next job: \(error)")
            }
        }
        flag.withUnsafeMutableBytes { $0[0] = 1 }
        for task in spinning { _ = try await task.value }
        for hog in hogs { await hog.close() }
        await pool.shutdown()
    }

    /// One worker blocked in a C call that keeps its GIL cannot hold up another worker's
    /// deadline. The call (`read` through `ctypes.PyDLL`, which keeps the GIL) blocks until the
    /// test writes to a pipe; its own timeout passes first, so an interrupt for it waits for
    /// that GIL. The other worker's 100 ms timeout must still fire, before the pipe is written.
    @Test(.enabled(if: pythonMinor >= 13, "ctypes does not load in an isolated interpreter on 3.12"))
    func deadlinesFireWhileAnotherWorkerHoldsItsGIL() async throws {
        let started = PythonQueue()
        let pipe = BlockingPipe()
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            import ctypes
            libc = ctypes.PyDLL(None)   # PyDLL calls keep the GIL
            def hold_gil(fd, started):
                started.put("holding")
                buffer = ctypes.create_string_buffer(1)
                libc.read(fd, buffer, 1)
            def spin():
                while True:
                    pass
            """))
        let holder = try pool.submit("hold_gil", arguments: [PythonValue(pipe.readEnd), .queue(started)], timeout: .milliseconds(50))
        #expect(try await started.get(timeout: .seconds(30)) == "holding")
        let held = await #expect(throws: SubinterpreterError.self) { try await holder.value }
        #expect(held?.code == .timedOut)

        // The pipe is written only after this wait, so a timeout seen here fired while the other
        // worker still held its GIL.
        let other = try await withFailureTimeout(.seconds(20), "the other worker's timeout") {
            await #expect(throws: SubinterpreterError.self) { try await pool.call("spin", timeout: .milliseconds(100)) }
        }
        #expect(other??.code == .timedOut)
        pipe.release()
        await pool.shutdown()
    }

    /// A replacement that fails is retried; when it succeeds the queued work runs.
    @Test func aFailedReplacementIsRetried() async throws {
        let (flag, attempts, pool) = try await Self.poolWhoseReplacementsFail(refusals: 2)
        defer { try? FileManager.default.removeItem(atPath: flag) }
        let first = try pool.submit("len", arguments: ["first"])  // the worker retires after this call
        let queued = try pool.submit("len", arguments: ["queued"])  // waits for a replacement
        #expect(try await first.value == 5)
        #expect(try await attempts.get(timeout: .seconds(30)) == "refused")
        #expect(try await attempts.get(timeout: .seconds(30)) == "refused")
        let value = try await withFailureTimeout(.seconds(30), "the queued call") { try await queued.value }
        #expect(value == 6)
        await pool.shutdown()
    }

    /// A pool that cannot get any worker back fails: queued work fails with the reason, new
    /// work is refused with it, and shutdown returns instead of waiting forever.
    @Test func aPoolThatCannotReplaceItsLastWorkerFails() async throws {
        let (flag, _, pool) = try await Self.poolWhoseReplacementsFail(refusals: nil)
        defer { try? FileManager.default.removeItem(atPath: flag) }
        let first = try pool.submit("len", arguments: ["first"])
        let queued = try pool.submit("len", arguments: ["queued"])
        #expect(try await first.value == 5)
        let failure = try await withFailureTimeout(.seconds(60), "the queued call") {
            await #expect(throws: SubinterpreterError.self) { try await queued.value }
        }
        #expect(failure??.code == .interpreterCreationFailed)
        #expect(failure??.message.contains("no worker left") == true)
        let refused = #expect(throws: SubinterpreterError.self) { try pool.submit("len", arguments: ["late"]) }
        #expect(refused?.code == .interpreterCreationFailed)
        _ = try await withFailureTimeout(.seconds(30), "shutdown") { await pool.shutdown(cancelPending: false) }
        #expect(pool.statistics.failed == 1)
    }

    /// A one-worker pool whose worker retires after every call, and whose setup refuses to run
    /// (saying so on a queue) while a flag file exists: the first `refusals` times (counted in
    /// the file), or always if nil.
    static func poolWhoseReplacementsFail(refusals: Int?) async throws -> (flag: String, attempts: PythonQueue, pool: InterpreterPool) {
        let flag = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("refuse")).path
        let name = uniqueName("attempts")
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: """
            import os, subinterp
            if os.path.exists(\(PythonValue.string(flag))):
                with open(\(PythonValue.string(flag))) as file:
                    refused = len(file.read())
                if refused < \(refusals ?? Int.max):
                    with open(\(PythonValue.string(flag)), "a") as file:
                        file.write("x")
                    subinterp.queue(\(PythonValue.string(name))).put("refused")
                    raise RuntimeError("this replacement is refused")
            """, maxTasksPerWorker: 1))
        _ = FileManager.default.createFile(atPath: flag, contents: nil)
        return (flag, PythonQueue.named(name), pool)
    }
}

/// The counters count what a user counts.
@Suite struct PoolStatisticsTests {
    @Test func failedCountsEveryFailingMapInput() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            def check(x):
                if x in (3, 7):
                    raise ValueError(x)
                return x
            """))
        var failures = 0
        for try await item in pool.mapResults("check", (0..<10).map { PythonValue($0) }, chunkSize: .fixed(5)) {
            if case .failure = item.result { failures += 1 }
        }
        #expect(failures == 2)
        let statistics = pool.statistics
        #expect(statistics.failed == 2)
        #expect(statistics.completed == 8)
        await pool.shutdown()
    }

    @Test func queuedLeavesOutCancelledCallsAtOnce() async throws {
        let gate = PythonQueue(), started = PythonQueue()
        let pool = try await InterpreterPool(configuration: .init(workers: 1))
        let blocker = try pool.submit { context in
            _ = try context.object(.queue(started)).attribute("put").call("running")
            _ = try context.object(.queue(gate)).attribute("get").call()
        }
        #expect(try await started.get(timeout: .seconds(30)) == "running")
        let queued = try (0..<3).map { _ in try pool.submit("len", arguments: ["x"]) }
        #expect(pool.statistics.queued == 3)
        queued[0].cancel()
        queued[1].cancel()
        #expect(pool.statistics.queued == 1)
        #expect(pool.statistics.cancelled == 2)
        try await gate.put(.none)
        _ = try await blocker.value
        #expect(try await queued[2].value == 1)
        #expect(pool.statistics.queued == 0)
        await pool.shutdown()
    }
}
