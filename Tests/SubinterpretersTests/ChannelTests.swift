import BigInt
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
        let blocked = Task { try await interpreter.exec("import subinterp\nsubinterp.Queue().get()") }
        try await Task.sleep(for: .milliseconds(100))
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
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        let error = await #expect(throws: SubinterpreterError.self) { try await waiter.value }
        #expect(error?.code == .cancelled)
        #expect(try queue.putNowait("after"))
        #expect(try queue.getNowait() == "after")
    }
}
