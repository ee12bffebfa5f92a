import Foundation
import Testing

/// `subinterp serve` running real ASGI framework apps (Examples/asgi/) from the test venv,
/// spoken to over real sockets, WebSocket routes through the `websockets` client.
/// Main-actor isolated, as `ASGIServeTests`: blocking tests off the threads async tests need.
@Suite(.serialized) @MainActor struct ASGIRealAppTests {
    static var examples: String { ServedApp.examples("asgi") }

    /// Sends `messages` on a WebSocket at `url` and returns what came back, one line each.
    private func webSocket(_ url: String, _ messages: [String]) throws -> [String] {
        let client = try PythonClient.run(#"""
            import asyncio, json, sys
            from websockets.asyncio.client import connect

            async def main():
                async with connect(sys.argv[1]) as ws:
                    out = []
                    for message in json.loads(sys.argv[2]):
                        await ws.send(message)
                        out.append(await ws.recv())
                    print(json.dumps(out))

            asyncio.run(main())
            """#, arguments: [url, String(decoding: try JSONSerialization.data(withJSONObject: messages), as: UTF8.self)])
        #expect(client.status == 0, "\(client.stderr)")
        return (try? JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [String]) ?? []
    }

    @Test func starletteServesHTTPStreamingLifespanAndWebSocket() throws {
        let server = try ServedApp.start("starlette_app:app", examples: Self.examples)
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "starlette", "greeting": "hello from lifespan"])
        #expect(try HTTPClient.get(port: server.port, "/hello/J%C3%BCrgen").text == "Hello, Jürgen!\n")
        let body = Array((0..<300_000).map { UInt8(truncatingIfNeeded: $0) })
        let echo = try HTTPClient.request(port: server.port, method: "POST", "/echo", headers: [("Content-Type", "application/x-test")], body: body)
        #expect(echo.status == 200 && echo.body == body && echo.header("content-type") == "application/x-test")
        let stream = try HTTPClient.get(port: server.port, "/stream?count=3")
        #expect(stream.header("transfer-encoding") == "chunked" && stream.text == "line 0\nline 1\nline 2\n")
        #expect(try webSocket("ws://127.0.0.1:\(server.port)/ws", ["one", "two"]) == ["echo: one", "echo: two"])
        try server.expectCleanStop()
    }

    @Test func djangoServesItsASGIHandlerAndAChannelsWebSocket() throws {
        let server = try ServedApp.start("django_asgi_app:application", examples: Self.examples)
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "django"])
        // An async view (in the worker's loop) and a sync one (in Django's thread).
        #expect(try HTTPClient.get(port: server.port, "/hello/J%C3%BCrgen").text == "Hello, Jürgen!\n")
        let info = try HTTPClient.request(port: server.port, method: "POST", "/info?a=1", body: Array("twelve bytes".utf8))
        let object = try info.jsonObject() as? [String: Any]
        #expect(object?["method"] as? String == "POST" && object?["path"] as? String == "/info")
        #expect(object?["query"] as? [String: String] == ["a": "1"] && object?["body_length"] as? Int == 12)
        #expect(try webSocket("ws://127.0.0.1:\(server.port)/ws/echo", ["hi"]) == ["django echo: hi"])
        try server.expectCleanStop()
    }

    @Test func quartServesHTTPAndWebSocket() throws {
        let server = try ServedApp.start("quart_app:app", examples: Self.examples)
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        let object = try index.jsonObject() as? [String: Any]
        #expect(object?["framework"] as? String == "quart" && object?["started"] as? Bool == true)
        let echo = try HTTPClient.request(port: server.port, method: "POST", "/echo", headers: [("Content-Type", "application/json")], body: Array(#"{"a": 1}"#.utf8))
        #expect((try echo.jsonObject() as? [String: Any])?["length"] as? Int == 8)
        #expect(try webSocket("ws://127.0.0.1:\(server.port)/ws", ["quiet"]) == ["QUIET"])
        try server.expectCleanStop()
    }

    /// FastAPI needs pydantic-core, which refuses sub-interpreters: under `--isolation auto` (the
    /// default) the example is served in worker processes after one warning naming the module.
    @Test func fastAPIExampleServesInWorkerProcessesByDefault() throws {
        let server = try ServedApp.start("fastapi_app:app", workers: 1, examples: Self.examples)
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "fastapi"])
        let log = server.stderr
        let warnings = log.split(separator: "\n").filter { $0.contains("cannot run in a sub-interpreter") }
        #expect(warnings.count == 1, "\(log)")
        #expect(warnings.first?.contains("'pydantic_core._pydantic_core'") == true, "\(log)")
        #expect(log.contains("with 1 worker process (ASGI, one event loop each)"), "\(log)")
        try server.expectCleanStop()
    }

    /// With `--isolation interpreters` it stops at startup instead, with one line that names the module.
    @Test func fastAPIUnderInterpreterIsolationFailsAtStartupWithOneLineNamingTheModule() throws {
        let result = try ServedApp.runUntilExit("fastapi_app:app", extra: ["--isolation", "interpreters"], examples: Self.examples)
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(lines.first?.hasPrefix("subinterp: fastapi_app:app cannot run in a sub-interpreter: extension module 'pydantic_core._pydantic_core'") == true,
                "\(result.stderr)")
    }
}
