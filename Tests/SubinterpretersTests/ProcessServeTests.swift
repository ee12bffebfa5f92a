import Foundation
import Synchronization
import Testing

@testable import Subinterpreters

#if canImport(Glibc)
import Glibc
#endif

/// `subinterp serve --processes M`: a supervisor and its worker processes, over real sockets.
@Suite(.serialized) struct ProcessServeTests {
    /// An app whose requests can be held until the test lets them go (a FIFO each), crash
    /// their process, or grow its memory; every response says which process answered.
    static let app = #"""
        import ctypes, os, sys

        HELD = []

        def log(text):
            print(text, file=sys.stderr, flush=True)

        def app(environ, start_response):
            path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
            if path == "/hold":
                fifo = os.path.join(os.path.dirname(os.path.abspath(__file__)), query)
                os.mkfifo(fifo)
                log(f"hold started name={query} pid={os.getpid()}")
                with open(fifo) as f:
                    f.read()
            elif path == "/crash":
                ctypes.string_at(0)
            elif path == "/exit":
                os._exit(3)
            elif path == "/grow":
                HELD.append(b"x" * (int(query) << 20))
            elif path == "/multiprocess":
                body = repr(environ["wsgi.multiprocess"]).encode()
                start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
                return [body]
            body = str(os.getpid()).encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        """#

    static func start(_ arguments: [String], app: String = "procapp:app", ready: String = "subinterp: serving") throws -> LiveServer {
        try LiveServer(arguments, app: app, files: ["procapp.py": Self.app], ready: ready)
    }

    /// Sends `GET /hold?NAME` on a connection of its own and waits until the app holds it;
    /// returns the connection (its response comes once `release` is called) and the pid
    /// of the process that holds it.
    static func hold(_ name: String, on server: LiveServer) throws -> (client: RawHTTP, pid: Int32) {
        let client = try RawHTTP(port: server.port, timeout: 60)
        client.send("GET /hold?\(name) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let line = try #require(server.waitForLine(containing: "hold started name=\(name) "), "\(server.stderr)")
        let pid = try #require(line.split(separator: "pid=").last.flatMap { Int32($0) })
        return (client, pid)
    }

    /// Lets the held request `name` finish (false if nothing holds it any more).
    @discardableResult
    static func release(_ name: String, on server: LiveServer) -> Bool {
        let fd = open(server.directory.appendingPathComponent(name).path, O_WRONLY | O_NONBLOCK)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    static func pid(_ server: LiveServer, timeout: Double = 30) throws -> Int32? {
        let client = try RawHTTP(port: server.port, timeout: timeout)
        client.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        guard let response = client.response(), response.status == 200 else { return nil }
        return Int32(response.text)
    }

    /// The worker processes: the server's children.
    static func children(of server: LiveServer) -> Set<Int32> {
        let parent = server.process.processIdentifier
        var found: Set<Int32> = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == parent { found.insert(pid) }
        }
        return found
    }

    // MARK: Load spreading

    @Test func aProcessWhoseWorkersAreBusyLeavesNewConnectionsToAnother() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let held = try Self.hold("h1", on: server)
        // Every new connection must go to the other process: one that the busy process took
        // would wait for its worker, which is held until the end of the test.
        for _ in 0..<12 {
            let client = try RawHTTP(port: server.port, timeout: 15)
            client.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let response = client.response()
            #expect(response?.status == 200, "no answer while process \(held.pid) was busy: \(client.lastRead)")
            #expect(response.flatMap { Int32($0.text) } != held.pid)
        }
        #expect(Self.release("h1", on: server))
        #expect(Int32(held.client.response()?.text ?? "") == held.pid)
    }

    // MARK: Supervision

    /// Issue 10, item 5: a segfault costs only the connections of its own process; the
    /// requests in flight on the other process all complete, and the crashed one is back.
    @Test func aSegfaultCostsOnlyItsOwnProcessesConnections() throws {
        let server = try Self.start(["--processes", "2", "--workers", "2"])
        defer { server.stop() }
        // Hold requests until one process has both its workers busy: a new connection can then
        // only go to the other one, which is the one made to crash.
        var holds: [(name: String, client: RawHTTP, pid: Int32)] = []
        var full: Int32?
        for index in 0..<4 where full == nil {
            let (client, pid) = try Self.hold("h\(index)", on: server)
            holds.append(("h\(index)", client, pid))
            if holds.filter({ $0.pid == pid }).count == 2 { full = pid }
        }
        let survivor = try #require(full)
        let inFlight = holds.filter { $0.pid == survivor }
        let before = Self.children(of: server)
        #expect(before.count == 2 && before.contains(survivor))
        let crashed = try #require(before.first { $0 != survivor })

        let crashing = try RawHTTP(port: server.port, timeout: 30)
        crashing.send("GET /crash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(crashing.response() == nil && crashing.lastRead == .closed, "the crashing request got an answer")
        #expect(server.waitForLine(containing: "(pid \(crashed)) was killed by SIGSEGV") != nil, "\(server.stderr)")
        // Back: the supervisor says a new process serves, and it answers.
        let back = try #require(server.waitForLine(containing: "is serving (pid "), "\(server.stderr)")
        let replacement = try #require(back.split(separator: "(pid ").last.flatMap { Int32($0.dropLast()) })
        #expect(replacement != crashed && Self.children(of: server).contains(replacement))
        #expect(try Self.pid(server) == replacement)

        // The other process never noticed: its requests in flight all complete.
        var lost = 0
        for hold in inFlight {
            #expect(Self.release(hold.name, on: server))
            let response = hold.client.response()
            if response?.status != 200 || Int32(response?.text ?? "") != survivor { lost += 1 }
        }
        #expect(inFlight.count == 2)
        #expect(lost == 0, "requests lost on the process that did not crash: \(lost)")
        #expect(Self.children(of: server) == [survivor, replacement])
        #expect(server.stop() == 0)
    }

    @Test func aProcessThatExitsOrIsKilledIsReplacedAndTheOtherIsUntouched() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let first = Self.children(of: server)
        #expect(first.count == 2)
        // os._exit in the app.
        #expect(try RawHTTP.get(server.port, "/exit") == nil)
        #expect(server.waitForLine(containing: "exited with status 3; starting another") != nil, "\(server.stderr)")
        #expect(server.waitForLine(containing: "is serving (pid ", count: 1) != nil, "\(server.stderr)")
        let second = Self.children(of: server)
        #expect(second.count == 2 && first.intersection(second).count == 1)
        // SIGKILL (what the OOM killer sends).
        let victim = try #require(second.first)
        kill(victim, SIGKILL)
        #expect(server.waitForLine(containing: "(pid \(victim)) was killed by SIGKILL") != nil, "\(server.stderr)")
        #expect(server.waitForLine(containing: "is serving (pid ", count: 2) != nil, "\(server.stderr)")
        let third = Self.children(of: server)
        #expect(third.count == 2 && third.contains(second.subtracting([victim]).first!) && !third.contains(victim))
        #expect(try Self.pid(server) != nil)
    }

    @Test func workerProcessesThatKeepCrashingAtStartStopTheServerWithOneLine() throws {
        let directory = try LiveServer.writeApps()
        try "import ctypes\nctypes.string_at(0)\n".write(toFile: directory + "/crashing.py", atomically: true, encoding: .utf8)
        let result = try CLI.run([
            "serve", "crashing:app", "--chdir", directory, "--isolation", "processes", "--workers", "2", "--bind", "127.0.0.1:0",
        ])
        #expect(result.status == 1)
        let last = result.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("subinterp: worker processes keep failing to start (5 in a row; the last was killed by SIGSEGV"), "\(result.stderr)")
        #expect(!result.stderr.contains("subinterp: serving"))
        #expect(!result.stderr.contains("Backtrac"), "\(result.stderr)")
    }

    @Test func anAppThatDoesNotLoadStopsTheSupervisorWithOneLine() throws {
        let directory = try LiveServer.writeApps()
        try "raise RuntimeError('no database configured')\n".write(toFile: directory + "/broken.py", atomically: true, encoding: .utf8)
        for isolation in ["auto", "processes"] {
            let result = try CLI.run([
                "serve", "broken:app", "--chdir", directory, "--processes", "2", "--isolation", isolation, "--bind", "127.0.0.1:0",
            ])
            #expect(result.status == 1)
            let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("subinterp:") }
            #expect(lines.count == 1, "\(result.stderr)")
            #expect(lines.first?.contains("could not load broken:app: RuntimeError: no database configured") == true, "\(result.stderr)")
        }
    }

    // MARK: Recycling

    @Test func maxRequestsReplacesAWorkerProcessWithoutFailingARequest() throws {
        let server = try Self.start(["--isolation", "processes", "--workers", "1", "--max-requests", "3", "--log-level", "debug"])
        defer { server.stop() }
        var old = try #require(try Self.pid(server))
        for round in 1...2 {
            // The third request asks for a replacement; the process serves on until it is ready.
            var served: [Int32?] = []
            for _ in 0..<2 { served.append(try Self.pid(server)) }
            #expect(served == [old, old])
            #expect(server.waitForLine(containing: "(pid \(old)) served 3 requests (--max-requests 3); replacing it") != nil, "\(server.stderr)")
            #expect(server.waitForLine(containing: "(pid \(old)) exited with status 0") != nil, "\(server.stderr)")
            #expect(server.waitForLine(containing: "is serving (pid ", count: round) != nil)
            let new = try #require(try Self.pid(server))
            #expect(new != old)
            old = new
        }
    }

    @Test func maxMemoryReplacesAWorkerProcessThatGrew() throws {
        let server = try Self.start(["--processes", "1", "--workers", "1", "--max-memory", String(300 << 20), "--log-level", "debug"])
        defer { server.stop() }
        let old = try #require(try Self.pid(server))
        #expect(try RawHTTP.get(server.port, "/grow?400")?.status == 200)
        #expect(server.waitForLine(containing: "(--max-memory 300 MiB); replacing it") != nil, "\(server.stderr)")
        #expect(server.waitForLine(containing: "(pid \(old)) exited with status 0") != nil, "\(server.stderr)")
        let new = try #require(try Self.pid(server))
        #expect(new != old)
    }

    // MARK: Signals

    @Test func hangupReplacesEveryWorkerProcessWithoutDroppingARequest() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let before = Self.children(of: server)
        let port = server.port
        let stop = Atomic<Bool>(false)
        let answered = Atomic<Int>(0)
        let statuses = Mutex<[Int]>([])
        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<3 {
            Thread {
                var seen: [Int] = []
                while !stop.load(ordering: .relaxed) {
                    guard let client = try? RawHTTP(port: port, timeout: 30) else {
                        seen.append(-1)
                        continue
                    }
                    client.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    seen.append(client.response()?.status ?? -2)
                    answered.add(1, ordering: .relaxed)
                }
                statuses.withLock { $0 += seen }
                finished.signal()
            }.start()
        }
        func waitForLoad(more: Int) {
            let target = answered.load(ordering: .relaxed) + more
            let deadline = Date().addingTimeInterval(30)
            while answered.load(ordering: .relaxed) < target && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        }
        waitForLoad(more: 20)
        server.signal(SIGHUP)
        #expect(server.waitForLine(containing: "every worker process was replaced", timeout: 60) != nil, "\(server.stderr)")
        waitForLoad(more: 20)
        stop.store(true, ordering: .relaxed)
        for _ in 0..<3 { finished.wait() }
        let all = statuses.withLock { $0 }
        #expect(all.count >= 40)
        #expect(all.allSatisfy { $0 == 200 }, "statuses other than 200: \(all.filter { $0 != 200 })")
        // The old processes drain their last connections after the new ones took over; they
        // are gone once they exit (the log line says the new ones are serving, not that).
        var after = Self.children(of: server)
        let deadline = Date().addingTimeInterval(30)
        while !(after.count == 2 && after.isDisjoint(with: before)) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.02)
            after = Self.children(of: server)
        }
        #expect(after.count == 2 && after.isDisjoint(with: before), "before \(before), after \(after)")
    }

    @Test func aHangupWithAnAppThatNoLongerLoadsKeepsTheOldProcessesServing() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let before = Self.children(of: server)
        try "raise RuntimeError('half-deployed')\n".write(
            to: server.directory.appendingPathComponent("procapp.py"), atomically: true, encoding: .utf8)
        for round in 1...3 {
            server.signal(SIGHUP)
            #expect(
                server.waitForLine(containing: "reload failed: could not load procapp:app: RuntimeError: half-deployed", count: round) != nil,
                "\(server.stderr)")
        }
        // Replacements that crash before they are ready are no crash loop of the server's own
        // processes: however many, the old ones serve on.
        try "import ctypes\nctypes.string_at(0)\n".write(
            to: server.directory.appendingPathComponent("procapp.py"), atomically: true, encoding: .utf8)
        for round in 1...6 {
            server.signal(SIGHUP)
            #expect(
                server.waitForLine(containing: "was killed by SIGSEGV (a crash: segmentation fault) before it was ready; the old one serves on", count: round)
                    != nil, "\(server.stderr)")
        }
        #expect(server.process.isRunning)
        #expect(try Self.pid(server).map(before.contains) == true)
        // The replacements that could not load have exited; the old processes are the ones left.
        let deadline = Date().addingTimeInterval(30)
        while Self.children(of: server) != before && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(Self.children(of: server) == before)
    }

    /// A replacement that cannot load the app says why on its control channel and exits at
    /// once: its `failed` line and its exit reach the supervisor on different threads. The
    /// reason is what the log must say, every time, however the two race.
    @Test func everyFailedReloadIsLoggedWithItsReasonNotAsAnExit() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        try "raise RuntimeError('half-deployed')\n".write(
            to: server.directory.appendingPathComponent("procapp.py"), atomically: true, encoding: .utf8)
        // Either outcome ends a round: the reason, or an exit the supervisor handled first.
        func outcomes() -> [Substring] {
            server.stderr.split(separator: "\n").filter { $0.contains("reload failed: could not load") || $0.contains("before it was ready") }
        }
        // Every core busy makes the race likely: the supervisor's event loop then often reads
        // the line only after the waiting thread has seen the exit.
        let spinning = Atomic<Bool>(true)
        let spinners = (0..<2 * ProcessInfo.processInfo.activeProcessorCount).map { _ in
            Thread { while spinning.load(ordering: .relaxed) {} }
        }
        spinners.forEach { $0.start() }
        defer { spinning.store(false, ordering: .relaxed) }
        for round in 1...30 {
            server.signal(SIGHUP)
            let deadline = Date().addingTimeInterval(30)
            // The log file is the signal; this only paces the re-reads.
            while outcomes().count < round && Date() < deadline && server.process.isRunning { Thread.sleep(forTimeInterval: 0.01) }
            let outcome = outcomes().dropFirst(round - 1).first
            #expect(outcome?.contains("reload failed: could not load procapp:app: RuntimeError: half-deployed") == true, "round \(round): \(server.stderr)")
        }
        #expect(!server.stderr.contains("before it was ready"), "\(server.stderr)")
    }

    @Test func sigtermLetsEveryWorkerProcessFinishItsRequestsAndExitsZero() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let held = try Self.hold("h1", on: server)
        let children = Self.children(of: server)
        server.signal(SIGTERM)
        // Both worker processes have begun to stop: the held request is in flight in one of them.
        #expect(server.waitForLine(containing: "stopping: no new connections", count: 2) != nil, "\(server.stderr)")
        #expect(Self.release("h1", on: server))
        let response = held.client.response()
        #expect(response?.status == 200 && Int32(response?.text ?? "") == held.pid)
        #expect(response?.header("connection") == "close")
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .exit && server.process.terminationStatus == 0, "\(server.stderr)")
        for pid in children { #expect(kill(pid, 0) != 0, "worker process \(pid) outlived the server") }
    }

    @Test func workerProcessesLeaveWhenTheirSupervisorIsKilled() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let children = Self.children(of: server)
        #expect(children.count == 2)
        server.signal(SIGKILL)
        server.process.waitUntilExit()
        // Orphans are reparented; each ends once it finds its control channel closed.
        let deadline = Date().addingTimeInterval(30)
        while children.contains(where: { kill($0, 0) == 0 }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for pid in children { #expect(kill(pid, 0) != 0, "worker process \(pid) outlived its supervisor") }
    }

    // MARK: Metrics and logs

    @Test func metricsSumEveryWorkerProcessAndKeepTheCountsOfOneThatDied() throws {
        // The access log is the signal that a request is counted: a worker process counts a
        // request, then logs it, once its response's last write has completed, which can be
        // just after the client has read the response.
        let server = try Self.start(["--processes", "2", "--workers", "1", "--metrics-bind", "127.0.0.1:0", "--access-log"])
        defer { server.stop() }
        func waitUntilCounted(_ requests: Int) {
            #expect(server.waitForLine(containing: "\"GET /pid HTTP/1.1\" 200", count: requests, inStdout: true) != nil, "\(server.stdout)")
        }
        let line = try #require(server.waitForLine(containing: "metrics on http://127.0.0.1:"))
        let metricsPort = try #require(Int(line.split(separator: "metrics on http://127.0.0.1:").last!.prefix { $0.isNumber }))
        func scrape() throws -> [String: Double] {
            let text = try #require(try RawHTTP.get(metricsPort, "/metrics")).text
            var values: [String: Double] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let value = Double(parts[1]) { values[String(parts[0])] = value }
            }
            return values
        }
        for _ in 0..<6 { #expect(try Self.pid(server) != nil) }
        waitUntilCounted(6)
        let first = try scrape()
        #expect(first["subinterp_requests_total{status=\"200\"}"] == 6)
        let perProcess = (0..<2).map { first["subinterp_requests_total{process=\"\($0)\",status=\"200\"}"] ?? 0 }
        #expect(perProcess.reduce(0, +) == 6, "\(first)")
        #expect(first["subinterp_processes"] == 2)
        #expect(first["subinterp_workers"] == 2)
        #expect(first["subinterp_process_resident_memory_bytes{process=\"0\"}"].map { $0 > 1_048_576 } == true)

        let victim = try #require(Self.children(of: server).first)
        kill(victim, SIGKILL)
        #expect(server.waitForLine(containing: "is serving (pid ") != nil, "\(server.stderr)")
        // The counts the dead process reported stay in the totals.
        let second = try scrape()
        #expect(second["subinterp_requests_total{status=\"200\"}"] == 6, "\(second)")
        #expect((0..<2).map { second["subinterp_process_restarts_total{process=\"\($0)\"}"] ?? 0 }.reduce(0, +) == 1)
        for _ in 0..<2 { #expect(try Self.pid(server) != nil) }
        waitUntilCounted(8)
        #expect(try scrape()["subinterp_requests_total{status=\"200\"}"] == 8)
    }

    @Test func accessLogLinesOfSeveralProcessesNeverInterleave() throws {
        let server = try Self.start(["--processes", "2", "--workers", "2", "--access-log"])
        defer { server.stop() }
        let port = server.port
        let failures = Atomic<Int>(0)
        let long = "/" + String(repeating: "a", count: 900)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<50 {
                if (try? RawHTTP.get(port, long))??.status != 200 { failures.add(1, ordering: .relaxed) }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        // One request line far longer than a pipe's atomic write: cut, so its line stays one write.
        let huge = "/" + String(repeating: "b", count: 6000)
        #expect(try RawHTTP.get(port, huge)?.status == 200)
        #expect(server.waitForLine(containing: "bbbb", inStdout: true) != nil)
        server.signal(SIGTERM)
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0)
        let lines = server.stdoutLines
        let pattern = try Regex(#"^127\.0\.0\.1 - - \[[^\]]+\] "GET /a{900} HTTP/1\.1" 200 \d+$"#)
        #expect(lines.filter { $0.wholeMatch(of: pattern) != nil }.count == 200, "\(lines.count) lines: \(lines.first?.prefix(120) ?? "")")
        let cut = try #require(lines.first { $0.contains("bbbb") })
        #expect(cut.utf8.count < 2048 && cut.contains("bbb...\" 200"), "\(cut.prefix(200))")
        #expect(lines.count == 201)
    }

    // MARK: Startup

    @Test func bindErrorsAreOneLineBeforeAnyWorkerProcessStarts() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        let taken = try CLI.run([
            "serve", "procapp:app", "--chdir", server.directory.path, "--processes", "2", "--bind", "127.0.0.1:\(server.port)",
        ])
        #expect(taken.status == 1)
        #expect(
            taken.stderr
                == "subinterp: cannot listen on 127.0.0.1:\(server.port): address already in use (another server is listening there; pick another port)\n",
            "\(taken.stderr)")
    }

    @Test func badProcessSettingsAreOneLine() throws {
        let directory = try LiveServer.writeApps()
        for (arguments, message) in [
            (["--processes", "0"], "--processes must be at least 1"),
            (["--isolation", "threads"], "--isolation must be interpreters, processes or auto, not 'threads'"),
            (["--max-memory", "4096"], "--max-memory is in bytes and must be at least 1 MiB (1048576)"),
        ] {
            let result = try CLI.run(["serve", "liveapp:app", "--chdir", directory, "--bind", "127.0.0.1:0"] + arguments)
            #expect(result.status != 0)
            let lines = result.stderr.split(separator: "\n").filter { !$0.isEmpty }
            #expect(lines.first?.contains(message) == true, "\(result.stderr)")
        }
        let hidden = try CLI.run(["serve-worker"])
        #expect(hidden.status == 2)
        #expect(hidden.stderr == "subinterp: serve-worker is started by `subinterp serve --processes N`; run that instead\n")
    }

    @Test func theReadinessLineAndWSGISaySeveralProcessesServe() throws {
        let server = try Self.start(["--processes", "2", "--workers", "1"])
        defer { server.stop() }
        #expect(server.stderr.contains("with 2 processes × 1 worker interpreter (WSGI)"), "\(server.stderr)")
        #expect(try RawHTTP.get(server.port, "/multiprocess")?.text == "True")
        let single = try Self.start(["--isolation", "processes", "--workers", "1"])
        defer { single.stop() }
        #expect(single.stderr.contains("with 1 worker process (WSGI, one request at a time each)"), "\(single.stderr)")
        #expect(try RawHTTP.get(single.port, "/multiprocess")?.text == "False")
    }
}

extension LiveServer {
    var stdoutLines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
}
