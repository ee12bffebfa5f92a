import Foundation
import Synchronization
import Testing

@testable import Subinterpreters

#if canImport(Glibc)
import Glibc
#endif

/// `subinterp serve` with an ASGI app (`liveasgi:app`, see `LiveASGIApp`) over real sockets:
/// HTTP, lifespan, concurrency, limits and worker health. WebSocket is `ASGIWebSocketServeTests`.
/// Main-actor isolated: these tests block on sockets and files, and the main thread is not one of
/// the few threads the rest of the suite's async code runs on.
@Suite @MainActor struct ASGIServeTests {
    static let app = "liveasgi:app"

    // MARK: - Flags

    @Test func asgiIsDetectedAndEveryNewFlagAlsoComesFromItsVariable() throws {
        let server = try LiveServer(
            ["--workers", "1"], app: Self.app,
            environment: ["SUBINTERP_ROOT_PATH": "/api/", "SUBINTERP_LIFESPAN": "off", "SUBINTERP_INTERFACE": "asgi"])
        defer { server.stop() }
        #expect(server.stderr.contains("with 1 worker interpreters (ASGI)"), "\(server.stderr)")
        let scope = try #require(try RawHTTP.get(server.port, "/scope"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(scope.body)) as? [String: Any])
        #expect(object["root_path"] as? String == "/api")
        #expect(!server.stderr.contains("lifespan startup"), "--lifespan off: \(server.stderr)")
    }

    @Test func badValuesOfTheNewFlagsAreOneLine() throws {
        let cases: [([String], [String: String], String)] = [
            (["--interface", "cgi"], [:], "--interface must be auto, wsgi or asgi"),
            (["--lifespan", "maybe"], [:], "--lifespan must be auto, on or off"),
            (["--limit-concurrency", "0"], [:], "--limit-concurrency must be at least 1"),
            (["--ws-max-size", "0"], [:], "--ws-max-size must be between 1"),
            (["--root-path", "api"], [:], "--root-path must start with /"),
            ([], ["SUBINTERP_WS_MAX_SIZE": "lots"], "SUBINTERP_WS_MAX_SIZE=lots is not a valid value for --ws-max-size"),
            ([], ["SUBINTERP_INTERFACE": "rsgi"], "--interface must be auto, wsgi or asgi"),
        ]
        for (arguments, environment, message) in cases {
            let result = try CLI.run(["serve", Self.app, "--bind", "127.0.0.1:0"] + arguments, environment: environment)
            #expect(result.status != 0, "\(arguments) \(environment)")
            // The line that says what to do (argument parser adds its usage hint after it).
            let first = result.stderr.split(separator: "\n").first ?? ""
            #expect(first == "Error: \(first.dropFirst("Error: ".count))" && first.contains(message), "\(arguments) \(environment): \(result.stderr)")
            #expect(!result.stderr.contains("Traceback") && !result.stderr.contains("serving"))
        }
    }

    // MARK: - HTTP (item 2)

    @Test func theScopeIsCompleteOverTheWire() throws {
        let server = try LiveServer(["--root-path", "/api"], app: Self.app)
        defer { server.stop() }
        let client = try RawHTTP(port: server.port)
        client.send("GET /scope/caf%C3%A9/x?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\nX-Mixed-Case: Value\r\nX_Under: kept as sent\r\nConnection: close\r\n\r\n")
        let response = try #require(client.response())
        #expect(response.status == 200)
        let scope = try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
        #expect(scope["type"] as? String == "http")
        #expect(scope["asgi"] as? [String: String] == ["version": "3.0", "spec_version": "2.5"])
        #expect(scope["http_version"] as? String == "1.1")
        #expect(scope["method"] as? String == "GET")
        #expect(scope["scheme"] as? String == "http")
        #expect(scope["root_path"] as? String == "/api")
        #expect(scope["path"] as? String == "/api/scope/café/x")
        #expect(scope["raw_path"] as? String == "/api/scope/caf%C3%A9/x")
        #expect(scope["query_string"] as? String == "q=1&r=%20")
        let types = try #require(scope["types"] as? [String: Any])
        #expect(types["raw_path"] as? String == "bytes" && types["query_string"] as? String == "bytes")
        #expect(types["header"] as? [String] == ["bytes", "bytes"])
        // Lower-cased names, values as sent; ASGI keeps names with `_` apart from those with `-`.
        #expect(scope["headers"] as? [[String]] == [
            ["host", "example.test"], ["x-mixed-case", "Value"], ["x_under", "kept as sent"], ["connection", "close"],
        ])
        let client0 = try #require(scope["client"] as? [Any])
        #expect(client0.first as? String == "127.0.0.1" && client0.last is Int)
        #expect(scope["server"] as? [AnyHashable] == ["127.0.0.1", server.port])
    }

    @Test func requestBodiesReachTheAppAsItReadsThemAndMaxBodyHolds() throws {
        let server = try LiveServer(["--max-body", "300000"], app: Self.app)
        defer { server.stop() }
        func post(_ raw: [UInt8]) throws -> RawHTTP.Response? {
            let client = try RawHTTP(port: server.port)
            client.send(raw)
            return client.response()
        }
        func parts(_ response: RawHTTP.Response?) -> (count: Int, total: Int, lastMore: Bool?, sha: String?) {
            guard let response, let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                let parts = object["parts"] as? [[Any]]
            else { return (0, -1, nil, nil) }
            return (parts.count, parts.reduce(0) { $0 + ($1[0] as? Int ?? 0) }, parts.last?[1] as? Bool, object["sha256"] as? String)
        }
        // A small body comes whole with the request.
        let small = parts(try post(Array("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".utf8)))
        #expect(small.count == 1 && small.total == 5 && small.lastMore == false)
        // A large chunked one is streamed: several http.request messages, more_body until the last.
        let payload = (0..<250_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var chunked = Array("POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".utf8)
        for start in stride(from: 0, to: payload.count, by: 50_000) {
            chunked += Array("\(String(50_000, radix: 16))\r\n".utf8) + payload[start..<start + 50_000] + Array("\r\n".utf8)
        }
        chunked += Array("0\r\n\r\n".utf8)
        let streamed = parts(try post(chunked))
        #expect(streamed.total == 250_000)
        #expect(streamed.lastMore == false)
        #expect(streamed.sha == sha256Hex(payload))
        // --max-body: a declared length over it never reaches the app; a chunked one that grows
        // past it while the app reads gets 413 and the app hears a disconnect.
        #expect(try post(Array("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 400000\r\n\r\n".utf8))?.status == 413)
        var tooBig = Array("POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        for _ in 0..<8 { tooBig += Array("\(String(50_000, radix: 16))\r\n".utf8) + [UInt8](repeating: 97, count: 50_000) + Array("\r\n".utf8) }
        #expect(try post(tooBig)?.status == 413)
        #expect(server.waitForLine(containing: "body: http.disconnect") != nil, "\(server.stderr)")
    }

    @Test func expectContinueIsAnsweredOnlyWhenTheAppReadsTheBody() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        let reading = try RawHTTP(port: server.port)
        reading.send("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        #expect(reading.response()?.status == 100)
        reading.send("hello")
        #expect(reading.response()?.status == 200)

        // An app that answers without reading: no 100, the answer, then the connection closes
        // (the unread body cannot be told from a next request).
        let refusing = try RawHTTP(port: server.port)
        refusing.send("POST /reject-unread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        let answer = try #require(refusing.response())
        #expect(answer.status == 401)
        #expect(answer.header("connection") == "close")
        #expect(refusing.readUntilClosed().result == .closed)
    }

    @Test func headKeepAliveAndPipelining() throws {
        let server = try LiveServer(["--workers", "2"], app: Self.app)
        defer { server.stop() }
        let client = try RawHTTP(port: server.port)
        client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /scope?third HTTP/1.1\r\nHost: x\r\n\r\n")
        let first = try #require(client.response())
        #expect(first.status == 200 && first.text == "hello")
        let head = try #require(client.response(head: true))
        #expect(head.status == 200 && head.header("content-length") == "5" && head.body.isEmpty)
        let third = try #require(client.response())
        #expect(third.text.contains("\"query_string\": \"third\""))
        client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(client.response()?.text == "hello")
    }

    @Test func aSlowClientHoldsTheAppBackAndGetsEveryByte() throws {
        let server = try LiveServer(["--workers", "1"], app: Self.app)
        defer { server.stop() }
        let size = 64 << 20
        let client = try RawHTTP(port: server.port, timeout: 30, receiveBuffer: 64 << 10)
        client.send("GET /big?\(size) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let head = try #require(client.response(head: true))
        #expect(head.status == 200 && head.header("transfer-encoding") == "chunked")
        // Read 1 MiB at a time; after each, the app may be ahead only by what the socket
        // buffers and the connection's high water mark hold (a few MiB), never by tens.
        var read = 0
        var farthestAhead = 0
        for _ in 0..<8 {
            read += client.read(upTo: 1 << 20).count
            let sent = server.stderr.split(separator: "\n").compactMap { line -> Int? in
                guard line.hasPrefix("big: sent ") else { return nil }
                return Int(line.dropFirst("big: sent ".count).prefix { $0.isNumber })
            }.max() ?? 0
            farthestAhead = max(farthestAhead, (sent << 20) - read)
        }
        #expect(farthestAhead < 16 << 20, "the app ran \(farthestAhead >> 20) MiB ahead of a client that had read \(read >> 20) MiB")
        // Then everything arrives, framed as it should be.
        let rest = client.readUntilClosed()
        let body = rest.bytes
        #expect(rest.result == .closed)
        #expect(server.waitForLine(containing: "big: done") != nil)
        // The chunked body holds the remaining bytes plus the chunk framing, and ends with the last chunk.
        #expect(body.count > size - read)
        #expect(String(decoding: body.suffix(5), as: UTF8.self) == "0\r\n\r\n")
    }

    @Test func aClientThatLeavesIsToldWithHTTPDisconnect() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        do {
            let client = try RawHTTP(port: server.port)
            client.send("POST /wait-disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            #expect(client.response(head: true)?.status == 200)
            #expect(server.waitForLine(containing: "wait-disconnect: waiting") != nil)
        }  // the client goes away
        #expect(server.waitForLine(containing: "wait-disconnect: got http.disconnect") != nil, "\(server.stderr)")
    }

    @Test func aClientThatOnlyHalfClosesStillGetsItsResponses() throws {
        let server = try LiveServer(["--workers", "1"], app: Self.app)
        defer { server.stop() }
        let client = try RawHTTP(port: server.port)
        client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        client.shutdownWrite()
        #expect(client.response()?.text == "hello")
        #expect(client.response()?.text.contains("[[2, false]]") == true)
        #expect(client.readUntilClosed() == ([], .closed))
    }

    @Test func appErrorsBeforeAndAfterTheResponseStarts() throws {
        let server = try LiveServer(app: Self.app)
        defer { server.stop() }
        let boom = try #require(try RawHTTP.get(server.port, "/boom"))
        #expect(boom.status == 500)
        #expect(!boom.text.contains("secret detail"))
        #expect(server.waitForLine(containing: "ValueError: secret detail of the failure") != nil)
        #expect(server.stderr.contains("Traceback"))
        // After the head went out, the connection closes without the last chunk.
        let client = try RawHTTP(port: server.port)
        client.send("GET /boom-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = try #require(client.response(head: true))
        #expect(head.status == 200 && head.header("transfer-encoding") == "chunked")
        let rest = client.readUntilClosed()
        #expect(rest.result == .closed)
        let text = String(decoding: rest.bytes, as: UTF8.self)
        #expect(text.contains("partial") && !text.hasSuffix("0\r\n\r\n"), "\(text.debugDescription)")
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
    }

    // MARK: - Lifespan (item 4)

    @Test func lifespanRunsInEveryWorkerAndStartupFailedStopsTheServerInOneLine() throws {
        let server = try LiveServer(["--workers", "2"], app: Self.app)
        #expect(server.waitForLine(containing: "lifespan startup in worker", count: 2) != nil)
        #expect(server.stop() == 0)

        let failed = try CLI.run(
            ["serve", Self.app, "--bind", "127.0.0.1:0", "--workers", "2", "--chdir", try LiveServer.writeApps()],
            environment: ["LIVE_STARTUP_FAILS": "the database is unreachable"])
        #expect(failed.status == 1)
        let lines = failed.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(failed.stderr)")
        #expect(lines.last == "subinterp: ASGI lifespan startup failed: the database is unreachable", "\(failed.stderr)")
    }

    // MARK: - Concurrency and limits (item 5)

    @Test func aThousandConcurrentSleepsAllStartBeforeAnyFinishes() throws {
        let server = try LiveServer(["--workers", "2"], app: Self.app)
        defer { server.stop() }
        let client = try PythonClient.run(#"""
            import asyncio, json, sys
            port = int(sys.argv[1])

            async def one():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                # 5 s rather than 1: on a loaded machine the client may need over a second to open
                # 1,000 connections, and the test is about overlap, not about how long it takes.
                writer.write(b"GET /sleep?5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await reader.read()
                writer.close()
                head, _, body = data.partition(b"\r\n\r\n")
                return head.split(b" ")[1].decode(), body

            async def main():
                results = await asyncio.gather(*(one() for _ in range(1000)))
                print(json.dumps([[status, json.loads(body) if status == "200" else None] for status, body in results]))

            asyncio.run(main())
            """#, arguments: [String(server.port)], timeout: 120)
        #expect(client.status == 0, "\(client.stderr)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [[Any]])
        #expect(results.count == 1000)
        #expect(results.allSatisfy { $0[0] as? String == "200" }, "\(results.filter { $0[0] as? String != "200" }.prefix(3))")
        var served: [Int: Int] = [:]
        var startedWhenFirstFinished: [Int: Int] = [:]
        for case let report as [String: Int] in results.map({ $0[1] }) {
            guard let worker = report["worker"], let started = report["started"], let before = report["finished_before"] else { continue }
            served[worker, default: 0] += 1
            if before == 0 { startedWhenFirstFinished[worker] = started }
        }
        // On each worker, every request it served had started before its first one finished.
        #expect(served.keys.sorted() == [0, 1], "\(served)")
        #expect(startedWhenFirstFinished == served, "served \(served), started when the first finished \(startedWhenFirstFinished)")
    }

    @Test func limitConcurrencyAnswers503BeyondIt() throws {
        let server = try LiveServer(["--workers", "2"], app: Self.app, environment: ["SUBINTERP_LIMIT_CONCURRENCY": "2"])
        defer { server.stop() }
        // Two requests whose large bodies have not come: they run (streamed), waiting for them.
        let held = try (0..<2).map { _ in try RawHTTP(port: server.port) }
        for client in held { client.send("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n") }
        #expect(server.waitForLine(containing: "body: started", count: 2) != nil)
        #expect(try RawHTTP.get(server.port, "/")?.status == 503)
        for client in held {
            client.send([UInt8](repeating: 98, count: 100_000))
            #expect(client.response()?.status == 200)
        }
        // A request counts until its task ends, a moment after its response went out: then
        // requests are admitted again (each try is an answer; the deadline only fails the test).
        var status: Int?
        let deadline = Date().addingTimeInterval(20)
        repeat { status = try RawHTTP.get(server.port, "/")?.status } while status == 503 && Date() < deadline
        #expect(status == 200)
    }

    @Test func aRequestPastTheTimeoutGets504AndItsTaskIsCancelled() throws {
        let server = try LiveServer(["--timeout", "0.5"], app: Self.app)
        defer { server.stop() }
        #expect(try RawHTTP.get(server.port, "/sleep?30")?.status == 504)
        #expect(server.waitForLine(containing: "sleep cancelled") != nil, "\(server.stderr)")
    }

    @Test func aTaskThatHoldsTheLoopIsInterruptedAndTheLoopServesOn() throws {
        let server = try LiveServer(["--workers", "1", "--timeout", "0.5"], app: Self.app)
        defer { server.stop() }
        #expect(try RawHTTP.get(server.port, "/spin")?.status == 504)
        #expect(server.waitForLine(containing: "spin interrupted by CancelledError") != nil, "\(server.stderr)")
        #expect(try RawHTTP.get(server.port, "/")?.text == "hello")
    }

    // MARK: - Worker health, signals, observability (item 1)

    @Test func maxRequestsReplacesAWorkerAfterItsRequestsFinish() throws {
        let server = try LiveServer(["--workers", "1", "--max-requests", "3"], app: Self.app)
        defer { server.stop() }
        let long = try RawHTTP(port: server.port)
        long.send("GET /sleep?1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(server.waitForLine(containing: "sleep started 0") != nil)
        let first = try #require(try RawHTTP.get(server.port, "/")?.header("x-token"))
        #expect(try RawHTTP.get(server.port, "/")?.header("x-token") == first)  // the third request: time for a fresh worker
        var tokens: [String] = []
        // Requests until one reaches the fresh worker (each is an answer from the server; the
        // deadline only fails the test).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let response = try #require(try RawHTTP.get(server.port, "/"))
            #expect(response.status == 200)
            tokens.append(response.header("x-token") ?? "")
            if tokens.last != first { break }
        }
        #expect(tokens.last != first && tokens.last?.isEmpty == false, "no fresh worker: \(server.stderr)")
        // The request that was running on the old worker finished there.
        let finished = try #require(long.response())
        #expect(finished.status == 200 && finished.header("x-token") == first)
        #expect(server.waitForLine(containing: "lifespan shutdown in worker 0") != nil, "\(server.stderr)")
    }

    @Test func aWorkerWhoseLoopEndsIsReplaced() throws {
        let server = try LiveServer(["--workers", "1"], app: Self.app)
        defer { server.stop() }
        let before = try #require(try RawHTTP.get(server.port, "/")?.header("x-token"))
        #expect(try RawHTTP.get(server.port, "/stop-loop")?.status == 503)
        #expect(server.waitForLine(containing: "replacing a worker with a fresh interpreter") != nil, "\(server.stderr)")
        var after: String?
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let response = try #require(try RawHTTP.get(server.port, "/"))
            if response.status == 200 {
                after = response.header("x-token")
                break
            }
            #expect(response.status == 503)
        }
        #expect(after != nil && after != before, "\(server.stderr)")
    }

    @Test func sighupReloadsAndSigtermDrains() throws {
        let server = try LiveServer(["--workers", "2"], app: Self.app)
        #expect(try RawHTTP.get(server.port, "/")?.header("x-version") == "1")
        try server.setVersion("2")
        server.signal(SIGHUP)
        var sawNew = false
        var failures = 0
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && !sawNew {
            guard let response = try RawHTTP.get(server.port, "/"), response.status == 200 else {
                failures += 1
                continue
            }
            sawNew = response.header("x-version") == "2"
        }
        #expect(sawNew && failures == 0, "\(server.stderr)")

        let client = try RawHTTP(port: server.port)
        client.send("GET /sleep?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(server.waitForLine(containing: "sleep started") != nil)
        server.signal(SIGTERM)
        let response = client.response()
        #expect(response?.status == 200)
        #expect(response?.header("connection") == "close")
        #expect(server.stop() == 0)
    }

    @Test func requestsTheAppKeepsUntilTheEndDoNotCrashTheShutdown() throws {
        let server = try LiveServer(["--workers", "1"], app: Self.app)
        for _ in 0..<3 { #expect(try RawHTTP.get(server.port, "/keep")?.text == "kept") }
        #expect(server.stop() == 0, "\(server.stderr)")
    }

    @Test func accessLogAndMetrics() throws {
        let server = try LiveServer(["--access-log", "--metrics-bind", "127.0.0.1:0"], app: Self.app)
        defer { server.stop() }
        #expect(try RawHTTP.get(server.port, "/?q=1")?.status == 200)
        #expect(try RawHTTP.get(server.port, "/boom")?.status == 500)
        let line = server.waitForLine(containing: "\"GET /?q=1 HTTP/1.1\"", inStdout: true)
        #expect(line?.hasSuffix("\"GET /?q=1 HTTP/1.1\" 200 5") == true, "\(server.stdout)")
        let metricsLine = try #require(server.stderr.split(separator: "\n").first { $0.contains("metrics on") })
        let range = try #require(metricsLine.range(of: "metrics on http://127.0.0.1:"))
        let port = try #require(Int(metricsLine[range.upperBound...].prefix { $0.isNumber }))
        let metrics = try #require(try RawHTTP.get(port, "/metrics"))
        #expect(metrics.text.contains("subinterp_requests_total{status=\"200\"} 1"))
        #expect(metrics.text.contains("subinterp_requests_total{status=\"500\"} 1"))
    }
}

/// A Python script run with the test venv's Python (which has `websockets`), as a client.
enum PythonClient {
    static func run(_ source: String, arguments: [String] = [], timeout: TimeInterval = 60) throws -> CLI.Result {
        let python = try ServedApp.venvPython()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-client-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let script = directory.appendingPathComponent("client.py")
        try source.write(to: script, atomically: true, encoding: .utf8)
        let out = directory.appendingPathComponent("out"), err = directory.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script.path] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        // The exit is the signal; this only paces the checks, and the deadline fails the test.
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("the Python client ran past \(Int(timeout)) s")
        }
        process.waitUntilExit()
        return CLI.Result(
            status: process.terminationStatus, stdout: try String(contentsOf: out, encoding: .utf8),
            stderr: try String(contentsOf: err, encoding: .utf8))
    }
}

/// SHA-256 in hex, from the system's `sha256sum` (the tests need no crypto library for one check).
func sha256Hex(_ bytes: [UInt8]) -> String {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-sha-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: file) }
    FileManager.default.createFile(atPath: file.path, contents: Data(bytes))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [file.path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try? process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
}
