import Foundation
import Logging
import Synchronization
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// The ASGI server in this process, for what a subprocess cannot show: what it keeps in memory.
@Suite struct ASGIServerTests {
    @Test func everyRequestAndConnectionIsLetGoOfOnceItIsOver() async throws {
        let directory = try LiveServer.writeApps()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try await AppServer(
            configuration: .init(app: "liveasgi:app", workers: 2, binds: ["127.0.0.1:0"], directory: directory),
            runtime: try PythonRuntime.start(), logger: Logger(label: "test"))
        try await server.start()
        let port = try #require(server.addresses.first?.port)
        let bridge = try #require(server.dispatcher.current?.application as? ASGIBridge)
        for _ in 0..<200 { #expect(try RawHTTP.get(port, "/")?.status == 200) }
        #expect(try RawHTTP.get(port, "/boom")?.status == 500)
        let keepAlive = try RawHTTP(port: port)
        for _ in 0..<50 {
            keepAlive.send("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            #expect(keepAlive.response()?.status == 200)
        }
        do {
            let socket = try RawWebSocket(port: port, path: "/ws/echo")
            socket.sendText("one")
            #expect(socket.next()?.text == "one")
            socket.sendClose(code: 1000)
            #expect(socket.next()?.closeCode == 1000)
            #expect(socket.closedByServer())
        }
        // Let go of asynchronously (after the last write, the close). The count is the signal;
        // the pause only paces the checks, and the deadline fails the test.
        let deadline = ContinuousClock.now + .seconds(20)
        func alive() -> Int { bridge.application.workers.reduce(0) { $0 + $1.exchangesAlive.load(ordering: .relaxed) } }
        while alive() > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(alive() == 0, "\(alive()) requests or connections are still held")
        await server.stop()
    }
}
