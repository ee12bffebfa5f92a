import Foundation
import Testing

@testable import Subinterpreters

#if canImport(Glibc)
import Glibc
#endif

/// A `subinterp serve` process on a free loopback port, for live tests.
final class LiveServer {
    let process = Process()
    let directory: URL
    let stderrFile: URL
    let stdoutFile: URL
    private(set) var port = 0

    static let app = #"""
        import enum, hashlib, json, os, sys, time, uuid, subinterp

        TOKEN = uuid.uuid4().hex
        CLOSED = []
        SEEN = []
        VERSION = open(os.path.join(os.path.dirname(__file__), "version.txt")).read().strip()

        def log(text):
            print(text, file=sys.stderr, flush=True)

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
                log("iterable closed")

        class Color(enum.StrEnum):
            RED = "red"

        class Legacy(str, enum.Enum):
            BLUE = "blue"

        def app(environ, start_response):
            path = environ["PATH_INFO"]
            SEEN.append(path)
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
            if path == "/big":
                log("big response started")
                size = int(environ["QUERY_STRING"] or "1048576")
                start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
                return Tracked([b"y" * 65536] * (size // 65536) + [b"y" * (size % 65536)])
            if path == "/written":
                size = int(environ["QUERY_STRING"])
                write = start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
                write(b"w" * size)
                return []
            if path == "/closed":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [str(len(CLOSED)).encode()]
            if path == "/seen":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps(SEEN).encode()]
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
            if path == "/swallow":
                # A retry loop that catches everything: every interrupt is swallowed.
                log("swallowing started")
                while True:
                    try:
                        time.sleep(0.05)
                    except BaseException:
                        pass
            if path == "/sleep":
                log("sleep started")
                time.sleep(float(environ["QUERY_STRING"] or "1"))
            if path == "/crlf":
                start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: injected=1")])
                return [b"never sent"]
            if path == "/enum-header":
                start_response("200 OK", [("Content-Type", "text/plain"), ("X-Color", Color.RED), ("X-Legacy", Legacy.BLUE)])
                return [b"ok"]
            if path == "/bytes-header":
                start_response("200 OK", [("Content-Type", "text/plain"), ("X-Raw", b"bytes")])
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
            if path.startswith("/inspect"):
                # What the app sees, exactly: every CGI key and header, and the body's hash.
                body = environ["wsgi.input"].read()
                seen = {k: v for k, v in environ.items() if isinstance(v, str)}
                seen["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
                seen["body_length"] = len(body)
                seen["body_sha256"] = hashlib.sha256(body).hexdigest()
                out = json.dumps(seen, sort_keys=True).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
                return [out]
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Token", TOKEN), ("X-Version", VERSION)])
            return [b"hello"]

        def inspect(environ, start_response):
            """Echoes what the app sees of a request: every str in the environ, and the body in hex."""
            path = environ["PATH_INFO"]
            SEEN.append(path)
            if path == "/__seen":
                out = json.dumps(SEEN).encode()
            else:
                seen = {k: v for k, v in environ.items() if isinstance(v, str)}
                seen["body_hex"] = environ["wsgi.input"].read().hex()
                out = json.dumps(seen, sort_keys=True).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
            return [out]

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

    /// Starts `subinterp serve APP` with `arguments`; `environment` is added to the process's
    /// (the server reads every flag from a `SUBINTERP_*` variable too). `files` are written into
    /// the app's directory first (name: contents). `ready` is the readiness line to wait for.
    init(
        _ arguments: [String] = [], app: String = "liveapp:app", environment: [String: String] = [:], files: [String: String] = [:],
        ready: String = "subinterp: serving"
    ) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, contents) in files {
            try contents.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try Self.app.write(to: directory.appendingPathComponent("liveapp.py"), atomically: true, encoding: .utf8)
        try LiveASGIApp.source.write(to: directory.appendingPathComponent("liveasgi.py"), atomically: true, encoding: .utf8)
        try "1".write(to: directory.appendingPathComponent("version.txt"), atomically: true, encoding: .utf8)
        stderrFile = directory.appendingPathComponent("stderr")
        stdoutFile = directory.appendingPathComponent("stdout")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        process.executableURL = CLI.executable
        process.arguments = ["serve", app, "--bind", "127.0.0.1:0", "--chdir", directory.path] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
        guard let line = waitForLine(containing: ready, timeout: 60),
            let range = line.range(of: "http://127.0.0.1:"), let port = Int(line[range.upperBound...].prefix { $0.isNumber })
        else {
            stop()
            throw SubinterpreterError(.runtimeFailed, "the server did not start: \(stderr)")
        }
        self.port = port
    }

    /// A fresh directory with the live apps in it (for a server started another way).
    static func writeApps() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-apps-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try app.write(to: directory.appendingPathComponent("liveapp.py"), atomically: true, encoding: .utf8)
        try LiveASGIApp.source.write(to: directory.appendingPathComponent("liveasgi.py"), atomically: true, encoding: .utf8)
        try "1".write(to: directory.appendingPathComponent("version.txt"), atomically: true, encoding: .utf8)
        return directory.path
    }

    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }
    var stdout: String { (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "" }

    /// Waits until the server's stderr (or stdout) has a line containing `text` at least
    /// `count` times, reading the file as it grows; returns the last such line, or nil after
    /// `timeout` seconds (or once the process has exited without printing it).
    @discardableResult
    func waitForLine(containing text: String, count: Int = 1, inStdout: Bool = false, timeout: TimeInterval = 20) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        func found() -> String? {
            let lines = (inStdout ? stdout : stderr).split(separator: "\n").filter { $0.contains(text) }
            return lines.count >= count ? String(lines[count - 1]) : nil
        }
        while true {
            if let line = found() { return line }
            if Date() > deadline || !process.isRunning { return found() }
            // The file is the signal; this only paces the re-reads.
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

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
///
/// Every read tells apart the three things a server can do: send bytes, close the connection
/// (EOF, or a reset), or do nothing until the receive timeout. A test that expects the server to
/// close therefore fails when it merely stays silent.
final class RawHTTP {
    let fd: Int32

    enum ReadResult: Equatable {
        case data
        /// EOF or a reset: the server closed the connection.
        case closed
        /// Nothing arrived within the receive timeout.
        case timedOut
    }

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// Connects to 127.0.0.1:`port`; reads wait at most `timeout` seconds.
    init(port: Int, timeout: Double = 15, receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer.map(Int32.init) {
            // A small window, set before connecting, so a client that does not read holds back the server quickly.
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        setTimeout(timeout)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw SubinterpreterError(.runtimeFailed, "cannot connect to port \(port)") }
    }

    deinit { close(fd) }

    func setTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Shuts the sending side (the server sees EOF), keeping the connection open for reading.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    private var buffer: [UInt8] = []
    /// The outcome of the last read from the socket.
    private(set) var lastRead = ReadResult.data

    @discardableResult
    private func fill() -> ReadResult {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                lastRead = .data
            } else if n == 0 || errno == ECONNRESET {
                lastRead = .closed
            } else if errno == EINTR {
                continue
            } else {
                lastRead = .timedOut
            }
            return lastRead
        }
    }

    private func line() -> String? {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .init(charactersIn: "\r"))
                buffer.removeFirst(i + 1)
                return line
            }
            if fill() != .data { return nil }
        }
    }

    private func take(_ count: Int) -> [UInt8] {
        while buffer.count < count && fill() == .data {}
        let n = min(count, buffer.count)
        defer { buffer.removeFirst(n) }
        return Array(buffer[..<n])
    }

    /// Reads exactly `count` body bytes (fewer if the connection ends); for tests that read slowly.
    func read(upTo count: Int) -> [UInt8] { take(count) }

    /// Reads one response; `head` says the request was HEAD (no body follows). Nil if the
    /// connection closed or timed out first (`lastRead` says which).
    func response(head: Bool = false) -> Response? {
        guard let statusLine = line(), statusLine.hasPrefix("HTTP/") else { return nil }
        let status = Int(statusLine.split(separator: " ")[1]) ?? 0
        var headers: [(String, String)] = []
        while let line = line(), !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers.append((String(parts[0]), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""))
        }
        var response = Response(status: status, headers: headers, body: [])
        if head || status / 100 == 1 || status == 204 || status == 304 { return response }
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
            while fill() == .data {}
            response.body = buffer
            buffer = []
        }
        return response
    }

    /// Reads until the server closes the connection or the receive timeout passes; returns
    /// what arrived meanwhile and which of the two ended the wait.
    func readUntilClosed() -> (bytes: [UInt8], result: ReadResult) {
        var result = ReadResult.data
        while result == .data { result = fill() }
        defer { buffer = [] }
        return (buffer, result)
    }

    static func get(_ port: Int, _ path: String, headers: String = "") throws -> Response? {
        let client = try RawHTTP(port: port)
        client.send("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\(headers)Connection: close\r\n\r\n")
        return client.response()
    }
}
