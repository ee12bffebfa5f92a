import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import Subinterpreters

/// WebSocket through `subinterp serve` over real sockets: a real client (the `websockets`
/// package) for what clients do, and raw frames for what they must not (Autobahn-style cases).
/// Main-actor isolated, as `ASGIServeTests`: blocking tests off the threads async tests need.
@Suite @MainActor struct ASGIWebSocketServeTests {
    static let app = "liveasgi:app"

    // MARK: - A real client

    @Test func aRealClientTalksToTheApp() throws {
        let server = try LiveServer(["--workers", "2", "--ws-max-size", "100000"], app: Self.app)
        defer { server.stop() }
        let client = try PythonClient.run(#"""
            import asyncio, json, sys
            from websockets.asyncio.client import connect
            from websockets.exceptions import ConnectionClosed, InvalidStatus
            base = f"ws://127.0.0.1:{sys.argv[1]}"

            async def main():
                out = {}
                async with connect(base + "/ws/scope?room=1", subprotocols=["chat.v2", "chat.v1"]) as ws:
                    out["subprotocol"] = ws.subprotocol
                    out["token_header"] = bool(ws.response.headers.get("x-ws-token"))
                    scope = json.loads(await ws.recv())
                    out["scope"] = {k: scope[k] for k in ("path", "query", "scheme", "subprotocols", "http_version")}
                    await ws.send("hello")
                    out["text"] = await ws.recv()
                    await ws.send(b"\x00\x01\xff")
                    out["bytes"] = list(await ws.recv())
                    await ws.send(["frag", "men", "ted"])
                    out["fragmented"] = await ws.recv()
                    pong = await ws.ping(b"are you there")
                    await asyncio.wait_for(pong, 10)
                    out["pong"] = True
                    await ws.send("burst 500")
                    out["burst"] = [await ws.recv() for _ in range(500)] == [f"message {i}" for i in range(500)]
                    await ws.close(4002, "bye from the client")
                async with connect(base + "/ws/echo") as ws:
                    await ws.send("close")
                    try:
                        await ws.recv()
                    except ConnectionClosed as closed:
                        out["app_close"] = [closed.rcvd.code, closed.rcvd.reason]
                async with connect(base + "/ws/echo") as ws:
                    await ws.send("crash")
                    try:
                        await ws.recv()
                    except ConnectionClosed as closed:
                        out["crash_close"] = closed.rcvd.code
                async with connect(base + "/ws/echo", max_size=None) as ws:
                    await ws.send("x" * 100001)
                    try:
                        await ws.recv()
                    except ConnectionClosed as closed:
                        out["too_big"] = closed.rcvd.code
                for path in ("/ws/deny", "/ws/crash-before-accept"):
                    try:
                        async with connect(base + path):
                            pass
                    except InvalidStatus as refused:
                        out[path] = refused.response.status_code
                print(json.dumps(out))

            asyncio.run(main())
            """#, arguments: [String(server.port)])
        #expect(client.status == 0, "\(client.stderr)\n\(server.stderr)")
        let out = try #require(try JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [String: Any])
        #expect(out["subprotocol"] as? String == "chat.v2")
        #expect(out["token_header"] as? Bool == true)
        let scope = try #require(out["scope"] as? [String: Any])
        #expect(scope["path"] as? String == "/ws/scope" && scope["query"] as? String == "room=1")
        #expect(scope["scheme"] as? String == "ws" && scope["http_version"] as? String == "1.1")
        #expect(scope["subprotocols"] as? [String] == ["chat.v2", "chat.v1"])
        #expect(out["text"] as? String == "hello")
        #expect(out["bytes"] as? [Int] == [0, 1, 255])
        #expect(out["fragmented"] as? String == "fragmented")
        #expect(out["pong"] as? Bool == true)
        #expect(out["burst"] as? Bool == true)
        #expect(out["app_close"] as? [AnyHashable] == [4001, "closed by the app"])
        #expect(out["crash_close"] as? Int == 1011)
        #expect(out["too_big"] as? Int == 1009)
        #expect(out["/ws/deny"] as? Int == 403)
        #expect(out["/ws/crash-before-accept"] as? Int == 500)
        #expect(server.waitForLine(containing: "websocket disconnect 4002 'bye from the client'") != nil, "\(server.stderr)")
        #expect(server.waitForLine(containing: "RuntimeError: the websocket handler failed") != nil)
    }

    // MARK: - The handshake (RFC 6455 §4.2.1)

    @Test func invalidHandshakesAreRefusedAndAValidOneIsAccepted() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        func handshake(_ raw: String) throws -> RawHTTP.Response? {
            let client = try RawHTTP(port: server.port)
            client.send(raw)
            return client.response(head: true)
        }
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        let key = "Sec-WebSocket-Key: \(RawWebSocket.sampleKey)\r\n"
        #expect(try handshake("GET /ws/echo HTTP/1.1\r\nHost: x\r\n\(upgrade)Sec-WebSocket-Version: 13\r\n\r\n")?.status == 400)
        #expect(try handshake("GET /ws/echo HTTP/1.1\r\nHost: x\r\n\(upgrade)Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")?.status == 400)
        #expect(try handshake("POST /ws/echo HTTP/1.1\r\nHost: x\r\n\(upgrade)\(key)Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")?.status == 400)
        let old = try #require(try handshake("GET /ws/echo HTTP/1.1\r\nHost: x\r\n\(upgrade)\(key)Sec-WebSocket-Version: 8\r\n\r\n"))
        #expect(old.status == 426 && old.header("sec-websocket-version") == "13")
        // None of them reached the app.
        #expect(!server.stderr.contains("websocket disconnect"))

        let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
        let accepted = try #require(socket.handshake)
        #expect(accepted.status == 101)
        #expect(accepted.header("upgrade")?.lowercased() == "websocket")
        #expect(accepted.header("connection")?.lowercased() == "upgrade")
        #expect(accepted.header("sec-websocket-accept") == RawWebSocket.sampleAccept)
        socket.sendText("still there")
        #expect(socket.next()?.text == "still there")
    }

    // MARK: - Frames (Autobahn-style cases)

    @Test func fragmentsWithAPingBetweenThemAreOneMessageAndThePingIsAnswered() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
        #expect(socket.handshake?.status == 101)
        socket.send(opcode: 1, Array("Hel".utf8), fin: false)
        socket.send(opcode: 9, Array("ping!".utf8))
        socket.send(opcode: 0, Array("lo, ".utf8), fin: false)
        socket.send(opcode: 10, Array("unasked pong".utf8))
        socket.send(opcode: 0, Array("world".utf8))
        #expect(socket.next() == .init(fin: true, opcode: 10, payload: Array("ping!".utf8)))
        #expect(socket.next() == .init(fin: true, opcode: 1, payload: Array("Hello, world".utf8)))
        // A binary message split in many frames, and an empty one.
        socket.send(opcode: 2, [1], fin: false)
        for byte in 2...9 { socket.send(opcode: 0, [UInt8(byte)], fin: false) }
        socket.send(opcode: 0, [10])
        #expect(socket.next() == .init(fin: true, opcode: 2, payload: Array(1...10)))
        socket.send(opcode: 1, [])
        #expect(socket.next() == .init(fin: true, opcode: 1, payload: []))
        // The client closes: the server answers with the same code, the app hears it.
        socket.sendClose(code: 1000, reason: "done")
        let close = try #require(socket.next())
        #expect(close.opcode == 8 && close.closeCode == 1000)
        #expect(socket.closedByServer())
        #expect(server.waitForLine(containing: "websocket disconnect 1000 'done'") != nil)
    }

    @Test func theAppClosesFirstAndTheClientsAnswerEndsTheConnection() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
        socket.sendText("close")
        let close = try #require(socket.next())
        #expect(close.opcode == 8 && close.closeCode == 4001 && close.closeReason == "closed by the app")
        socket.sendClose(code: 4001)
        #expect(socket.closedByServer())
        #expect(server.waitForLine(containing: "websocket disconnect 4001") != nil)
    }

    /// Each case: what the client sends after the handshake, and the close code it must get back.
    @Test(arguments: [
        ("invalid UTF-8 in a text message", [RawWebSocket.frame(opcode: 1, [0x68, 0xC3, 0x28])], 1007),
        ("invalid UTF-8 across fragments", [RawWebSocket.frame(opcode: 1, [0xE2, 0x82], fin: false), RawWebSocket.frame(opcode: 0, [0x41])], 1007),
        ("a close reason that is not UTF-8", [RawWebSocket.frame(opcode: 8, [0x03, 0xE8, 0xFF, 0xFE])], 1007),
        ("a frame larger than --ws-max-size", [RawWebSocket.frame(opcode: 2, [UInt8](repeating: 1, count: 2000))], 1009),
        ("a frame larger than --ws-max-size with more frames behind it",
         [RawWebSocket.frame(opcode: 2, [UInt8](repeating: 1, count: 2000)) + RawWebSocket.frame(opcode: 1, Array("more".utf8))
            + RawWebSocket.frame(opcode: 1, Array("and more".utf8))], 1009),
        ("a message larger than --ws-max-size in small frames",
         [RawWebSocket.frame(opcode: 2, [UInt8](repeating: 1, count: 600), fin: false), RawWebSocket.frame(opcode: 0, [UInt8](repeating: 1, count: 600))], 1009),
        ("an unmasked frame", [RawWebSocket.frame(opcode: 1, Array("hi".utf8), masked: false)], 1002),
        ("a reserved bit", [RawWebSocket.frame(opcode: 1, Array("hi".utf8), rsv: 4)], 1002),
        ("an unknown opcode", [RawWebSocket.frame(opcode: 3, [])], 1002),
        ("a continuation with nothing to continue", [RawWebSocket.frame(opcode: 0, Array("x".utf8))], 1002),
        ("a new message inside a fragmented one", [RawWebSocket.frame(opcode: 1, [0x61], fin: false), RawWebSocket.frame(opcode: 1, [0x62])], 1002),
        ("a fragmented ping", [RawWebSocket.frame(opcode: 9, [1], fin: false)], 1002),
        ("a ping longer than 125 bytes", [RawWebSocket.frame(opcode: 9, [UInt8](repeating: 0, count: 126))], 1002),
        ("a close frame of one byte", [RawWebSocket.frame(opcode: 8, [0x03])], 1002),
        ("a close code no one may send", [RawWebSocket.frame(opcode: 8, [0x03, 0xED])], 1002),
    ] as [(String, [[UInt8]], Int)])
    func aClientThatBreaksTheProtocolIsClosedWithTheRightCode(_ name: String, _ frames: [[UInt8]], _ code: Int) throws {
        let server = try LiveServer(["--ws-max-size", "1000"], app: Self.app)
        defer { server.stop() }
        let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
        #expect(socket.handshake?.status == 101, "\(name)")
        for frame in frames { socket.http.send(frame) }
        let close = socket.next()
        #expect(close?.opcode == 8 && close?.closeCode == code, "\(name): got \(close.map(\.description) ?? "nothing")")
        #expect(socket.closedByServer(), "\(name)")
        // The app hears the disconnect, and the server serves on.
        #expect(server.waitForLine(containing: "websocket disconnect \(code)") != nil, "\(name): \(server.stderr)")
        #expect(try RawHTTP.get(server.port, "/")?.text == "hello")
    }

    /// Messages the app does not take stay in the socket, not in the server: past 1 MiB waiting
    /// for the app, the server stops reading and TCP holds the client back.
    @Test func messagesTheAppDoesNotTakeHoldTheClientBack() throws {
        let server = try LiveServer(["--workers", "1"], app: Self.app)
        defer { server.stop() }
        let socket = try RawWebSocket(port: server.port, path: "/ws/hold")
        #expect(socket.handshake?.status == 101)
        #expect(server.waitForLine(containing: "hold: accepted") != nil)
        // Send 64 KiB messages until the socket takes no more for a while (a send timeout).
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socket.http.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let message = RawWebSocket.frame(opcode: 2, [UInt8](repeating: 7, count: 64 << 10))
        let limit = 64 << 20
        var sent = 0
        var pending = message[...]
        sending: while sent < limit {
            let n = pending.withUnsafeBytes { Glibc.send(socket.http.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break sending }
            sent += n
            pending = pending.dropFirst(n)
            if pending.isEmpty { pending = message[...] }
        }
        // The server read at most what it buffers for the app (1 MiB) plus what the kernel's
        // socket buffers hold; without that limit it would have read all 64 MiB.
        #expect(sent < 32 << 20, "the client sent \(sent >> 20) MiB while the app took nothing")
        // Once the app takes messages again, everything arrives.
        #expect(try RawHTTP.get(server.port, "/release")?.text == "released")
        timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(socket.http.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        socket.http.send(Array(pending))
        sent += pending.count
        socket.sendText("done")
        let messages = sent / message.count
        #expect(socket.next()?.text == String(messages * (64 << 10)))
    }

    @Test func aClientThatDropsTheConnectionIsA1006() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        do {
            let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
            socket.sendText("one")
            #expect(socket.next()?.text == "one")
        }
        #expect(server.waitForLine(containing: "websocket disconnect 1006") != nil, "\(server.stderr)")
    }

    @Test func shutdownClosesWebSocketsWithGoingAway() throws {
        let server = try LiveServer(app: Self.app)
        let socket = try RawWebSocket(port: server.port, path: "/ws/echo")
        socket.sendText("one")
        #expect(socket.next()?.text == "one")
        server.signal(SIGTERM)
        let close = try #require(socket.next())
        #expect(close.opcode == 8 && close.closeCode == 1001)
        socket.sendClose(code: 1001)
        #expect(socket.closedByServer())
        #expect(server.stop() == 0)
    }
}
