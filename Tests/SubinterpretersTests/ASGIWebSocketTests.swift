import Foundation
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// WebSocket events through an ASGI worker: the handshake, messages both ways, closing both
/// ways, denial. The framing itself belongs to the HTTP layer; here a fake connection stands in.
@Suite struct ASGIWebSocketTests {
    static let app = #"""
        async def app(scope, receive, send):
            if scope["type"] != "websocket":
                raise RuntimeError("websocket only")
            message = await receive()
            assert message == {"type": "websocket.connect"}, message
            path = scope["path"]
            if path == "/deny":
                await send({"type": "websocket.close"})
                return
            if path == "/leave-silently":
                return
            await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][0],
                        "headers": [(b"x-scope", f"{scope['scheme']} {scope['query_string'].decode()}".encode())]})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    EVENTS.put(f"disconnect {message['code']} {message['reason']}")
                    try:
                        await send({"type": "websocket.send", "text": "after"})
                    except OSError as error:
                        EVENTS.put(f"send raised {type(error).__name__}")
                    return
                if message.get("text") == "close please":
                    await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
                    EVENTS.put("closed")
                    continue
                if message.get("text") == "crash":
                    raise ValueError("crashed on purpose")
                if "text" in message:
                    await send({"type": "websocket.send", "text": "echo " + message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
        """#

    private func connect(_ server: ASGIApplication, _ path: String, sink: TestWebSocketSink) -> ASGIExchange? {
        var head = ASGIRequestHead(method: "GET", target: path, scheme: "ws", server: ("127.0.0.1", 8000), client: ("127.0.0.1", 40000))
        head.addHeader(name: "Sec-WebSocket-Protocol", value: "chat.v2, chat.v1")
        head.addHeader(name: "Sec-WebSocket-Protocol", value: "legacy")
        return server.startWebSocket(head, sink: sink)
    }

    @Test func messagesGoBothWaysAndTheClientsCloseIsDelivered() async throws {
        let app = try ASGITestApp(Self.app)
        let server = try await app.start(app.configuration())
        let sink = TestWebSocketSink()
        let exchange = try #require(connect(server, "/chat?room=1", sink: sink))
        try await sink.recorder.wait(for: "accept chat.v2 [x-scope=ws room=1]")
        try await sink.recorder.wait(for: "demand")
        exchange.message("hello")
        try await sink.recorder.wait(for: "text echo hello")
        [UInt8]([1, 2, 3]).withUnsafeBytes { exchange.message($0, text: false) }
        try await sink.recorder.wait(for: "bytes [3, 2, 1]")
        exchange.disconnected(code: 1001, reason: "going away")
        #expect(try await app.nextEvent() == "disconnect 1001 going away")
        #expect(try await app.nextEvent() == "send raised ClientDisconnected")
        try await sink.recorder.wait(for: "finished completed")
        #expect(!sink.recorder.lines.contains { $0.hasPrefix("text after") })
        await server.shutdown(grace: .seconds(5))
    }

    @Test func theAppClosesWithItsCodeAndReason() async throws {
        let app = try ASGITestApp(Self.app)
        let server = try await app.start(app.configuration())
        let sink = TestWebSocketSink()
        let exchange = try #require(connect(server, "/chat", sink: sink))
        try await sink.recorder.wait(for: "demand")
        exchange.message("close please")
        try await sink.recorder.wait(for: "close 4001 asked to")
        #expect(try await app.nextEvent() == "closed")
        // The client's close frame answers; the app hears the disconnect and ends.
        exchange.disconnected(code: 4001, reason: "")
        #expect(try await app.nextEvent() == "disconnect 4001 ")
        try await sink.recorder.wait(for: "finished completed")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func closingBeforeAcceptingIsADenial() async throws {
        let app = try ASGITestApp(Self.app)
        let server = try await app.start(app.configuration())
        let sink = TestWebSocketSink()
        _ = connect(server, "/deny", sink: sink)
        try await sink.recorder.wait(for: "finished completed")
        // The sink saw a close and no accept: it answers 403.
        #expect(sink.recorder.lines == ["close 1000 ", "finished completed"])

        let silent = TestWebSocketSink()
        _ = connect(server, "/leave-silently", sink: silent)
        try await silent.recorder.wait(for: "finished failed(status: 500)")
        await server.shutdown(grace: .seconds(5))
    }

    @Test func anAppErrorAfterAcceptingFailsTheConnection() async throws {
        let app = try ASGITestApp(Self.app)
        let server = try await app.start(app.configuration())
        let sink = TestWebSocketSink()
        let exchange = try #require(connect(server, "/chat", sink: sink))
        try await sink.recorder.wait(for: "demand")
        exchange.message("crash")
        try await sink.recorder.wait(for: "finished failed(status: 500)")
        try await app.logs.wait(for: "the traceback") { $0.contains { $0.contains("crashed on purpose") } }
        await server.shutdown(grace: .seconds(5))
    }
}
