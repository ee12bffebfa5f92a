import Foundation
import Logging
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// The server in this process, for what a live test cannot pin down deterministically.
@Suite struct WSGIServerTests {
    @Test func aRequestThatPickedTheOldAppKeepsItsPoolAcrossAReload() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
            .write(to: directory.appendingPathComponent("reloadapp.py"), atomically: true, encoding: .utf8)
        let server = try await AppServer(
            configuration: .init(app: "reloadapp:app", workers: 1, binds: ["127.0.0.1:0"], directory: directory.path),
            runtime: try PythonRuntime.start(), logger: Logger(label: "test"))
        try await server.start()

        // A request picks the current app (as dispatch does)...
        let picked = try #require(server.dispatcher.pick())
        // ...and a reload switches to fresh interpreters before that request reaches the pool.
        let old = try #require(try await server.switchToFreshLoad())
        #expect(old === picked)
        #expect(server.dispatcher.current !== picked)
        let retired = Task { await server.retire(old) }
        // The old pool still takes the request: it is not shut while a request holds it.
        #expect(try await (picked.application as! WSGIApplication).pool.call("len", "abc") == 3)
        picked.release()
        // Once the last holder is done, the old pool closes.
        await retired.value
        await #expect(throws: SubinterpreterError.self) { try await (picked.application as! WSGIApplication).pool.call("len", "abc") }
        await server.stop()
    }
}
