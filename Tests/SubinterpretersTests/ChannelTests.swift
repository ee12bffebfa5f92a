import BigInt
import CPython
import Dispatch
import Synchronization
import Foundation
import Testing

@testable import Subinterpreters

@Suite struct ChannelTests {
    @Test func queueFollowsTheQueueQueueSurface() async throws {
        let interpreter = try await Interpreter()
        let result = try await interpreter.eval("""
            (lambda subinterp, queue: (
                q := subinterp.Queue(maxsize=2),
                q.put(1), q.put_nowait("two"),
                [q.qsize(), q.full(), q.empty()],
                (lambda: q.put(3, timeout=0.01))() if False else None,
            ))(__import__("subinterp"), __import__("queue"))[3]
            """)
        #expect(result == [2, true, false])
        try await interpreter.exec("""
            import subinterp, queue
            q = subinterp.Queue(maxsize=1)
            q.put("only")
            try:
                q.put("more", timeout=0.02)
            except queue.Full as error:
                full = type(error).__name__
            try:
                q.put_nowait("more")
            except subinterp.QueueFull:
                full_nowait = True
            assert q.get() == "only"
            try:
                q.get(timeout=0.02)
            except queue.Empty as error:
                empty = type(error).__name__
            try:
                q.get(block=False)
            except subinterp.QueueEmpty:
                empty_nowait = True
            """)
        #expect(try await interpreter.eval("(full, full_nowait, empty, empty_nowait)") == .tuple(["QueueFull", true, "QueueEmpty", true]))
        await interpreter.close()
    }

    @Test func namedQueueConnectsInterpretersAndValuesCrossIntact() async throws {
        let producer = try await Interpreter()
        let consumer = try await Interpreter()
        try await producer.exec("""
            import subinterp, decimal
            q = subinterp.queue("channel-tests-values")
            q.put({"big": 2 ** 200, "text": "héllo 🐍", "nested": [1, (2, 3), {"k": None}], "raw": b"\\x00\\xff"})
            q.put(decimal.Decimal("1.5"))
            """)
        let value = try await consumer.eval("__import__('subinterp').queue('channel-tests-values').get(timeout=5)")
        #expect(value["big"] == .int(BigInt(2).power(200)))
        #expect(value["text"] == "héllo 🐍")
        #expect(value["nested"] == [1, .tuple([2, 3]), ["k": .none]])
        #expect(value["raw"] == .bytes([0, 255]))
        #expect(try await consumer.eval("str(__import__('subinterp').queue('channel-tests-values').get(timeout=5) * 2)") == "3.0")
        await producer.close()
        await consumer.close()
    }

    @Test func unpicklableObjectRaisesInTheSender() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) {
            try await interpreter.exec("import subinterp, threading\nsubinterp.Queue().put(threading.Lock())")
        }
        #expect(error?.pythonException?.typeName == "TypeError")
        #expect(error?.message.contains("_thread.lock") == true)
        await interpreter.close()
    }

    @Test func aQueueSentThroughAQueueOrACallIsTheSameQueue() async throws {
        let first = try await Interpreter()
        let second = try await Interpreter()
        try await first.exec("""
            import subinterp
            reply = subinterp.Queue()
            subinterp.queue("channel-tests-identity").put(reply)
            """)
        try await second.exec("""
            import subinterp
            reply = subinterp.queue("channel-tests-identity").get(timeout=5)
            reply.put("pong")
            """)
        #expect(try await first.eval("reply.get(timeout=5)") == "pong")
        #expect(try await first.eval("reply.id") == second.eval("reply.id"))

        // As a value: Swift receives the queue itself and can pass it to another interpreter.
        let queue = try await first.eval("reply")
        guard case .queue(let swiftQueue) = queue else {
            Issue.record("expected a queue, got \(queue)")
            return
        }
        try await second.prepareMain(["handed": queue])
        try await second.exec("handed.put('via call')")
        #expect(try await swiftQueue.get(timeout: .seconds(5)) == "via call")
        #expect(try await second.eval("handed == reply") == true)
        // Pickled (a queue inside an object that crosses pickled) it is still the same queue.
        #expect(try await first.eval("__import__('pickle').loads(__import__('pickle').dumps(reply)) == reply") == true)
        await first.close()
        await second.close()
    }

    @Test func sharedBufferWritesAreSeenByAnotherInterpreterWithoutCopying() async throws {
        let writer = try await Interpreter()
        let reader = try await Interpreter()
        let buffer = try await writer.eval("__import__('subinterp').SharedBuffer(1 << 20)")
        try await reader.prepareMain(["buf": buffer])
        try await writer.prepareMain(["buf": buffer])
        try await writer.exec("buf.view[0:5] = b'hello'\nbuf.view[-1] = 7")
        #expect(try await reader.eval("(bytes(buf.view[0:5]), buf.view[-1], len(buf), buf.size)") == .tuple([.bytes(Array("hello".utf8)), 7, PythonValue(1 << 20), PythonValue(1 << 20)]))
        guard case .buffer(let shared) = buffer else {
            Issue.record("expected a shared buffer")
            return
        }
        shared.withUnsafeMutableBytes { $0[1] = UInt8(ascii: "a") }
        #expect(try await writer.eval("bytes(buf.view[0:5])") == .bytes(Array("hallo".utf8)))
        await writer.close()
        await reader.close()
    }

    @Test func aViewKeepsItsBufferAliveAndTheLastHolderFreesIt() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("""
            import subinterp, gc
            buf = subinterp.SharedBuffer(64)
            ident = buf.id
            view = memoryview(buf)
            del buf
            gc.collect()
            view[0] = 42          # the view keeps the buffer alive
            first = view[0]
            view.release()
            gc.collect()
            try:
                subinterp._buffer_from_id(ident)
                freed = False
            except ValueError:
                freed = True
            q = subinterp.Queue()
            qid = q.id
            del q
            try:
                subinterp._queue_from_id(qid)
                queue_freed = False
            except ValueError:
                queue_freed = True
            """)
        #expect(try await interpreter.eval("(first, freed, queue_freed)") == .tuple([42, true, true]))
        await interpreter.close()
    }

    @Test func closingAnInterpreterBlockedInGetWakesIt() async throws {
        let interpreter = try await Interpreter()
        let started = PythonQueue()
        try await interpreter.prepareMain(["started": .queue(started)])
        let blocked = Task { try await interpreter.exec("import subinterp\nstarted.put('waiting')\nsubinterp.Queue().get()") }
        // Closing ends the wait whether it has begun or is about to.
        #expect(try await started.get(timeout: .seconds(30)) == "waiting")
        await interpreter.close()
        let error = await #expect(throws: SubinterpreterError.self) { try await blocked.value }
        #expect(error?.message.contains("closing") == true)
    }

    @Test func poolCancellationInterruptsABlockedGet() async throws {
        let pool = try await InterpreterPool(configuration: .init(workers: 1, setup: "import subinterp"))
        let error = await #expect(throws: SubinterpreterError.self) {
            try await pool.withWorker(timeout: .milliseconds(200)) { try $0.exec("subinterp.Queue().get()") }
        }
        #expect(error?.code == .timedOut)
        #expect(try await pool.call("len", "still works") == 11)
        await pool.shutdown()
    }

    @Test func swiftFeedsAndDrainsPythonWorkers() async throws {
        let jobs = PythonQueue.named("channel-tests-jobs")
        let results = PythonQueue.named("channel-tests-results")
        let pool = try await InterpreterPool(configuration: .init(workers: 2, setup: """
            import subinterp
            def work():
                jobs, results = subinterp.queue("channel-tests-jobs"), subinterp.queue("channel-tests-results")
                while (n := jobs.get()) is not None:
                    results.put(n * n)
            """))
        let workers = try (0..<2).map { _ in try pool.submit("work", arguments: []) }
        for n in 0..<100 { try await jobs.put(PythonValue(n)) }
        for _ in 0..<2 { try await jobs.put(.none) }
        var squares = Set<Int>()
        for try await value in results.values {
            squares.insert(value.intValue!)
            if squares.count == 100 { break }
        }
        #expect(squares == Set((0..<100).map { $0 * $0 }))
        for worker in workers { _ = try await worker.value }
        let timeout = await #expect(throws: SubinterpreterError.self) { try await results.get(timeout: .milliseconds(20)) }
        #expect(timeout?.code == .timedOut)
        await pool.shutdown()
    }

    @Test func swiftWaitIsCancellable() async throws {
        let queue = PythonQueue()
        let waiter = Task { try await queue.get() }
        await waitUntil("the wait is registered") { queue.registeredWaits == 1 }
        waiter.cancel()
        let error = await #expect(throws: SubinterpreterError.self) { try await waiter.value }
        #expect(error?.code == .cancelled)
        #expect(queue.registeredWaits == 0)
        #expect(try queue.putNowait("after"))
        #expect(try queue.getNowait() == "after")
        // A task cancelled before it waits does not wait at all.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await queue.get()
        }
        await #expect(throws: SubinterpreterError.self) { try await early.value }
    }

    @Test func swiftPutWaitsForRoomAndTimesOut() async throws {
        let queue = PythonQueue(maxsize: 1)
        try await queue.put("first")
        let blocked = Task { try await queue.put("second") }
        await waitUntil("the put is registered") { queue.registeredWaits == 1 }
        #expect(try await queue.get() == "first")  // makes room: the waiting put completes
        try await blocked.value
        #expect(try await queue.get() == "second")
        try await queue.put("third")
        let full = await #expect(throws: SubinterpreterError.self) { try await queue.put("fourth", timeout: .milliseconds(20)) }
        #expect(full?.code == .timedOut)
        #expect(queue.count == 1)
        let empty = PythonQueue()
        let timedOut = await #expect(throws: SubinterpreterError.self) { try await empty.get(timeout: .milliseconds(20)) }
        #expect(timedOut?.code == .timedOut)
        #expect(empty.registeredWaits == 0)
    }

    /// Swift waits hold no thread: many tasks can wait at once without the process growing a
    /// thread for each, and Dispatch and the concurrency pool stay free. (Each wait used to
    /// park a Dispatch thread; with enough of them, nothing else queued on Dispatch ran.)
    @Test func manySwiftWaitersHoldNoThreads() async throws {
        let queues = (0..<600).map { _ in PythonQueue() }
        let before = threadCount()
        let values = try await withThrowingTaskGroup(of: Int.self) { group in
            for queue in queues {
                group.addTask { try await queue.get(timeout: .seconds(120)).intValue ?? -1 }
            }
            await waitUntil("every wait is registered") { queues.allSatisfy { $0.registeredWaits == 1 } }
            // Other tests start threads meanwhile; a thread per wait would be hundreds more.
            #expect(threadCount() - before < 150, "\(threadCount() - before) threads for \(queues.count) waits")
            let ran = try await withFailureTimeout(.seconds(30), "a block on Dispatch") {
                await withCheckedContinuation { continuation in DispatchQueue.global().async { continuation.resume(returning: true) } }
            }
            #expect(ran == true)
            for (index, queue) in queues.enumerated() { try await queue.put(PythonValue(index)) }
            var values: [Int] = []
            for try await value in group { values.append(value) }
            return values
        }
        #expect(values.sorted() == Array(0..<queues.count))
    }

    /// Waking a waiter takes a reference to its queue first. The window: a waker (closing an
    /// interpreter, or the pool interrupting a call) read the queue a thread waits on, the
    /// waiter's wait ended and it dropped the last reference (`subinterp.Queue().get()` holds
    /// its queue only for the call), and the waker locked the freed queue. Here one thread
    /// makes, waits on and frees queues as fast as it can while another wakes it.
    @Test func wakingAWaiterWhoseQueueIsBeingFreedIsSafe() async throws {
        let thread = UInt.random(in: 1 << 40 ..< 1 << 41)  // an id no real thread has
        final class Flag: Sendable { let value = Atomic<Bool>(false) }
        let done = Flag()
        async let waiter: Void = onThread {
            for _ in 0..<20_000 {
                let queue = cpy_queue_create(0)!
                var item: OpaquePointer?
                _ = cpy_queue_get(queue, &item, 1, 0.000_05, thread)
                cpy_queue_release(queue)
            }
            done.value.store(true, ordering: .releasing)
        }
        async let waker: Void = onThread {
            while !done.value.load(ordering: .acquiring) {
                cpy_thread_cancel_wait(thread)
                cpy_thread_closing(thread, 1)
                cpy_thread_closing(thread, 0)
            }
        }
        _ = await (waiter, waker)
        cpy_thread_clear_cancel(thread)
    }
}
