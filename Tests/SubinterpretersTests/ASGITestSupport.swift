import Foundation
import Logging
import Synchronization
import Testing

@testable import SubinterpServer
@testable import Subinterpreters

/// A timeout that only fails a test: the tests wait for real signals, never for time to pass.
struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Lines of text appended from any thread, and tasks waiting for a condition on them.
final class Recorder: Sendable {
    private let state = Mutex<(lines: [String], waiters: [Int: (predicate: @Sendable ([String]) -> Bool, continuation: CheckedContinuation<Void, any Error>)], next: Int)>(([], [:], 0))

    func append(_ line: String) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.lines.append(line)
            let lines = state.lines
            let done = state.waiters.filter { $0.value.predicate(lines) }
            for key in done.keys { state.waiters[key] = nil }
            return done.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    var lines: [String] { state.withLock { $0.lines } }

    /// Waits until `predicate` holds for the lines (failing after `timeout`).
    func wait(for what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable ([String]) -> Bool) async throws {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                        let now = self.state.withLock { state -> Bool in
                            if predicate(state.lines) { return true }
                            if Task.isCancelled {
                                return true
                            }
                            state.waiters[id] = (predicate, continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    self.state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestTimeout(what: "\(what); recorded: \(self.lines)")
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Waits for a line equal to `line`.
    func wait(for line: String, timeout: Duration = .seconds(30)) async throws {
        try await wait(for: "'\(line)'", timeout: timeout) { $0.contains(line) }
    }
}

/// A fake HTTP connection: records what the worker sends and answers as told.
final class TestHTTPSink: ASGIHTTPSink {
    let recorder = Recorder()
    private let state = Mutex<(status: Int?, headers: [(String, String)], body: [UInt8], responds: Int, outcome: ASGIOutcome?)>((nil, [], [], 0, nil))
    /// What `respond` answers for its n-th call (1-based).
    let answer: @Sendable (Int) -> ASGIWriteState

    init(answer: @escaping @Sendable (Int) -> ASGIWriteState = { _ in .ready }) {
        self.answer = answer
    }

    func respond(status: Int?, headers: ASGIHeaderList, body: UnsafeRawBufferPointer, more: Bool) -> ASGIWriteState {
        let pairs = headers.pairs
        let count = state.withLock { state -> Int in
            if let status {
                state.status = status
                state.headers = pairs.map { ($0.name, $0.value) }
            }
            state.body.append(contentsOf: body)
            state.responds += 1
            return state.responds
        }
        recorder.append("respond \(count)\(status.map { " status \($0)" } ?? "") \(String(decoding: body, as: UTF8.self))\(more ? " more" : "")")
        return answer(count)
    }

    func wantsBody() { recorder.append("demand") }

    func finished(_ outcome: ASGIOutcome) {
        state.withLock { $0.outcome = outcome }
        recorder.append("finished \(outcome)")
    }

    var status: Int? { state.withLock { $0.status } }
    var headers: [(String, String)] { state.withLock { $0.headers } }
    var body: String { state.withLock { String(decoding: $0.body, as: UTF8.self) } }
    var responds: Int { state.withLock { $0.responds } }

    /// The outcome, once the exchange ends.
    func outcome(timeout: Duration = .seconds(30)) async throws -> ASGIOutcome {
        try await recorder.wait(for: "the request to end", timeout: timeout) { $0.contains { $0.hasPrefix("finished ") } }
        return state.withLock { $0.outcome! }
    }
}

/// A fake WebSocket connection.
final class TestWebSocketSink: ASGIWebSocketSink {
    let recorder = Recorder()

    func accept(subprotocol: String?, headers: ASGIHeaderList) -> ASGIWriteState {
        let extra = headers.pairs.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
        recorder.append("accept \(subprotocol ?? "-") [\(extra)]")
        return .ready
    }

    func send(_ message: UnsafeRawBufferPointer, text: Bool) -> ASGIWriteState {
        recorder.append(text ? "text \(String(decoding: message, as: UTF8.self))" : "bytes \(Array(message))")
        return .ready
    }

    func close(code: Int, reason: String) { recorder.append("close \(code) \(reason)") }

    func wantsMessage() { recorder.append("demand") }

    func finished(_ outcome: ASGIOutcome) { recorder.append("finished \(outcome)") }
}

/// Log lines at any level, for checking what reaches the server's log.
struct CapturingLogHandler: LogHandler {
    let recorder: Recorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let suffix = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        recorder.append("\(event.level): \(event.message)\(suffix)")
    }
}

/// An ASGI app written to a fresh directory, served by `ASGIApplication` workers.
struct ASGITestApp {
    let directory: URL
    let logs = Recorder()
    /// A process-wide queue name only this app uses (the app gets it as `EVENTS`).
    let events: String

    init(_ source: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-asgi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        events = "asgi-events-\(UUID().uuidString)"
        let prelude = "import subinterp as _test_subinterp\nEVENTS = _test_subinterp.queue(\(AppLoader.pythonString(events)))\n"
        try (prelude + source).write(to: directory.appendingPathComponent("app.py"), atomically: true, encoding: .utf8)
    }

    var logger: Logger {
        let recorder = logs
        var logger = Logger(label: "test.asgi") { _ in CapturingLogHandler(recorder: recorder) }
        logger.logLevel = .trace
        return logger
    }

    func configuration(workers: Int = 1, app: String = "app:app") -> ASGIConfiguration {
        ASGIConfiguration(app: app, workers: workers, path: [directory.path])
    }

    func start(_ configuration: ASGIConfiguration) async throws -> ASGIApplication {
        try await ASGIApplication(configuration: configuration, runtime: PythonRuntime.start(), logger: logger)
    }

    /// The next value the app put on `EVENTS`.
    func nextEvent(timeout: Duration = .seconds(30)) async throws -> PythonValue {
        try await PythonQueue.named(events).get(timeout: timeout)
    }
}

extension ASGIApplication {
    /// A GET (or other body-less) request with a few headers.
    func get(
        _ target: String, method: String = "GET", headers: [(String, String)] = [], sink: TestHTTPSink,
        body: [UInt8] = [], more: Bool = false
    ) -> ASGIExchange? {
        var head = ASGIRequestHead(
            method: method, target: target, server: (host: "127.0.0.1", port: 8000), client: (host: "10.1.2.3", port: 54321))
        head.addHeader(name: "Host", value: "example.test")
        for (name, value) in headers { head.addHeader(name: name, value: value) }
        return body.withUnsafeBytes { startHTTP(head, body: $0, more: more, sink: sink) }
    }
}

extension ASGIExchange {
    func body(_ text: String, more: Bool) {
        var text = text
        text.withUTF8 { body(UnsafeRawBufferPointer($0), more: more) }
    }

    func message(_ text: String) {
        var text = text
        text.withUTF8 { message(UnsafeRawBufferPointer($0), text: true) }
    }
}
