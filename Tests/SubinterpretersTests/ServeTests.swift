import Foundation
import Testing

@testable import Subinterpreters

/// A `subinterp serve` process on a free loopback port, for live tests.
final class LiveServer {
    let process = Process()
    let directory: URL
    let stderrFile: URL
    let stdoutFile: URL
    private(set) var port = 0

    static let app = #"""
        import os, sys, time, uuid, subinterp

        TOKEN = uuid.uuid4().hex
        CLOSED = []
        VERSION = open(os.path.join(os.path.dirname(__file__), "version.txt")).read().strip()

        class Tracked:
            def __init__(self, chunks, delay=0.0):
                self.chunks, self.delay = chunks, delay
            def __iter__(self):
                for chunk in self.chunks:
                    if self.delay:
                        time.sleep(self.delay)
                    yield chunk
            def close(self):
                CLOSED.append(1)

        def app(environ, start_response):
            path = environ["PATH_INFO"]
            if path == "/echo":
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
                return [body]
            if path == "/lines":
                lines = list(environ["wsgi.input"])
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [str(len(lines)).encode()]
            if path == "/stream":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return Tracked([f"part {i}\n".encode() for i in range(4)])
            if path == "/slowstream":
                start_response("200 OK", [("Content-Type", "application/octet-stream")])
                return Tracked([b"x" * 65536] * 400, delay=0.01)
            if path == "/closed":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [str(len(CLOSED)).encode()]
            if path == "/file":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return environ["wsgi.file_wrapper"](open(__file__, "rb"), 1024)
            if path == "/write":
                write = start_response("200 OK", [("Content-Type", "text/plain")])
                write(b"written ")
                return [b"and returned"]
            if path == "/boom":
                raise RuntimeError("secret detail of the failure")
            if path == "/spin":
                while True:
                    pass
            if path == "/sleep":
                time.sleep(float(environ["QUERY_STRING"] or "1"))
            if path == "/crlf":
                start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: injected=1")])
                return [b"never sent"]
            if path == "/error-page":
                try:
                    raise ValueError("before headers")
                except ValueError:
                    start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
                    return [b"handled"]
            if path == "/environ":
                keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
                        "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_CUSTOM"]
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [repr({k: environ.get(k) for k in keys}).encode(),
                        repr((environ["wsgi.version"], environ["wsgi.multithread"], environ["wsgi.multiprocess"])).encode()]
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Token", TOKEN), ("X-Version", VERSION)])
            return [b"hello"]

        from wsgiref.validate import validator
        validated = validator(app)

        FACTORY_CALLS = []
        def create_app():
            FACTORY_CALLS.append(1)
            def factory_app(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [f"made {len(FACTORY_CALLS)} time(s) in this worker".encode()]
            return factory_app
        """#

    init(_ arguments: [String] = [], app: String = "liveapp:app") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.app.write(to: directory.appendingPathComponent("liveapp.py"), atomically: true, encoding: .utf8)
        try "1".write(to: directory.appendingPathComponent("version.txt"), atomically: true, encoding: .utf8)
        stderrFile = directory.appendingPathComponent("stderr")
        stdoutFile = directory.appendingPathComponent("stdout")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        process.executableURL = CLI.executable
        process.arguments = ["serve", app, "--bind", "127.0.0.1:0", "--chdir", directory.path] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let line = stderr.split(separator: "\n").first(where: { $0.contains("subinterp: serving") }),
                let range = line.range(of: "http://127.0.0.1:"),
                let port = Int(line[range.upperBound...].prefix { $0.isNumber })
            {
                self.port = port
                return
            }
            if !process.isRunning { break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.terminate()
        throw SubinterpreterError(.runtimeFailed, "the server did not start: \(stderr)")
    }

    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }
    var stdout: String { (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "" }

    func setVersion(_ version: String) throws {
        try version.write(to: directory.appendingPathComponent("version.txt"), atomically: true, encoding: .utf8)
    }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning { signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { signal(SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// A deliberately plain HTTP/1.1 client over a blocking socket, so tests control every byte.
final class RawHTTP {
    let fd: Int32

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    init(port: Int, timeout: Int = 15) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw SubinterpreterError(.runtimeFailed, "cannot connect to port \(port)") }
    }

    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    private var buffer: [UInt8] = []
    private var closed = false

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n <= 0 {
            closed = true
            return false
        }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    private func line() -> String? {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .init(charactersIn: "\r"))
                buffer.removeFirst(i + 1)
                return line
            }
            if !fill() { return nil }
        }
    }

    private func take(_ count: Int) -> [UInt8] {
        while buffer.count < count && fill() {}
        let n = min(count, buffer.count)
        defer { buffer.removeFirst(n) }
        return Array(buffer[..<n])
    }

    /// Reads one response; `head` says the request was HEAD (no body follows).
    func response(head: Bool = false) -> Response? {
        guard let statusLine = line(), statusLine.hasPrefix("HTTP/") else { return nil }
        let status = Int(statusLine.split(separator: " ")[1]) ?? 0
        var headers: [(String, String)] = []
        while let line = line(), !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers.append((String(parts[0]), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""))
        }
        var response = Response(status: status, headers: headers, body: [])
        if head || status == 100 || status == 204 || status == 304 { return response }
        if let length = response.header("content-length").flatMap({ Int($0) }) {
            response.body = take(length)
        } else if response.header("transfer-encoding")?.lowercased() == "chunked" {
            while let sizeLine = line(), let size = Int(sizeLine.split(separator: ";")[0], radix: 16) {
                if size == 0 {
                    _ = line()
                    break
                }
                response.body += take(size)
                _ = line()
            }
        } else {
            while fill() {}
            response.body = buffer
            buffer = []
        }
        return response
    }

    /// Whether the server closed the connection (reads until EOF or timeout).
    func isClosedByServer() -> Bool {
        while fill() {}
        return closed
    }

    static func get(_ port: Int, _ path: String, headers: String = "") throws -> Response? {
        let client = try RawHTTP(port: port)
        client.send("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\(headers)Connection: close\r\n\r\n")
        return client.response()
    }
}

@Suite struct ServeTests {
    @Test func keepAlivePipeliningAndHead() throws {
        let server = try LiveServer(["--workers", "2"])
        defer { server.stop() }
        let client = try RawHTTP(port: server.port)
        client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        let first = try #require(client.response())
        #expect(first.status == 200 && first.text == "hello")
        let second = try #require(client.response())
        #expect(second.header("transfer-encoding") == "chunked")
        #expect(second.text == "part 0\npart 1\npart 2\npart 3\n")
        let third = try #require(client.response(head: true))
        #expect(third.status == 200 && third.body.isEmpty)
        // Still open: keep-alive.
        client.send("GET /closed HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(client.response()?.status == 200)
    }

    @Test func requestBodiesChunkedAndExpectContinue() throws {
        let server = try LiveServer()
        defer { server.stop() }
        let chunked = try RawHTTP(port: server.port)
        chunked.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        #expect(chunked.response()?.text == "hello world")

        let expecting = try RawHTTP(port: server.port)
        expecting.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        #expect(expecting.response()?.status == 100)
        expecting.send("data")
        #expect(expecting.response()?.text == "data")

        let lines = try RawHTTP(port: server.port)
        lines.send("POST /lines HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\none\ntwo\nthree")
        #expect(lines.response()?.text == "3")
    }

    @Test func pep3333Details() throws {
        let server = try LiveServer()
        defer { server.stop() }
        let environ = try #require(try RawHTTP.get(server.port, "/environ?a=1&b=%20", headers: "X-Custom: one\r\nX-Custom: two\r\n"))
        #expect(environ.text.contains("'REQUEST_METHOD': 'GET'"))
        #expect(environ.text.contains("'SCRIPT_NAME': ''"))
        #expect(environ.text.contains("'QUERY_STRING': 'a=1&b=%20'"))
        #expect(environ.text.contains("'HTTP_X_CUSTOM': 'one,two'"))
        #expect(environ.text.contains("((1, 0), False, True)"))
        #expect(try RawHTTP.get(server.port, "/write")?.text == "written and returned")
        let file = try #require(try RawHTTP.get(server.port, "/file"))
        #expect(file.text.contains("def app(environ, start_response)"))
        let page = try #require(try RawHTTP.get(server.port, "/error-page"))
        #expect(page.status == 500 && page.text == "handled")
    }

    @Test func wsgirefValidatorFindsNoViolation() throws {
        let server = try LiveServer(app: "liveapp:validated")
        defer { server.stop() }
        for path in ["/", "/stream", "/write", "/environ", "/file"] {
            let response = try #require(try RawHTTP.get(server.port, path))
            #expect(response.status == 200, "\(path): \(response.text)\n\(server.stderr)")
        }
        let post = try RawHTTP(port: server.port)
        post.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nabc")
        #expect(post.response()?.text == "abc")
    }

    @Test func badRequestsGetTheRightStatusAndTheServerKeepsServing() throws {
        let server = try LiveServer(["--max-body", "1000"])
        defer { server.stop() }
        func send(_ raw: String) throws -> Int? {
            let client = try RawHTTP(port: server.port)
            client.send(raw)
            return client.response()?.status
        }
        #expect(try send("GARBAGE\r\n\r\n") == 400)
        #expect(try send("GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n") == 400)
        #expect(try send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 20_000))\r\n\r\n") == 431)
        #expect(try send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n") == 413)
        #expect(try send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n\(String(repeating: "b", count: 2048))\r\n0\r\n\r\n") == 413)
        #expect(try send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400)
        #expect(try send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") == 400)
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
    }

    @Test func appErrorsAreFiveHundredWithTheTracebackOnlyInTheLog() throws {
        let server = try LiveServer()
        defer { server.stop() }
        let boom = try #require(try RawHTTP.get(server.port, "/boom"))
        #expect(boom.status == 500)
        #expect(!boom.text.contains("secret detail"))
        let crlf = try #require(try RawHTTP.get(server.port, "/crlf"))
        #expect(crlf.status == 500)
        #expect(crlf.header("set-cookie") == nil)
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
        Thread.sleep(forTimeInterval: 0.2)
        #expect(server.stderr.contains("RuntimeError: secret detail of the failure"))
        #expect(server.stderr.contains("Traceback"))
    }

    @Test func aRequestPastTheTimeoutGets504AndTheWorkerServesOn() throws {
        let server = try LiveServer(["--workers", "1", "--timeout", "0.5"])
        defer { server.stop() }
        let started = Date()
        #expect(try RawHTTP.get(server.port, "/spin")?.status == 504)
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
    }

    @Test func aClientThatLeavesMidResponseFreesTheWorkerAndClosesTheIterable() throws {
        let server = try LiveServer(["--workers", "1"])
        defer { server.stop() }
        do {
            let client = try RawHTTP(port: server.port)
            client.send("GET /slowstream HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = client.response(head: true)
        }  // the client goes away after the head
        let deadline = Date().addingTimeInterval(10)
        var closed = "0"
        while Date() < deadline {
            closed = try RawHTTP.get(server.port, "/closed")?.text ?? "0"
            if closed != "0" { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(closed == "1")
    }

    @Test func idleAndSlowClientsDoNotHoldTheWorker() throws {
        let server = try LiveServer(["--workers", "1"])
        defer { server.stop() }
        let idle = try RawHTTP(port: server.port)
        idle.send("GET / HTTP/1.1\r\nHost: x\r\n")  // never finishes its head
        let halfBody = try RawHTTP(port: server.port)
        halfBody.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
        #expect(idle.isClosedByServer())
    }

    @Test func sigtermFinishesInFlightRequestsThenExitsZero() throws {
        let server = try LiveServer(["--workers", "1"])
        let client = try RawHTTP(port: server.port)
        client.send("GET /sleep?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        Thread.sleep(forTimeInterval: 0.15)
        server.signal(SIGTERM)
        #expect(client.response()?.status == 200)
        #expect(server.stop() == 0)
    }

    @Test func sighupReloadsWithoutDroppingRequests() throws {
        let server = try LiveServer(["--workers", "2"])
        defer { server.stop() }
        let before = try #require(try RawHTTP.get(server.port, "/"))
        #expect(before.header("x-version") == "1")
        try server.setVersion("2")
        let stop = Date().addingTimeInterval(8)
        var failures = 0
        var sawNew = false
        server.signal(SIGHUP)
        while Date() < stop && !sawNew {
            guard let response = try RawHTTP.get(server.port, "/"), response.status == 200 else {
                failures += 1
                continue
            }
            sawNew = response.header("x-version") == "2"
        }
        #expect(sawNew, "\(server.stderr)")
        #expect(failures == 0)
    }

    @Test func maxRequestsRecyclesWorkers() throws {
        let server = try LiveServer(["--workers", "1", "--max-requests", "2"])
        defer { server.stop() }
        var tokens: [String] = []
        for _ in 0..<5 { tokens.append(try RawHTTP.get(server.port, "/")?.header("x-token") ?? "") }
        #expect(tokens[0] == tokens[1])
        #expect(tokens[1] != tokens[2])
        #expect(tokens[2] == tokens[3])
        #expect(!tokens.contains(""))
    }

    @Test func accessLogAndMetrics() throws {
        let server = try LiveServer(["--access-log", "--metrics-bind", "127.0.0.1:0"])
        defer { server.stop() }
        #expect(try RawHTTP.get(server.port, "/?q=1")?.status == 200)
        #expect(try RawHTTP.get(server.port, "/boom")?.status == 500)
        Thread.sleep(forTimeInterval: 0.2)
        let lines = server.stdout.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("127.0.0.1 - - [") && $0.hasSuffix("\"GET /?q=1 HTTP/1.1\" 200 5") })
        let metricsLine = try #require(server.stderr.split(separator: "\n").first { $0.contains("metrics on") })
        let range = try #require(metricsLine.range(of: "metrics on http://127.0.0.1:"))
        let port = try #require(Int(metricsLine[range.upperBound...].prefix { $0.isNumber }))
        let metrics = try #require(try RawHTTP.get(port, "/metrics"))
        #expect(metrics.text.contains("subinterp_requests_total{status=\"200\"} 1"))
        #expect(metrics.text.contains("subinterp_requests_total{status=\"500\"} 1"))
        #expect(metrics.text.contains("subinterp_request_duration_seconds_count 2"))
        #expect(metrics.text.contains("subinterp_busy_workers"))
    }

    @Test func factoryFormCallsTheFactoryOncePerWorker() throws {
        let server = try LiveServer(["--workers", "1"], app: "liveapp:create_app()")
        defer { server.stop() }
        #expect(try RawHTTP.get(server.port, "/")?.text == "made 1 time(s) in this worker")
        #expect(try RawHTTP.get(server.port, "/")?.text == "made 1 time(s) in this worker")
    }

    @Test func badServeInputIsOneLine() throws {
        let missing = try CLI.run(["serve", "no_such_module_abc:app", "--bind", "127.0.0.1:0"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("could not load no_such_module_abc:app"))
        let badBind = try CLI.run(["serve", "x:app", "--bind", "nonsense"])
        #expect(badBind.status != 0)
        #expect(badBind.stderr.contains("HOST:PORT"))
    }
}
