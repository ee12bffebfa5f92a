import Foundation
import Synchronization
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// The ASGI worker runtime driven through its host API, with fake connections: every request
/// goes through a real worker interpreter and its asyncio loop, no sockets.
@Suite struct ASGIWorkerTests {
    static let httpApp = #"""
        import asyncio, json

        def text(value):
            return value.decode("latin-1") if isinstance(value, bytes) else value

        async def respond(send, status, body, headers=()):
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain"), *headers]})
            await send({"type": "http.response.body", "body": body})

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                raise RuntimeError("this app does not use lifespan")
            path = scope["path"][len(scope["root_path"]):]
            if path.startswith("/scope"):
                message = await receive()
                shown = {key: (text(value) if not isinstance(value, (list, tuple, dict)) else value)
                         for key, value in scope.items() if key not in ("headers", "state", "asgi", "client", "server")}
                shown["headers"] = [[text(n), text(v)] for n, v in scope["headers"]]
                shown["asgi"] = scope["asgi"]
                shown["client"] = list(scope["client"])
                shown["server"] = list(scope["server"])
                shown["raw_path_type"] = type(scope["raw_path"]).__name__
                shown["query_type"] = type(scope["query_string"]).__name__
                shown["state"] = scope["state"]
                shown["first"] = {"type": message["type"], "body": text(message["body"]), "more_body": message["more_body"]}
                await respond(send, 200, json.dumps(shown).encode())
            elif path == "/hello":
                await respond(send, 200, b"hello, world", [(b"x-answer", b"42")])
            elif path == "/chunks":
                # One response part per request chunk, so the test sees the order of demands.
                await send({"type": "http.response.start", "status": 200, "headers": []})
                while True:
                    message = await receive()
                    await send({"type": "http.response.body", "body": b"got " + message["body"], "more_body": message["more_body"]})
                    if not message["more_body"]:
                        break
            elif path == "/stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                for i in range(4):
                    await send({"type": "http.response.body", "body": f"part{i}".encode(), "more_body": True})
                    EVENTS.put(f"sent part{i}")
                await send({"type": "http.response.body", "body": b"end"})
                EVENTS.put("sent end")
            elif path == "/wait-disconnect":
                await receive()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"waiting", "more_body": True})
                message = await receive()
                EVENTS.put(message["type"])
                try:
                    await send({"type": "http.response.body", "body": b"too late"})
                except OSError as error:
                    EVENTS.put(f"send raised {type(error).__name__}, an OSError")
                    raise
            elif path == "/boom":
                raise ValueError("secret detail of the failure")
            elif path == "/boom-after-start":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"partial", "more_body": True})
                raise ValueError("failed halfway")
            elif path == "/no-response":
                return
            elif path == "/body-first":
                try:
                    await send({"type": "http.response.body", "body": b"x"})
                except RuntimeError as error:
                    await respond(send, 200, str(error).encode())
            elif path == "/bad-header":
                await respond(send, 200, b"never sent", [(b"x-bad", b"a\r\nset-cookie: injected=1")])
            elif path == "/sleep":
                EVENTS.put("sleeping")
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    EVENTS.put("cancelled")
                    raise
            elif path == "/block":
                EVENTS.put("blocking")
                import time
                time.sleep(float(scope["query_string"] or b"30"))
            elif path == "/spin":
                EVENTS.put("spinning")
                try:
                    while True:
                        pass
                except BaseException as error:
                    EVENTS.put(f"interrupted by {type(error).__module__}.{type(error).__name__}")
                    raise
            elif path == "/gc":
                import gc
                await respond(send, 200, str(gc.collect()).encode())
            elif path == "/executor":
                # Finished by another thread: it wakes the loop (call_soon_threadsafe).
                result = await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])
                await respond(send, 200, f"sum {result}".encode())
            elif path == "/own-socket":
                # A file descriptor of the app's own: the loop must poll it with the mailbox.
                import socket
                loop = asyncio.get_running_loop()
                a, b = socket.socketpair()
                a.setblocking(False)
                b.setblocking(False)
                EVENTS.put("socket waits")
                loop.call_later(0.2, b.send, b"from a socket")
                data = await loop.sock_recv(a, 100)
                a.close()
                b.close()
                await respond(send, 200, data)
            elif path == "/task-receive":
                # A receive() result given to create_task, as asgiref's await_many_dispatch does.
                message = await asyncio.get_running_loop().create_task(receive())
                await respond(send, 200, message["type"].encode())
            elif path == "/poll-then-read":
                # A receive() abandoned by its caller (Starlette's is_disconnected) must not lose the chunk.
                try:
                    await asyncio.wait_for(receive(), timeout=0.01)
                    polled = "got a message"
                except TimeoutError:
                    polled = "nothing yet"
                EVENTS.put(polled)
                message = await receive()
                await respond(send, 200, f"{polled}; then {message['body'].decode()}".encode())
            elif path == "/cancelled-after-wake":
                # A receive() woken by a chunk whose task is cancelled before it runs (a timeout
                # firing in the same loop iteration): the chunk must stay for the next receive().
                reader = asyncio.ensure_future(receive())
                async def cancel_reader_once_woken():
                    while not (reader._fut_waiter is not None and reader._fut_waiter.done()):
                        await asyncio.sleep(0)
                    reader.cancel()
                canceller = asyncio.ensure_future(cancel_reader_once_woken())
                await asyncio.sleep(0)
                EVENTS.put("reader waits")
                await canceller
                try:
                    await reader
                    outcome = "reader ran"
                except asyncio.CancelledError:
                    outcome = "reader cancelled"
                message = await receive()
                await respond(send, 200, f"{outcome}; then {message['body'].decode()}".encode())
            else:
                await respond(send, 404, b"not found")
        """#

    // MARK: HTTP

    @Test func httpRoundTripGivesACompleteScope() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration()
        configuration.rootPath = "/mounted"
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        let exchange = server.get(
            "/scope/caf%C3%A9%2Fx?q=1&r=%20", headers: [("X-Custom", "Value"), ("X-Custom", "second")], sink: sink, body: Array("abc".utf8))
        #expect(exchange != nil)
        #expect(try await sink.outcome() == .completed)
        #expect(sink.status == 200)
        let scope = try #require(try JSONSerialization.jsonObject(with: Data(sink.body.utf8)) as? [String: Any])
        #expect(scope["type"] as? String == "http")
        #expect(scope["asgi"] as? [String: String] == ["version": "3.0", "spec_version": "2.5"])
        #expect(scope["http_version"] as? String == "1.1")
        #expect(scope["method"] as? String == "GET")
        #expect(scope["scheme"] as? String == "http")
        #expect(scope["root_path"] as? String == "/mounted")
        #expect(scope["path"] as? String == "/mounted/scope/café/x")
        #expect(scope["raw_path"] as? String == "/mounted/scope/caf%C3%A9%2Fx")
        #expect(scope["raw_path_type"] as? String == "bytes")
        #expect(scope["query_string"] as? String == "q=1&r=%20")
        #expect(scope["query_type"] as? String == "bytes")
        #expect(scope["headers"] as? [[String]] == [["host", "example.test"], ["x-custom", "Value"], ["x-custom", "second"]])
        #expect(scope["client"] as? [AnyHashable] == ["10.1.2.3", 54321])
        #expect(scope["server"] as? [AnyHashable] == ["127.0.0.1", 8000])
        #expect(scope["state"] as? [String: String] == [:])
        let first = try #require(scope["first"] as? [String: Any])
        #expect(first["type"] as? String == "http.request")
        #expect(first["body"] as? String == "abc")
        #expect(first["more_body"] as? Bool == false)
        await server.shutdown(grace: .seconds(5))
    }

    @Test func headAndBodyReachTheConnectionTogether() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let sink = TestHTTPSink()
        _ = server.get("/hello", sink: sink)
        #expect(try await sink.outcome() == .completed)
        // http.response.start is held until the body: one call carries both.
        #expect(sink.recorder.lines == ["respond 1 status 200 hello, world", "finished completed"])
        #expect(sink.headers.map { "\($0.0): \($0.1)" } == ["content-type: text/plain", "x-answer: 42"])
        await server.shutdown(grace: .seconds(5))
    }

    @Test func requestBodyIsAskedForOnlyWhenTheAppAwaitsIt() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let sink = TestHTTPSink()
        let exchange = try #require(server.get("/chunks", method: "POST", sink: sink, body: Array("one".utf8), more: true))
        // The first chunk came with the head; the app answers it, then waits for more.
        try await sink.recorder.wait(for: "demand")
        #expect(sink.recorder.lines == ["respond 1 status 200 got one more", "demand"])
        exchange.body("two", more: true)
        try await sink.recorder.wait(for: "a second demand") { $0.filter { $0 == "demand" }.count == 2 }
        #expect(sink.recorder.lines == ["respond 1 status 200 got one more", "demand", "respond 2 got two more", "demand"])
        exchange.body("three", more: false)
        #expect(try await sink.outcome() == .completed)
        #expect(sink.recorder.lines == [
            "respond 1 status 200 got one more", "demand", "respond 2 got two more", "demand", "respond 3 got three", "finished completed",
        ])
        await server.shutdown(grace: .seconds(5))
    }

    @Test func aFullConnectionHoldsTheAppUntilItIsWritable() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        // Every body write fills the connection: each next send waits for `writable()`.
        let sink = TestHTTPSink { _ in .full }
        let exchange = try #require(server.get("/stream", sink: sink))
        try await sink.recorder.wait(for: "respond 1 status 200 part0 more")
        // Another request on the same worker completes: its loop went round, and still the
        // stream's first send has not returned.
        let other = TestHTTPSink()
        _ = server.get("/hello", sink: other)
        #expect(try await other.outcome() == .completed)
        #expect(sink.responds == 1)
        #expect(try PythonQueue.named(app.events).getNowait() == nil)
        for part in 0...3 {
            exchange.writable()
            #expect(try await app.nextEvent() == .string("sent part\(part)"))
            try await sink.recorder.wait(for: "respond \(part + 2)") { $0.contains { $0.hasPrefix("respond \(part + 2) ") } }
            #expect(sink.responds == part + 2)
        }
        exchange.writable()
        #expect(try await app.nextEvent() == "sent end")
        #expect(try await sink.outcome() == .completed)
        #expect(sink.body == "part0part1part2part3end")
        await server.shutdown(grace: .seconds(5))
    }

    /// A request waiting for the connection (back-pressure) or for the client holds nothing
    /// the event loop knows of: only the worker keeps it. A garbage collection in between must
    /// not destroy it.
    @Test func aWaitingRequestSurvivesAGarbageCollection() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration(workers: 1))
        let full = TestHTTPSink { count in count == 1 ? .full : .ready }
        let streaming = try #require(server.get("/stream", sink: full))
        try await full.recorder.wait(for: "respond 1 status 200 part0 more")
        let waiting = TestHTTPSink()
        let disconnecting = try #require(server.get("/wait-disconnect", sink: waiting))
        try await waiting.recorder.wait(for: "respond 1 status 200 waiting more")
        let collector = TestHTTPSink()
        _ = server.get("/gc", sink: collector)
        #expect(try await collector.outcome() == .completed)
        streaming.writable()
        #expect(try await full.outcome() == .completed)
        #expect(full.body == "part0part1part2part3end")
        disconnecting.disconnected()
        #expect(try await waiting.outcome() == .disconnected)
        #expect(try await app.nextEvent() == "sent part0")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func aClientThatLeavesIsToldAndLaterSendsRaise() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let sink = TestHTTPSink()
        let exchange = try #require(server.get("/wait-disconnect", sink: sink))
        try await sink.recorder.wait(for: "respond 1 status 200 waiting more")
        exchange.disconnected()
        #expect(try await app.nextEvent() == "http.disconnect")
        #expect(try await app.nextEvent() == "send raised ClientDisconnected, an OSError")
        #expect(try await sink.outcome() == .disconnected)
        // Not an application error: nothing in the log at error level.
        #expect(!app.logs.lines.contains { $0.hasPrefix("error") })
        await server.shutdown(grace: .seconds(5))
    }

    @Test func anAppErrorBeforeTheResponseIsA500WithTheTracebackOnlyInTheLog() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let sink = TestHTTPSink()
        _ = server.get("/boom", sink: sink)
        #expect(try await sink.outcome() == .failed(status: 500))
        #expect(sink.responds == 0)
        try await app.logs.wait(for: "the traceback in the log") { $0.contains { $0.contains("secret detail of the failure") } }
        let logged = try #require(app.logs.lines.first { $0.contains("secret detail") })
        #expect(logged.hasPrefix("error: Exception in ASGI application"))
        #expect(logged.contains("Traceback (most recent call last)"))
        #expect(logged.contains("app.py"))
        #expect(!logged.contains("<subinterp"))

        // After the head went out, the same failure closes the connection (the sink decides).
        let started = TestHTTPSink()
        _ = server.get("/boom-after-start", sink: started)
        #expect(try await started.outcome() == .failed(status: 500))
        #expect(started.recorder.lines.first == "respond 1 status 200 partial more")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func misusedSendIsAnErrorTheAppSees() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let first = TestHTTPSink()
        _ = server.get("/body-first", sink: first)
        #expect(try await first.outcome() == .completed)
        #expect(first.body == "Expected ASGI message 'http.response.start', but got 'http.response.body'.")

        let injected = TestHTTPSink()
        _ = server.get("/bad-header", sink: injected)
        #expect(try await injected.outcome() == .failed(status: 500))
        #expect(injected.responds == 0)
        try await app.logs.wait(for: "the header error") { $0.contains { $0.contains("holds CR, LF or NUL") } }

        let silent = TestHTTPSink()
        _ = server.get("/no-response", sink: silent)
        #expect(try await silent.outcome() == .failed(status: 500))
        try await app.logs.wait(for: "the missing response") { $0.contains { $0.contains("returned without starting a response") } }
        await server.shutdown(grace: .seconds(5))
    }

    @Test func receiveWorksAsATaskAndAnAbandonedReceiveLosesNothing() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration())
        let tasked = TestHTTPSink()
        _ = server.get("/task-receive", sink: tasked)
        #expect(try await tasked.outcome() == .completed)
        #expect(tasked.body == "http.request")

        let polled = TestHTTPSink()
        let exchange = try #require(server.get("/poll-then-read", method: "POST", sink: polled, more: true))
        #expect(try await app.nextEvent() == "nothing yet")
        exchange.body("the chunk", more: false)
        #expect(try await polled.outcome() == .completed)
        #expect(polled.body == "nothing yet; then the chunk")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func aChunkWokenForACancelledReceiveIsNotLost() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration()
        configuration.timeout = .seconds(5)
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        let exchange = try #require(server.get("/cancelled-after-wake", method: "POST", sink: sink, more: true))
        #expect(try await app.nextEvent() == "reader waits")
        exchange.body("the chunk", more: false)
        #expect(try await sink.outcome() == .completed)
        #expect(sink.body == "reader cancelled; then the chunk")
        await server.shutdown(grace: .seconds(5))
    }

    // MARK: Deadlines and stuck loops

    @Test func aRequestPastItsDeadlineGets504AndItsTaskIsCancelled() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration()
        configuration.timeout = .milliseconds(300)
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        _ = server.get("/sleep", sink: sink)
        #expect(try await sink.outcome() == .failed(status: 504))
        #expect(try await app.nextEvent() == "sleeping")
        #expect(try await app.nextEvent() == "cancelled")
        // The worker serves on.
        let next = TestHTTPSink()
        _ = server.get("/hello", sink: next)
        #expect(try await next.outcome() == .completed)
        await server.shutdown(grace: .seconds(5))
    }

    @Test func codeThatHoldsTheLoopIsInterruptedAndTheOtherRequestsComplete() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration(workers: 1)
        configuration.loopHoldLimit = .milliseconds(300)
        let server = try await app.start(configuration)
        let spinning = TestHTTPSink()
        _ = server.get("/spin", sink: spinning)
        #expect(try await app.nextEvent() == "spinning")
        // Given to the same worker while its loop is held: they wait in its mailbox.
        let others = (0..<3).map { _ in TestHTTPSink() }
        for sink in others { _ = server.get("/hello", sink: sink) }
        #expect(try await spinning.outcome() == .failed(status: 504))
        #expect(try await app.nextEvent() == "interrupted by subinterp.CancelledError")
        for sink in others {
            #expect(try await sink.outcome() == .completed)
            #expect(sink.body == "hello, world")
        }
        try await app.logs.wait(for: "the interrupt in the log") { $0.contains { $0.contains("left new events waiting") } }
        await server.shutdown(grace: .seconds(5))
    }

    @Test func codeThatHoldsTheLoopPastItsDeadlineIsInterrupted() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration(workers: 1)
        configuration.timeout = .milliseconds(300)
        configuration.cancelGrace = .milliseconds(200)
        let server = try await app.start(configuration)
        let spinning = TestHTTPSink()
        _ = server.get("/spin", sink: spinning)
        #expect(try await app.nextEvent() == "spinning")
        // The host answers 504 at the deadline; the loop cannot take the cancellation, so the
        // code holding it is interrupted, and the worker serves again.
        #expect(try await spinning.outcome() == .failed(status: 504))
        #expect(try await app.nextEvent() == "interrupted by subinterp.CancelledError")
        let next = TestHTTPSink()
        _ = server.get("/hello", sink: next)
        #expect(try await next.outcome() == .completed)
        try await app.logs.wait(for: "the interrupt in the log") { $0.contains { $0.contains("did not act on a cancellation") } }
        await server.shutdown(grace: .seconds(5))
    }

    @Test func aThousandRequestsSleepAtTheSameTime() async throws {
        let app = try ASGITestApp(#"""
            import asyncio, subinterp
            active = 0
            peak = 0

            async def app(scope, receive, send):
                global active, peak
                if scope["type"] != "http":
                    raise RuntimeError("no lifespan")
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(1)
                active -= 1
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": f"{subinterp.worker_index()} {peak}".encode()})
            """#)
        let server = try await app.start(app.configuration(workers: 2))
        let sinks = (0..<1000).map { _ in TestHTTPSink() }
        for sink in sinks { _ = server.get("/", sink: sink) }
        var peaks: [Int: Int] = [:]
        for sink in sinks {
            #expect(try await sink.outcome(timeout: .seconds(60)) == .completed)
            let parts = sink.body.split(separator: " ").compactMap { Int($0) }
            if parts.count == 2 { peaks[parts[0], default: 0] = max(peaks[parts[0], default: 0], parts[1]) }
        }
        // Every request was asleep at once: the peaks of the two loops add up to all of them.
        #expect(peaks.keys.sorted() == [0, 1])
        #expect(peaks.values.reduce(0, +) == 1000)
        await server.shutdown(grace: .seconds(5))
    }

    @Test func aSleepingLoopWakesForEveryRequestPostedToIt() async throws {
        // Request after request, each posted when the loop has just gone to sleep or is about
        // to: a lost wake-up would leave one waiting until the failure timeout.
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration(workers: 1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<300 {
                        let sink = TestHTTPSink()
                        _ = server.get("/hello", sink: sink)
                        let outcome = try await sink.outcome(timeout: .seconds(10))
                        #expect(outcome == .completed)
                    }
                }
            }
            try await group.waitForAll()
        }
        await server.shutdown(grace: .seconds(5))
    }

    @Test func theLoopWakesForItsOwnThreadsAndPollsTheAppsOwnSockets() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration(workers: 1))
        // Without a file descriptor of the app's own, the loop sleeps on the mailbox: a thread
        // that finishes work for it must wake it.
        for _ in 0..<20 {
            let sink = TestHTTPSink()
            _ = server.get("/executor", sink: sink)
            #expect(try await sink.outcome(timeout: .seconds(10)) == .completed)
            #expect(sink.body == "sum 6")
        }
        // With one (a socket the app waits on), it polls, and new requests still wake it.
        let socket = TestHTTPSink()
        _ = server.get("/own-socket", sink: socket)
        #expect(try await app.nextEvent() == "socket waits")
        let meanwhile = TestHTTPSink()
        _ = server.get("/hello", sink: meanwhile)
        #expect(try await meanwhile.outcome(timeout: .seconds(10)) == .completed)
        let executor = TestHTTPSink()
        _ = server.get("/executor", sink: executor)
        #expect(try await executor.outcome(timeout: .seconds(10)) == .completed)
        #expect(try await socket.outcome(timeout: .seconds(10)) == .completed)
        #expect(socket.body == "from a socket")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func theWorkerLetsGoOfEveryRequest() async throws {
        let app = try ASGITestApp(Self.httpApp)
        let server = try await app.start(app.configuration(workers: 1))
        final class Weak: Sendable {
            let exchanges = Mutex<[() -> ASGIExchange?]>([])
        }
        let weak = Weak()
        let targets = ["/hello", "/boom", "/chunks", "/task-receive", "/no-response", "/stream"]
        for target in targets {
            let sink = TestHTTPSink()
            if let exchange = server.get(target, method: "POST", sink: sink, body: Array("x".utf8)) {
                weak.exchanges.withLock { $0.append { [weak exchange] in exchange } }
            }
            _ = try await sink.outcome()
        }
        // A last request: once it is done, the loop has gone round after every earlier one.
        let last = TestHTTPSink()
        _ = server.get("/hello", sink: last)
        _ = try await last.outcome()
        #expect(weak.exchanges.withLock { $0.count } == targets.count)
        #expect(weak.exchanges.withLock { $0.allSatisfy { $0() == nil } })
        await server.shutdown(grace: .seconds(5))
    }

    // MARK: Limits and shutdown

    @Test func requestsBeyondTheConcurrencyLimitGet503() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration(workers: 2)
        configuration.limitConcurrency = 2
        let server = try await app.start(configuration)
        let held = (0..<2).map { _ in TestHTTPSink() }
        let exchanges = held.map { server.get("/wait-disconnect", sink: $0) }
        for sink in held { try await sink.recorder.wait(for: "respond 1 status 200 waiting more") }
        let refused = TestHTTPSink()
        #expect(server.get("/hello", sink: refused) == nil)
        #expect(try await refused.outcome() == .failed(status: 503))
        for exchange in exchanges { exchange?.disconnected() }
        for sink in held { #expect(try await sink.outcome() == .disconnected) }
        let admitted = TestHTTPSink()
        _ = server.get("/hello", sink: admitted)
        #expect(try await admitted.outcome() == .completed)
        await server.shutdown(grace: .seconds(5))
    }

    @Test func shutdownReturnsEvenIfALoopIsBlockedInASystemCall() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration()
        configuration.timeout = nil
        configuration.cancelGrace = .milliseconds(100)
        configuration.stopLimit = .milliseconds(500)
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        _ = server.get("/block?30", sink: sink)
        #expect(try await app.nextEvent() == "blocking")
        // time.sleep is not Python bytecode: no interrupt ends it, and still the server stops,
        // long before the sleep would (the bound leaves room for a busy machine).
        let stopped = Recorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await server.shutdown(grace: .milliseconds(100))
                stopped.append("stopped")
            }
            try await stopped.wait(for: "stopped", timeout: .seconds(20))
            try await group.waitForAll()
        }
        #expect(try await sink.outcome() == .failed(status: 503))
        try await app.logs.wait(for: "the log line") { $0.contains { $0.contains("did not stop") } }
    }

    @Test func shutdownEndsWhatOutlivesTheGracePeriod() async throws {
        let app = try ASGITestApp(Self.httpApp)
        var configuration = app.configuration()
        configuration.timeout = nil
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        _ = server.get("/sleep", sink: sink)
        #expect(try await app.nextEvent() == "sleeping")
        await server.shutdown(grace: .milliseconds(100))
        #expect(try await sink.outcome() == .failed(status: 503))
        #expect(try await app.nextEvent() == "cancelled")
        let late = TestHTTPSink()
        #expect(server.get("/hello", sink: late) == nil)
        #expect(try await late.outcome() == .failed(status: 503))
    }
}
