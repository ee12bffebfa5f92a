import Foundation
import Synchronization

/// Calls a Python function on each line of JSON, on a pool, writing one JSON line per input in
/// input order: what `subinterp map` does. Parsing and serializing happen in the workers, with
/// Python's own `json`, so values keep their Python meaning (big ints stay exact).
///
/// A failing input is never lost: its place in the output holds an error record,
/// `{"error": {"line": N, "type": "...", "message": "...", "traceback": "..."}}`. A line that is
/// not valid JSON gets such a record too.
package enum JSONLinesMap {
    package struct Summary: Sendable, Equatable {
        package var lines: Int
        package var failures: Int
    }

    /// The name of the per-line function the setup defines in each worker's `__main__`.
    static let lineFunction = "_subinterp_map_line"

    /// Starts a pool whose workers run `setup`, then resolve `function` (failing at once, with a
    /// traceback, if it cannot be imported) and define the per-line wrapper.
    package static func makePool(
        function: String, star: Bool, workers: Int, setup: String?, timeout: Duration?, path: [String], runtime: PythonRuntime
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
        let configuration = InterpreterPool.Configuration(
            workers: workers, setup: [setup, wrapper].compactMap { $0 }.joined(separator: "\n"), path: path, timeout: timeout)
        return try await InterpreterPool(configuration: configuration, runtime: runtime)
    }

    /// Maps every line of `lines` and hands each output line (without its newline) to `write`,
    /// in input order. `progress` is called after each line with the count so far.
    package static func run<Lines: AsyncSequence>(
        pool: InterpreterPool, lines: Lines, write: (String) throws -> Void, progress: (Int) -> Void = { _ in }
    ) async throws -> Summary where Lines.Element == String {
        var summary = Summary(lines: 0, failures: 0)
        for try await item in pool.mapResults(lineFunction, lines.map { PythonValue.string($0) }) {
            summary.lines += 1
            switch item.result {
            case .success(.string(let json)):
                try write(json)
            case .success(let other):
                summary.failures += 1
                try write(errorRecord(line: item.index + 1, type: "TypeError", message: "unexpected result \(other)", traceback: ""))
            case .failure(let error):
                summary.failures += 1
                let exception = error.pythonException
                try write(errorRecord(
                    line: item.index + 1, type: exception?.typeName ?? error.code.description,
                    message: exception?.message ?? error.message, traceback: exception?.traceback ?? ""))
            }
            progress(summary.lines)
        }
        return summary
    }

    static func errorRecord(line: Int, type: String, message: String, traceback: String) -> String {
        let record: [String: Any] = ["error": ["line": line, "type": type, "message": message, "traceback": traceback]]
        let data = (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Lines of a file descriptor, read in large blocks, without their newlines (a final line
/// without a newline counts too). Reading blocks the calling thread.
package struct FileLines: AsyncSequence, Sendable {
    package typealias Element = String
    let descriptor: Int32
    /// Bytes consumed so far, for progress reports.
    package let bytesRead: ByteCounter

    package final class ByteCounter: Sendable {
        private let value = Mutex(0)
        package var count: Int { value.withLock { $0 } }
        func add(_ n: Int) { value.withLock { $0 += n } }
    }

    package init(descriptor: Int32) {
        self.descriptor = descriptor
        self.bytesRead = ByteCounter()
    }

    package struct AsyncIterator: AsyncIteratorProtocol {
        let descriptor: Int32
        let counter: ByteCounter
        var buffer: [UInt8] = []
        var start = 0
        var finished = false

        package mutating func next() async throws -> String? {
            while true {
                if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    var end = newline
                    if end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                    let line = String(decoding: buffer[start..<end], as: UTF8.self)
                    counter.add(newline + 1 - start)
                    start = newline + 1
                    return line
                }
                if finished {
                    guard start < buffer.count else { return nil }
                    let line = String(decoding: buffer[start...], as: UTF8.self)
                    counter.add(buffer.count - start)
                    start = buffer.count
                    return line
                }
                buffer.removeFirst(start)
                start = 0
                let old = buffer.count
                buffer.reserveCapacity(old + 65536)
                buffer.append(contentsOf: repeatElement(0, count: 65536))
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + old, 65536) }
                if count < 0 {
                    if errno == EINTR { buffer.removeLast(65536); continue }
                    throw SubinterpreterError(.invalidArgument, "cannot read the input: \(String(cString: strerror(errno)))")
                }
                buffer.removeLast(65536 - count)
                if count == 0 { finished = true }
            }
        }
    }

    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator(descriptor: descriptor, counter: bytesRead) }
}
