import Foundation
import Testing

@testable import Subinterpreters

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

    @Test func aClientThatHalfClosesStillGetsItsResponses() throws {
        let server = try LiveServer(["--workers", "1"])
        defer { server.stop() }
        let client = try RawHTTP(port: server.port)
        client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        client.shutdownWrite()
        #expect(client.response()?.text == "hello")
        #expect(client.response()?.text == "ok")
        #expect(client.readUntilClosed() == ([], .closed))
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
        #expect(server.waitForLine(containing: "RuntimeError: secret detail of the failure") != nil)
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
            #expect(client.response(head: true)?.status == 200)
        }  // the client goes away after the head
        // The app logs when its iterable is closed; the worker then serves the next request.
        #expect(server.waitForLine(containing: "iterable closed", timeout: 15) != nil, "\(server.stderr)")
        #expect(try RawHTTP.get(server.port, "/closed")?.text == "1")
    }

    @Test func idleAndSlowClientsDoNotHoldTheWorker() throws {
        let server = try LiveServer(["--workers", "1"])
        defer { server.stop() }
        let idle = try RawHTTP(port: server.port)
        idle.send("GET / HTTP/1.1\r\nHost: x\r\n")  // never finishes its head
        let halfBody = try RawHTTP(port: server.port)
        halfBody.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        #expect(try RawHTTP.get(server.port, "/")?.status == 200)
        // The stalled clients are closed (EOF), after a 408 for the one inside a request: a
        // receive timeout here would mean the server kept them open.
        let stalled = idle.readUntilClosed()
        #expect(stalled.result == .closed)
        #expect(String(decoding: stalled.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 408 "))
        #expect(halfBody.readUntilClosed().result == .closed)
    }

    @Test func sigtermFinishesInFlightRequestsThenExitsZero() throws {
        let server = try LiveServer(["--workers", "1"])
        let client = try RawHTTP(port: server.port)
        client.send("GET /sleep?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(server.waitForLine(containing: "sleep started") != nil)
        server.signal(SIGTERM)
        let response = client.response()
        #expect(response?.status == 200)
        #expect(response?.header("connection") == "close")
        #expect(client.readUntilClosed().result == .closed)
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
        let line = server.waitForLine(containing: "\"GET /?q=1 HTTP/1.1\"", inStdout: true)
        #expect(line?.hasPrefix("127.0.0.1 - - [") == true && line?.hasSuffix("\"GET /?q=1 HTTP/1.1\" 200 5") == true, "\(server.stdout)")
        #expect(server.waitForLine(containing: "\"GET /boom HTTP/1.1\" 500", inStdout: true) != nil)
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
