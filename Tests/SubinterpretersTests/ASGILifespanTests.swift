import Foundation
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// ASGI lifespan in every worker interpreter, and how `--interface auto` tells ASGI from WSGI.
@Suite struct ASGILifespanTests {
    static let lifespanApp = #"""
        import os

        MODE = os.environ.get("TEST_LIFESPAN", "ok")

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        if MODE == "fail":
                            await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
                            return
                        scope["state"]["greeting"] = "hello from startup"
                        EVENTS.put("startup")
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        EVENTS.put("shutdown")
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            body = f"{scope['state'].get('greeting')} {sorted(scope['state'])}".encode()
            scope["state"]["touched"] = True  # a shallow copy: the next request does not see it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        """#

    /// An app with the lifespan behaviour `mode` (read from the environment it is loaded in).
    private func app(_ mode: String) throws -> ASGITestApp {
        try ASGITestApp(Self.lifespanApp.replacingOccurrences(of: #"os.environ.get("TEST_LIFESPAN", "ok")"#, with: "'\(mode)'"))
    }

    @Test func startupStateReachesRequestsAndShutdownRunsInEveryWorker() async throws {
        let app = try app("ok")
        let server = try await app.start(app.configuration(workers: 2))
        #expect(try await app.nextEvent() == "startup")
        #expect(try await app.nextEvent() == "startup")
        for _ in 0..<2 {
            let sink = TestHTTPSink()
            _ = server.get("/", sink: sink)
            #expect(try await sink.outcome() == .completed)
            #expect(sink.body == "hello from startup ['greeting']")
        }
        await server.shutdown(grace: .seconds(5))
        #expect(try await app.nextEvent() == "shutdown")
        #expect(try await app.nextEvent() == "shutdown")
    }

    @Test func startupFailedStopsTheServerWithTheAppsMessage() async throws {
        let app = try app("fail")
        let error = await #expect(throws: SubinterpreterError.self) { try await app.start(app.configuration(workers: 2)) }
        #expect(error?.message == "ASGI lifespan startup failed: the database is unreachable")
        try await app.logs.wait(for: "the message in the log") { $0.contains { $0.contains("the database is unreachable") } }
    }

    @Test func anAppWithoutLifespanServesUnderAutoAndFailsUnderOn() async throws {
        let app = try ASGITestApp(#"""
            async def app(scope, receive, send):
                assert scope["type"] == "http", "no lifespan here"
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"served"})
            """#)
        let server = try await app.start(app.configuration())
        let sink = TestHTTPSink()
        _ = server.get("/", sink: sink)
        #expect(try await sink.outcome() == .completed)
        #expect(sink.body == "served")
        #expect(app.logs.lines.contains { $0.hasPrefix("info: ASGI 'lifespan' protocol appears unsupported.") })
        await server.shutdown(grace: .seconds(5))

        var on = app.configuration()
        on.lifespan = .on
        let error = await #expect(throws: SubinterpreterError.self) { try await app.start(on) }
        #expect(error?.message == "ASGI lifespan startup failed: the app raised in lifespan startup: AssertionError: no lifespan here")
    }

    @Test func lifespanOffNeverCallsTheAppWithLifespan() async throws {
        let app = try app("ok")
        var configuration = app.configuration()
        configuration.lifespan = .off
        let server = try await app.start(configuration)
        let sink = TestHTTPSink()
        _ = server.get("/", sink: sink)
        #expect(try await sink.outcome() == .completed)
        #expect(sink.body == "None []")
        await server.shutdown(grace: .seconds(5))
        #expect(try PythonQueue.named(app.events).getNowait() == nil)
    }

    @Test func anAppThatDoesNotLoadFailsWithItsTraceback() async throws {
        let app = try ASGITestApp("import no_such_module_for_asgi\n")
        let error = await #expect(throws: SubinterpreterError.self) { try await app.start(app.configuration()) }
        // One line: the exception and the user's frame that raised it; the traceback stays in the error.
        #expect(
            error?.message.hasPrefix("could not load app:app: ModuleNotFoundError: No module named 'no_such_module_for_asgi' (") == true,
            "\(error?.message ?? "")")
        #expect(error?.message.contains("app.py, line ") == true && error?.message.hasSuffix(", in <module>)") == true, "\(error?.message ?? "")")
        #expect(error?.pythonException?.traceback.contains("import no_such_module_for_asgi") == true)
    }

    @Test func autoInterfaceTellsAsyncCallablesFromWSGIApps() async throws {
        let app = try ASGITestApp(#"""
            import functools

            async def asgi_function(scope, receive, send):
                pass

            class ASGIObject:
                async def __call__(self, scope, receive, send):
                    pass

            asgi_object = ASGIObject()
            asgi_partial = functools.partial(asgi_function)

            def wsgi_function(environ, start_response):
                return [b""]

            class WSGIObject:
                def __call__(self, environ, start_response):
                    return [b""]

            wsgi_object = WSGIObject()

            def make_asgi():
                return asgi_object
            """#)
        let runtime = try await PythonRuntime.start()
        let expected: [(String, AppInterface)] = [
            ("app:asgi_function", .asgi), ("app:asgi_object", .asgi), ("app:asgi_partial", .asgi), ("app:make_asgi()", .asgi),
            ("app:wsgi_function", .wsgi), ("app:wsgi_object", .wsgi), ("app:WSGIObject", .wsgi),
        ]
        for (spec, interface) in expected {
            #expect(try await AppInterface.detect(app: spec, path: [app.directory.path], runtime: runtime) == interface, "\(spec)")
        }
        await #expect(throws: SubinterpreterError.self) {
            try await AppInterface.detect(app: "app:missing", path: [app.directory.path], runtime: runtime)
        }
    }
}
