import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `subinterp serve` running real framework apps (Examples/wsgi/) from a virtual environment
/// with Flask, Django, Bottle, Falcon and numpy installed, spoken to over real sockets.
///
/// The environment comes from `$SUBINTERP_TEST_VENV` (its python); make it with
/// `export SUBINTERP_TEST_VENV="$(scripts/test-venv | tail -n 1)"`. Without it these tests fail
/// and say so, rather than pass without having run.
@Suite(.serialized) struct RealAppTests {
    // MARK: Flask

    @Test func flaskIndexReturnsJSON() throws {
        let server = try ServedApp.start("flask_app:app")
        defer { server.kill() }
        let response = try HTTPClient.get(port: server.port, "/")
        #expect(response.status == 200, "\(response)")
        #expect(response.header("content-type") == "application/json")
        #expect(try response.jsonObject() as? [String: String] == ["hello": "world"])
        try server.expectCleanStop()
    }

    @Test func flaskCPURouteComputesInEveryWorker() throws {
        let server = try ServedApp.start("flask_app:app")
        defer { server.kill() }
        let n = 100_000, port = server.port
        let expected = (n - 1) * n * (2 * n - 1) / 6
        let one = try HTTPClient.get(port: server.port, "/cpu?n=\(n)")
        #expect(one.status == 200, "\(one)")
        let object = try one.jsonObject() as? [String: Any]
        #expect(object?["n"] as? Int == n)
        #expect(object?["sum_of_squares"] as? Int == expected)

        // Several at once, so both worker interpreters compute.
        let results = Mutex<[Result<HTTPResponse, any Error>]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            let result = Result { try HTTPClient.get(port: port, "/cpu?n=\(n + index)") }
            results.withLock { $0.append(result) }
        }
        let responses = try results.withLock { $0 }.map { try $0.get() }
        #expect(responses.count == 4)
        let sums = try responses.map { response -> Int in
            #expect(response.status == 200, "\(response)")
            return try (response.jsonObject() as? [String: Any])?["sum_of_squares"] as? Int ?? -1
        }
        #expect(Set(sums) == Set((0..<4).map { i in (n + i - 1) * (n + i) * (2 * (n + i) - 1) / 6 }))

        let bad = try HTTPClient.get(port: server.port, "/cpu?n=-1")
        #expect(bad.status == 400, "\(bad)")
        try server.expectCleanStop()
    }

    @Test func flaskStreamSendsEveryChunkAsItIsMade() throws {
        let server = try ServedApp.start("flask_app:app")
        defer { server.kill() }
        // Spaced chunks: each goes out on its own, before the generator makes the next.
        let spaced = try HTTPClient.get(port: server.port, "/stream?count=5&delay=0.25")
        let lines = (0..<5).map { "chunk \($0)\n" }
        #expect(spaced.status == 200, "\(spaced)")
        #expect(spaced.header("content-type") == "text/plain; charset=utf-8")
        #expect(spaced.header("transfer-encoding") == "chunked")
        #expect(spaced.text == lines.joined())
        #expect(spaced.chunks?.map { String(decoding: $0, as: UTF8.self) } == lines)
        if let first = spaced.arrival(of: "chunk 0"), let last = spaced.arrival(of: "chunk 4") {
            // The last chunk is made a second after the first; a buffered response would bring both at once.
            #expect(last - first > 0.7, "chunk 0 came at \(first) s, chunk 4 at \(last) s")
        } else {
            Issue.record("the chunks are missing from the raw response: \(spaced)")
        }

        // Many small chunks back to back: all of them, in order.
        let count = 2000
        let many = try HTTPClient.get(port: server.port, "/stream?count=\(count)")
        #expect(many.status == 200, "\(many)")
        #expect(many.text == (0..<count).map { "chunk \($0)\n" }.joined())
        try server.expectCleanStop()
    }

    @Test func flaskReadsAChunkedBody() throws {
        // Werkzeug reads CONTENT_LENGTH bytes, or the whole stream only with wsgi.input_terminated.
        let server = try ServedApp.start("flask_app:app", workers: 1)
        defer { server.kill() }
        let client = try RawHTTP(port: server.port)
        client.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        let response = try #require(client.response())
        #expect(response.status == 200, "\(response.text)")
        let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        #expect(object?["length"] as? Int == 11, "\(response.text)")
        try server.expectCleanStop()
    }

    // MARK: Django

    @Test func djangoServesItsURLPatterns() throws {
        // Django imports zoneinfo, whose C part needs the C datetime the host refuses: the
        // host refuses `_zoneinfo` too, so zoneinfo uses its pure-Python version.
        try serveDjango()
    }

    private func serveDjango() throws {
        let server = try ServedApp.start("django_app:application")
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(index.header("content-type") == "application/json")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "django"])

        let hello = try HTTPClient.get(port: server.port, "/hello/J%C3%BCrgen")
        #expect(hello.status == 200, "\(hello)")
        #expect(hello.header("content-type") == "text/plain; charset=utf-8")
        #expect(hello.text == "Hello, Jürgen!\n")

        let info = try HTTPClient.get(port: server.port, "/info?a=1&b=two")
        #expect(info.status == 200, "\(info)")
        let object = try info.jsonObject() as? [String: Any]
        #expect(object?["method"] as? String == "GET")
        #expect(object?["path"] as? String == "/info")
        #expect(object?["query"] as? [String: String] == ["a": "1", "b": "two"])
        #expect(object?["host"] as? String == "127.0.0.1:\(server.port)")

        let missing = try HTTPClient.get(port: server.port, "/no/such/page")
        #expect(missing.status == 404, "\(missing)")
        try server.expectCleanStop()
    }

    // MARK: Bottle

    @Test func bottleServesJSONAndText() throws {
        let server = try ServedApp.start("bottle_app:app")
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(index.header("content-type") == "application/json")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "bottle"])

        let hello = try HTTPClient.get(port: server.port, "/hello/J%C3%BCrgen")
        #expect(hello.status == 200, "\(hello)")
        #expect(hello.text == "Hello, Jürgen!\n")

        let echo = try HTTPClient.request(
            port: server.port, method: "POST", "/echo", headers: [("Content-Type", "application/json")],
            body: Array(#"{"numbers": [1, 2, 3]}"#.utf8))
        #expect(echo.status == 200, "\(echo)")
        let object = try echo.jsonObject() as? [String: Any]
        #expect(object?["length"] as? Int == 22)
        #expect((object?["json"] as? [String: Any])?["numbers"] as? [Int] == [1, 2, 3])
        try server.expectCleanStop()
    }

    // MARK: Falcon

    @Test func falconServesItsResources() throws {
        let server = try ServedApp.start("falcon_app:app")
        defer { server.kill() }
        let index = try HTTPClient.get(port: server.port, "/")
        #expect(index.status == 200, "\(index)")
        #expect(index.header("content-type") == "application/json")
        #expect(try index.jsonObject() as? [String: String] == ["hello": "world", "framework": "falcon"])

        let missing = try HTTPClient.get(port: server.port, "/items/nothing")
        #expect(missing.status == 404, "\(missing)")
        #expect((try missing.jsonObject() as? [String: Any])?["title"] as? String == "no such item")

        let put = try HTTPClient.request(
            port: server.port, method: "PUT", "/items/a", headers: [("Content-Type", "application/json")], body: Array("42".utf8))
        #expect(put.status == 204, "\(put)")
        // A 204 has no content and no Transfer-Encoding (RFC 9110 §15.3.5, RFC 9112 §6.1).
        #expect(put.header("transfer-encoding") == nil, "\(put)")
        #expect(put.body.isEmpty, "\(put)")
        try server.expectCleanStop()
    }

    // MARK: An app that cannot run in a sub-interpreter

    /// Issue 10, item 2: under `--isolation auto` (the default) one warning names the module,
    /// and the app serves in as many worker processes as workers were asked for.
    @Test func incompatibleAppServesInWorkerProcessesUnderAuto() throws {
        let server = try ServedApp.start("incompatible_app:app", workers: 2)
        defer { server.kill() }
        let response = try HTTPClient.get(port: server.port, "/?n=10")
        #expect(response.status == 200, "\(response)")
        let object = try response.jsonObject() as? [String: Any]
        #expect(object?["sum"] as? Int == 45 && object?["mean"] as? Double == 4.5, "\(response)")
        let log = server.stderr
        let warnings = log.split(separator: "\n").filter { $0.contains("warning") }
        #expect(warnings.count == 1, "\(log)")
        #expect(
            warnings.first?.hasPrefix(
                "subinterp: warning: incompatible_app:app cannot run in a sub-interpreter (extension module 'numpy._core._multiarray_umath'")
                == true, "\(log)")
        #expect(log.contains("with 2 worker processes (WSGI, one request at a time each)"), "\(log)")
        // Each worker process runs the app in its main interpreter: requests at once use both.
        let pids = Mutex<Set<Int>>([])
        let port = server.port
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            if let object = try? HTTPClient.get(port: port, "/?n=2000000").jsonObject() as? [String: Any], let pid = object["pid"] as? Int {
                pids.withLock { _ = $0.insert(pid) }
            }
        }
        #expect(pids.withLock { $0.count } == 2)
        try server.expectCleanStop()
    }

    @Test func incompatibleAppUnderAutoFallsBackInTheSupervisorToo() throws {
        let server = try ServedApp.start("incompatible_app:app", workers: 1, extra: ["--processes", "2"])
        defer { server.kill() }
        #expect(try HTTPClient.get(port: server.port, "/?n=4").status == 200)
        let log = server.stderr
        #expect(log.split(separator: "\n").filter { $0.contains("cannot run in a sub-interpreter") }.count == 1, "\(log)")
        #expect(log.contains("with 2 worker processes (WSGI"), "\(log)")
        try server.expectCleanStop()
    }

    @Test func incompatibleAppFailsAtStartupNamingTheModuleUnderInterpreterIsolation() throws {
        let result = try ServedApp.runUntilExit("incompatible_app:app", extra: ["--isolation", "interpreters"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("numpy._core._multiarray_umath"), "\(result.stderr)")
        #expect(result.stderr.contains("subinterp check"), "\(result.stderr)")
        #expect(!result.stderr.contains("subinterp: serving"), "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal"), "\(result.stderr)")
    }

    /// FastAPI needs pydantic-core, which refuses sub-interpreters: an ASGI app in processes
    /// isolation runs its event loop in each worker process's main interpreter.
    @Test func fastAPIServesInWorkerProcesses() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-fastapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try """
            from fastapi import FastAPI
            from pydantic import BaseModel

            app = FastAPI()

            class Item(BaseModel):
                name: str
                price: float

            @app.post("/items")
            async def create(item: Item):
                return {"name": item.name, "total": item.price * 2}
            """.write(to: directory.appendingPathComponent("fastapi_app.py"), atomically: true, encoding: .utf8)
        let server = try ServedApp.start("fastapi_app:app", workers: 2, extra: ["--chdir", directory.path, "--isolation", "processes"])
        defer { server.kill() }
        let created = try HTTPClient.request(
            port: server.port, method: "POST", "/items", headers: [("Content-Type", "application/json")],
            body: Array(#"{"name": "pen", "price": 1.25}"#.utf8))
        #expect(created.status == 200, "\(created)")
        let object = try created.jsonObject() as? [String: Any]
        #expect(object?["name"] as? String == "pen" && object?["total"] as? Double == 2.5, "\(created)")
        let invalid = try HTTPClient.request(
            port: server.port, method: "POST", "/items", headers: [("Content-Type", "application/json")], body: Array(#"{"name": 1}"#.utf8))
        #expect(invalid.status == 422, "\(invalid)")
        #expect(server.stderr.contains("with 2 worker processes (ASGI, one event loop each)"), "\(server.stderr)")
        try server.expectCleanStop()
    }
}

// MARK: - The server as a child process

private func sendSignal(_ pid: Int32, _ signal: Int32) {
    _ = kill(pid, signal)
}

struct RealAppSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `subinterp serve APP` started from Examples/wsgi with the test venv's Python.
final class ServedApp {
    let process: Process
    let port: Int
    private let directory: URL

    static let startupLimit: TimeInterval = 60
    static let stopLimit: TimeInterval = 30

    static var examples: String { examples("wsgi") }

    /// `Examples/KIND` (wsgi, asgi).
    static func examples(_ kind: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Examples/\(kind)").path
    }

    /// The test venv's python: `$SUBINTERP_TEST_VENV`, else made (once) by scripts/test-venv, so
    /// a plain `swift test` works on a fresh machine.
    static func venvPython() throws -> String {
        guard let python = ProcessInfo.processInfo.environment["SUBINTERP_TEST_VENV"], !python.isEmpty else {
            return try madeVenv.get()
        }
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw RealAppSetupError(
                "SUBINTERP_TEST_VENV=\(python) is not an executable python; run scripts/test-venv and set it to its last line.")
        }
        return python
    }

    private static let madeVenv: Result<String, RealAppSetupError> = {
        let repository = URL(fileURLWithPath: examples).deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [repository.appendingPathComponent("scripts/test-venv").path]
        process.currentDirectoryURL = repository
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        do { try process.run() } catch { return .failure(RealAppSetupError("cannot run scripts/test-venv: \(error)")) }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let python = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard process.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: python) else {
            return .failure(RealAppSetupError(
                "scripts/test-venv failed (status \(process.terminationStatus)); run it by hand to see why, or set SUBINTERP_TEST_VENV"))
        }
        return .success(python)
    }()

    private init(process: Process, port: Int, directory: URL) {
        self.process = process
        self.port = port
        self.directory = directory
    }

    private static func launch(_ app: String, workers: Int, extra: [String], examples: String = examples) throws -> (Process, URL) {
        let python = try venvPython()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let out = directory.appendingPathComponent("out"), err = directory.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = CLI.executable
        process.arguments =
            ["serve", app, "--python", python, "--chdir", examples, "--bind", "127.0.0.1:0", "--workers", String(workers)] + extra
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SUBINTERP_") }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        return (process, directory)
    }

    private static func stderr(in directory: URL) -> String {
        (try? String(contentsOf: directory.appendingPathComponent("err"), encoding: .utf8)) ?? ""
    }

    /// Starts the server and waits for its readiness line.
    static func start(_ app: String, workers: Int = 2, extra: [String] = [], examples: String = examples) throws -> ServedApp {
        let (process, directory) = try launch(app, workers: workers, extra: extra, examples: examples)
        let deadline = Date().addingTimeInterval(startupLimit)
        let pattern = try Regex(#"subinterp: serving \S+ on http://127\.0\.0\.1:(\d+)"#)
        while true {
            let text = stderr(in: directory)
            if let match = text.firstMatch(of: pattern), let port = Int(match.output[1].substring ?? "") {
                return ServedApp(process: process, port: port, directory: directory)
            }
            if !process.isRunning {
                process.waitUntilExit()
                throw RealAppSetupError("subinterp serve \(app) exited with \(process.terminationStatus) before it was ready:\n\(text)")
            }
            if Date() > deadline {
                sendSignal(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw RealAppSetupError("subinterp serve \(app) was not ready after \(Int(startupLimit)) s:\n\(text)")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Runs a server that is expected to fail at startup; kills it if it is still up after the startup limit.
    static func runUntilExit(
        _ app: String, workers: Int = 2, extra: [String] = [], examples: String = examples
    ) throws -> (status: Int32, stderr: String) {
        let (process, directory) = try launch(app, workers: workers, extra: extra, examples: examples)
        defer { try? FileManager.default.removeItem(at: directory) }
        let deadline = Date().addingTimeInterval(startupLimit)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            sendSignal(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            Issue.record("subinterp serve \(app) was still running after \(Int(startupLimit)) s")
        }
        process.waitUntilExit()
        return (process.terminationStatus, stderr(in: directory))
    }

    var stderr: String { Self.stderr(in: directory) }

    /// SIGTERM, then waits for the exit; the server must finish cleanly with status 0.
    func expectCleanStop(sourceLocation: SourceLocation = #_sourceLocation) throws {
        sendSignal(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(Self.stopLimit)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill()
            Issue.record("the server did not exit within \(Int(Self.stopLimit)) s of SIGTERM:\n\(stderr)", sourceLocation: sourceLocation)
            return
        }
        process.waitUntilExit()
        let log = stderr
        #expect(process.terminationReason == .exit, "\(log)", sourceLocation: sourceLocation)
        #expect(process.terminationStatus == 0, "\(log)", sourceLocation: sourceLocation)
        #expect(!log.contains("Fatal"), "\(log)", sourceLocation: sourceLocation)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Ends the server at once if it is still running (a test that threw on the way).
    func kill() {
        if process.isRunning {
            sendSignal(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

// MARK: - A small HTTP/1.1 client over a blocking socket

struct HTTPResponse: CustomStringConvertible, Sendable {
    var status: Int
    var reason: String
    var headers: [(String, String)]
    var body: [UInt8]
    /// The chunks of a `Transfer-Encoding: chunked` body, as framed on the wire.
    var chunks: [[UInt8]]?
    /// The whole response as received, and when (seconds after the request was sent) each
    /// read ended: `(seconds, bytes received so far)`.
    var raw: [UInt8]
    var arrivals: [(seconds: Double, total: Int)]

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    var text: String { String(decoding: body, as: UTF8.self) }

    func jsonObject() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(body))
    }

    /// When the first byte of `marker` arrived, in seconds after the request was sent.
    func arrival(of marker: String) -> Double? {
        let needle = Array(marker.utf8)
        guard needle.count <= raw.count,
            let offset = (0...(raw.count - needle.count)).first(where: { raw[$0..<($0 + needle.count)].elementsEqual(needle) })
        else { return nil }
        return arrivals.first { $0.total > offset }?.seconds
    }

    var description: String {
        let head = headers.map { "\($0.0): \($0.1)" }.joined(separator: "\n")
        return "HTTP \(status) \(reason)\n\(head)\n\n\(String(decoding: body.prefix(2000), as: UTF8.self))"
    }
}

enum HTTPClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func get(port: Int, _ target: String, headers: [(String, String)] = []) throws -> HTTPResponse {
        try request(port: port, method: "GET", target, headers: headers)
    }

    /// Sends one request with `Connection: close` to 127.0.0.1:`port` and reads the response to EOF.
    static func request(
        port: Int, method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8] = [], timeout: Int = 60
    ) throws -> HTTPResponse {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }

        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) { head += "Content-Length: \(body.count)\r\n" }
        let outgoing = Array((head + "\r\n").utf8) + body
        var sent = 0
        while sent < outgoing.count {
            let n = outgoing[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "send: \(String(cString: strerror(errno)))")
            }
            sent += n
        }

        let started = Date()
        var raw: [UInt8] = []
        var arrivals: [(seconds: Double, total: Int)] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = errno == EAGAIN || errno == EWOULDBLOCK ? "timed out after \(timeout) s" : String(cString: strerror(errno))
                throw Failure(description: "reading the response to \(method) \(target): \(reason); got so far:\n\(String(decoding: raw, as: UTF8.self))")
            }
            if n == 0 { break }
            raw.append(contentsOf: buffer[0..<n])
            arrivals.append((Date().timeIntervalSince(started), raw.count))
        }
        return try parse(raw, arrivals: arrivals, isHead: method == "HEAD")
    }

    static func parse(_ raw: [UInt8], arrivals: [(seconds: Double, total: Int)], isHead: Bool) throws -> HTTPResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = (0..<max(0, raw.count - 3)).first(where: { raw[$0..<($0 + 4)].elementsEqual(separator) }) else {
            throw Failure(description: "no complete response head in:\n\(String(decoding: raw, as: UTF8.self))")
        }
        let lines = String(decoding: raw[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2).map(String.init)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw Failure(description: "bad status line: \(lines[0])")
        }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var response = HTTPResponse(
            status: status, reason: statusParts.count > 2 ? statusParts[2] : "", headers: headers, body: [], chunks: nil,
            raw: raw, arrivals: arrivals)
        let rest = Array(raw[(end + 4)...])
        if isHead || status / 100 == 1 || status == 204 || status == 304 {
            response.body = rest
            return response
        }
        if response.header("transfer-encoding")?.lowercased() == "chunked" {
            var chunks: [[UInt8]] = []
            var index = 0
            while true {
                guard let lineEnd = (index..<max(index, rest.count - 1)).first(where: { rest[$0] == 13 && rest[$0 + 1] == 10 }) else {
                    throw Failure(description: "chunked body ends without its last chunk:\n\(String(decoding: rest, as: UTF8.self))")
                }
                let sizeText = String(decoding: rest[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw Failure(description: "bad chunk size line '\(sizeText)'")
                }
                index = lineEnd + 2
                if size == 0 { break }
                guard index + size + 2 <= rest.count else { throw Failure(description: "truncated chunk of \(size) bytes") }
                chunks.append(Array(rest[index..<(index + size)]))
                index += size + 2
            }
            response.chunks = chunks
            response.body = chunks.flatMap { $0 }
        } else if let length = response.header("content-length").flatMap({ Int($0) }) {
            guard rest.count >= length else { throw Failure(description: "body of \(rest.count) bytes, Content-Length \(length)") }
            response.body = Array(rest.prefix(length))
        } else {
            response.body = rest
        }
        return response
    }
}

/// `subinterp check` against real packages in the test virtual environment.
@Suite struct CheckInVirtualEnvironmentTests {
    @Test func pureStackIsOkAndRefusingExtensionsAreNamed() throws {
        let python = try ServedApp.venvPython()
        let result = try CLI.run(["check", "--python", python, "--json", "flask", "numpy", "pydantic_core", "orjson"])
        #expect(result.status == 1)
        let lines = result.stdout.split(separator: "\n").map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String]) ?? [:]
        }
        #expect(lines.map { $0["status"] } == ["ok", "incompatible", "incompatible", "incompatible"])
        #expect(lines[1]["extension_module"] == "numpy._core._multiarray_umath")
        #expect(lines[2]["extension_module"] == "pydantic_core._pydantic_core")
        #expect(lines[3]["extension_module"] == "orjson.orjson")
    }
}
