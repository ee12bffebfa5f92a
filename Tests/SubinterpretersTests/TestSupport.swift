import Dispatch
import Foundation
import Logging
import Synchronization
import Testing

@testable import Subinterpreters

/// The minor version of the Python the tests run on (3.12 or 3.13).
let pythonMinor: Int = (try? PythonRuntime.start().installation.minor) ?? 13

/// A name no other test uses, for named queues.
func uniqueName(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString)" }

/// Runs `body`, failing the test if it has not finished within `limit`, and then returning nil
/// without waiting for it (a body stuck in a blocking call must not hold the test run). The
/// limit is only a failure bound for code that would otherwise hang; nothing waits for it to pass.
func withFailureTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T? {
    let race = FirstResult<T?>()
    let result = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T?, any Error>) in
        race.set(continuation)
        // Unstructured on purpose: the body may never return, and a task group would wait for it.
        let task = Task { race.finish(await Result { try await body() }) }
        DispatchQueue.global().asyncAfter(deadline: .now() + limit.timeInterval) {
            if race.finish(.success(nil)) { task.cancel() }
        }
    }
    if result == nil { Issue.record("\(what) did not finish within \(limit)", sourceLocation: sourceLocation) }
    return result
}

/// Resumes a continuation with whichever result comes first.
final class FirstResult<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, done: Bool)>((nil, false))

    func set(_ continuation: CheckedContinuation<T, any Error>) { state.withLock { $0.continuation = continuation } }

    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard !state.done else { return nil }
            state.done = true
            return state.continuation
        }
        continuation?.resume(with: result)
        return continuation != nil
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Waits until `condition` holds, yielding in between, failing the test if it does not hold
/// within `limit`. For state that has no event to await (a wait being registered).
func waitUntil(
    _ what: String, within limit: Duration = .seconds(30), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("\(what) did not happen within \(limit)", sourceLocation: sourceLocation)
            return
        }
        await Task.yield()
    }
}

/// Threads of this process now.
func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
}

/// Runs `body` on a new thread and waits for it without blocking the concurrency pool.
func onThread(_ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        Thread {
            body()
            continuation.resume()
        }.start()
    }
}

/// Log lines a component wrote, for tests that check what the log says.
final class CollectedLog: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    func append(_ line: String) { lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let log: CollectedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            let rendered = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.append("\(event.level): \(event.message) \(rendered)")
        }
    }
}

/// A pipe whose read end a Python call can block on, in C, until the test writes to it.
final class BlockingPipe: Sendable {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0)
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    func release() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }
}
