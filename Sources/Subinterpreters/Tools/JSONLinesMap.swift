import Foundation
import Logging
import Synchronization

/// Calls a Python function on each line of JSON, on a pool, writing one JSON line per input in
/// input order: what `subinterp map` does. Parsing and serializing happen in the workers, with
/// Python's own `json`, so values keep their Python meaning (big ints stay exact).
///
/// A failing input is never lost: its place in the output holds an error record,
/// `{"error": {"line": N, "type": "...", "message": "...", "traceback": "..."}}`. A line that is
/// not valid JSON gets such a record too.
///
/// Memory is bounded however long the input is: a reader thread takes the lines that are
/// available (at most `chunkLines` lines or `chunkBytes` bytes per task) and stops reading while
/// `window` tasks are submitted and not yet written, results that wait for an earlier one
/// included. Output is streamed: a result is written, and flushed, as soon as it and every
/// earlier one are ready, so `tail -f log | subinterp map …` answers each line as it comes.
package enum JSONLinesMap {
    package struct Summary: Sendable, Equatable {
        package var lines: Int
        package var failures: Int
    }

    /// The most lines, and bytes of lines, in one task.
    package static let chunkLines = 512
    package static let chunkBytes = 256 << 10

    /// The name of the per-line function the loader defines in each worker's `__main__`.
    static let lineFunction = "_subinterp_map_line"

    /// Starts a pool whose workers run `setup` (the user's `--setup`), then resolve `function`
    /// and define the per-line wrapper (failing at once if the function cannot be imported).
    /// The workers are interpreters or processes as `isolation` says (`--isolation`); the
    /// wrapper is the same Python in both.
    package static func makePool(
        function: String, star: Bool, workers: Int, setup: String?, timeout: Duration?, path: [String], runtime: PythonRuntime,
        isolation: InterpreterPool.Isolation = .interpreters, logger: Logger? = nil
    ) async throws -> InterpreterPool {
        let literal = try String(decoding: JSONSerialization.data(withJSONObject: [function]), as: UTF8.self)
        let wrapper = """
            import json as _json, subinterp as _subinterp
            def \(lineFunction)(line, _target=_subinterp._resolve(\(literal)[0]), _star=\(star ? "True" : "False")):
                try:
                    value = _json.loads(line)
                except ValueError as error:
                    raise ValueError(f"malformed JSON input: {error}") from None
                if _star:
                    if not isinstance(value, list):
                        raise TypeError(f"--star needs a JSON array on each line, got {type(value).__name__}")
                    result = _target(*value)
                else:
                    result = _target(value)
                return _json.dumps(result, ensure_ascii=False)
            """
        var configuration = InterpreterPool.Configuration(workers: workers, setup: setup, path: path, timeout: timeout)
        configuration.loader = wrapper
        configuration.isolation = isolation
        return try await InterpreterPool(configuration: configuration, runtime: runtime, logger: logger)
    }

    /// Maps every line read from `input` and hands each output line (without its newline) to
    /// `write`, in input order; `flush` is called whenever the output has caught up with the
    /// results that are ready. `progress` gets the count of lines written so far and of bytes
    /// read. With a
    /// timeout, each line is a task of its own, so a slow line cannot make its neighbours time out.
    package static func run(
        pool: InterpreterPool, input: Int32, window: Int? = nil, write: (String) throws -> Void, flush: () throws -> Void,
        progress: (_ lines: Int, _ bytesRead: Int) -> Void = { _, _ in }
    ) async throws -> Summary {
        let results = OrderedChunks()
        let reader = LineReader(
            descriptor: input, window: window ?? pool.configuration.workers * 4,
            chunkLines: pool.configuration.timeout == nil ? chunkLines : 1, chunkBytes: chunkBytes)
        let timeout = pool.configuration.timeout.map { String(format: "%g", $0.timeInterval) }
        reader.start { lines, firstLine, chunk in
            do {
                _ = try pool.core.submit(
                    options: InterpreterPool.JobOptions(
                        timeout: pool.configuration.timeout, timeoutStart: .start,
                        label: lines.count == 1 ? "line \(firstLine)" : "lines \(firstLine)-\(firstLine + lines.count - 1)"),
                    calls: lines.count,
                    failures: { done in done.results.count { if case .failure = $0 { true } else { false } } },
                    body: { context in
                        InterpreterPool.runChunk(context, function: lineFunction, inputs: lines.map { .string($0) }, star: false)
                    },
                    remote: { channel, job in channel.chunk(lineFunction, lines.map { .string($0) }, star: false, job: job) },
                    completion: { result in
                        switch result {
                        case .success(let done): results.post(chunk, firstLine: firstLine, done.results)
                        case .failure(let error):
                            let failure = error as? SubinterpreterError ?? SubinterpreterError(.runtimeFailed, "\(error)")
                            results.post(chunk, firstLine: firstLine, Array(repeating: .failure(failure), count: lines.count))
                        }
                    })
                return true
            } catch {
                results.fail(error)
                return false
            }
        } ended: { chunks, error in
            if let error { results.fail(error) } else { results.end(after: chunks) }
        }
        defer { reader.stop() }
        var summary = Summary(lines: 0, failures: 0)
        var next = 0
        while let (firstLine, items) = try await results.take(next) {
            for (offset, result) in items.enumerated() {
                summary.lines += 1
                let line = firstLine + offset
                switch result {
                case .success(.string(let json)):
                    try write(json)
                case .success(let other):
                    summary.failures += 1
                    try write(errorRecord(line: line, type: "TypeError", message: "unexpected result \(other)", traceback: ""))
                case .failure(let error) where error.code == .timedOut:
                    summary.failures += 1
                    try write(errorRecord(
                        line: line, type: "TimeoutError",
                        message: "line \(line) did not finish within --timeout \(timeout ?? "?") s; its Python code was interrupted",
                        traceback: ""))
                case .failure(let error):
                    summary.failures += 1
                    let exception = error.pythonException
                    try write(errorRecord(
                        line: line, type: exception?.typeName ?? "RuntimeError", message: exception?.message ?? error.message,
                        traceback: exception?.traceback ?? ""))
                }
            }
            next += 1
            reader.written()
            if !results.isReady(next) { try flush() }
            progress(summary.lines, reader.bytesRead)
        }
        try flush()
        return summary
    }

    static func errorRecord(line: Int, type: String, message: String, traceback: String) -> String {
        let record: [String: Any] = ["error": ["line": line, "type": type, "message": message, "traceback": traceback]]
        let data = (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Finished chunks, handed from the workers to the writing task in chunk order.
final class OrderedChunks: Sendable {
    typealias Chunk = (firstLine: Int, results: [Result<PythonValue, SubinterpreterError>])

    private struct State {
        var ready: [Int: Chunk] = [:]
        var end: Int?
        var failure: (any Error)?
        var waiter: (index: Int, continuation: CheckedContinuation<Chunk?, any Error>)?
    }

    private let state = Mutex(State())

    func post(_ chunk: Int, firstLine: Int, _ results: [Result<PythonValue, SubinterpreterError>]) {
        let waiter = state.withLock { state -> CheckedContinuation<Chunk?, any Error>? in
            if let waiter = state.waiter, waiter.index == chunk {
                state.waiter = nil
                return waiter.continuation
            }
            state.ready[chunk] = (firstLine, results)
            return nil
        }
        waiter?.resume(returning: (firstLine, results))
    }

    /// No chunk after `count - 1` will come.
    func end(after count: Int) {
        let waiter = state.withLock { state -> CheckedContinuation<Chunk?, any Error>? in
            state.end = count
            guard let waiter = state.waiter, waiter.index >= count else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume(returning: nil)
    }

    func fail(_ error: any Error) {
        let waiter = state.withLock { state -> CheckedContinuation<Chunk?, any Error>? in
            if state.failure == nil { state.failure = error }
            defer { state.waiter = nil }
            return state.waiter?.continuation
        }
        waiter?.resume(throwing: error)
    }

    func isReady(_ chunk: Int) -> Bool {
        state.withLock { $0.ready[chunk] != nil || $0.end == chunk }
    }

    /// Chunk `index` once it is ready, or nil after the last one.
    func take(_ index: Int) async throws -> Chunk? {
        try await withCheckedThrowingContinuation { continuation in
            let now = state.withLock { state -> Result<Chunk?, any Error>? in
                if let chunk = state.ready.removeValue(forKey: index) { return .success(chunk) }
                if let failure = state.failure { return .failure(failure) }
                if let end = state.end, index >= end { return .success(nil) }
                state.waiter = (index, continuation)
                return nil
            }
            if let now { continuation.resume(with: now) }
        }
    }
}

/// Reads lines from a file descriptor on a thread of its own (reading blocks), and submits
/// them in chunks of the lines available at that moment, at most `window` chunks ahead of the
/// writer. Also counts the bytes read, for progress reports.
package final class LineReader: @unchecked Sendable {
    // Safe: the window counters are guarded by `condition`; `bytesRead` is atomic; the rest is
    // set in init or used only by the reader thread. NSCondition rather than a Mutex: the
    // reader thread must block while the window is full.
    private let descriptor: Int32
    private let window: Int
    private let chunkLines: Int
    private let chunkBytes: Int
    private let condition = NSCondition()
    private var outstanding = 0
    private var stopped = false
    private let bytes = Atomic<Int>(0)

    package var bytesRead: Int { bytes.load(ordering: .relaxed) }

    init(descriptor: Int32, window: Int, chunkLines: Int, chunkBytes: Int) {
        self.descriptor = descriptor
        self.window = max(1, window)
        self.chunkLines = max(1, chunkLines)
        self.chunkBytes = chunkBytes
    }

    /// Starts reading. `submit(lines, firstLineNumber, chunkIndex)` runs on the reader thread
    /// for each chunk and returns false to stop; `ended(chunkCount, error)` runs once at the end.
    func start(
        submit: @escaping @Sendable ([String], Int, Int) -> Bool, ended: @escaping @Sendable (Int, (any Error)?) -> Void
    ) {
        let thread = Thread { [self] in
            let (chunks, error) = read(submit)
            ended(chunks, error)
        }
        thread.name = "subinterp-map-reader"
        thread.start()
    }

    /// A chunk was written: the reader may go one further.
    func written() {
        condition.lock()
        outstanding -= 1
        condition.signal()
        condition.unlock()
    }

    /// Stops submitting (a reader blocked in `read` finishes that read first).
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    /// Waits for room in the window; false once stopped.
    private func reserve() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while outstanding >= window && !stopped { condition.wait() }
        guard !stopped else { return false }
        outstanding += 1
        return true
    }

    private func read(_ submit: ([String], Int, Int) -> Bool) -> (Int, (any Error)?) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var partial: [UInt8] = []
        var pending: [String] = []
        var chunk = 0
        var line = 1
        func flushPending() -> Bool {
            while !pending.isEmpty {
                guard reserve() else { return false }
                var count = 0, size = 0
                while count < pending.count && count < chunkLines && (count == 0 || size + pending[count].utf8.count <= chunkBytes) {
                    size += pending[count].utf8.count
                    count += 1
                }
                let lines = Array(pending.prefix(count))
                pending.removeFirst(count)
                guard submit(lines, line, chunk) else { return false }
                line += count
                chunk += 1
            }
            return true
        }
        func take(_ bytes: ArraySlice<UInt8>) {
            var end = bytes.endIndex
            if end > bytes.startIndex && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            pending.append(String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self))
        }
        while true {
            let count = buffer.withUnsafeMutableBytes { Foundation.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return (chunk, SubinterpreterError(.invalidArgument, "cannot read the input: \(String(cString: strerror(errno)))"))
            }
            if count == 0 {
                if !partial.isEmpty {
                    take(partial[...])
                    partial = []
                }
                guard flushPending() else { return (chunk, nil) }
                return (chunk, nil)
            }
            bytes.add(count, ordering: .relaxed)
            var start = 0
            while let newline = buffer[start..<count].firstIndex(of: UInt8(ascii: "\n")) {
                if partial.isEmpty {
                    take(buffer[start..<newline])
                } else {
                    partial += buffer[start..<newline]
                    take(partial[...])
                    partial = []
                }
                start = newline + 1
            }
            partial += buffer[start..<count]
            // Submit what is here now: a line that arrived alone goes out alone.
            guard flushPending() else { return (chunk, nil) }
        }
    }
}
