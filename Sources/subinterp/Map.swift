import ArgumentParser
import Foundation
import Subinterpreters

struct Map: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a Python function on every line of JSON input, in parallel sub-interpreters.",
        discussion: """
            Reads JSON lines (stdin by default), calls FUNCTION with each value (--star spreads a JSON \
            array as positional arguments), and writes one JSON line per input, in input order. A \
            failing or malformed line is written in its place as \
            {"error": {"line": N, "type": ..., "message": ..., "traceback": ...}} and the exit status \
            is 1. The current directory is on sys.path, so local modules import.
            """)

    @OptionGroup var python: PythonOptions
    @Argument(help: "The function, as MODULE:FUNCTION or MODULE.FUNCTION.") var function: String
    @Option(name: .short, help: "Worker interpreters (default: CPU count).") var j: Int?
    @Option(help: "Read lines from this file instead of stdin.") var input: String?
    @Option(help: "Write lines to this file instead of stdout.") var output: String?
    @Flag(help: "Spread each JSON array as positional arguments.") var star = false
    @Option(help: "Interrupt a call that runs longer than this many seconds.") var timeout: Double?
    @Option(help: "Python statements each worker runs first.") var setup: String?

    func validate() throws {
        if let j, j < 1 { throw ValidationError("-j must be at least 1") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds") }
        if !function.contains(":") && !function.contains(".") {
            throw ValidationError("give the function as MODULE:FUNCTION, e.g. `subinterp map mymodule:transform`")
        }
    }

    func run() async throws {
        let runtime = try await python.runtime()
        let inputDescriptor: Int32
        if let input {
            inputDescriptor = open(input, O_RDONLY)
            if inputDescriptor < 0 {
                printError("cannot open --input \(input): \(String(cString: strerror(errno)))")
                throw ExitCode(1)
            }
        } else {
            inputDescriptor = STDIN_FILENO
        }
        let sink: OutputSink
        do {
            sink = try OutputSink(path: output)
        } catch {
            printError("cannot write --output \(output ?? "-"): \(error.localizedDescription)")
            throw ExitCode(1)
        }
        let pool: InterpreterPool
        do {
            pool = try await JSONLinesMap.makePool(
                function: function, star: star, workers: j ?? SystemInfo.cpuCount, setup: setup,
                timeout: timeout.map { .milliseconds(Int($0 * 1000)) },
                path: [FileManager.default.currentDirectoryPath], runtime: runtime)
        } catch let error as SubinterpreterError {
            // A function that cannot be found is one line; a failing --setup keeps its traceback.
            if let exception = error.pythonException,
                ["ModuleNotFoundError", "AttributeError", "NameError"].contains(exception.typeName)
            {
                printError("cannot load \(function): \(exception.message)")
            } else {
                printError(error.detailedDescription)
            }
            throw ExitCode(1)
        }
        let lines = FileLines(descriptor: inputDescriptor)
        let progress = Progress(total: input.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int }, lines: lines)
        let summary: JSONLinesMap.Summary
        do {
            summary = try await JSONLinesMap.run(pool: pool, lines: lines, write: sink.write, progress: progress.update)
            try sink.flush()
        } catch {
            await pool.shutdown(cancelPending: true)
            try? sink.flush()
            printError((error as? SubinterpreterError)?.message ?? error.localizedDescription)
            throw ExitCode(1)
        }
        progress.finish(summary)
        await pool.shutdown()
        _ = runtime.finalize()
        if summary.failures > 0 {
            printError("\(summary.failures) of \(summary.lines) lines failed; their error records are in the output")
            throw ExitCode(1)
        }
    }
}

/// Buffered line output to stdout or a file.
final class OutputSink {
    private let handle: FileHandle
    private var buffer = Data()
    private let immediate: Bool

    init(path: String?) throws {
        if let path {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw CocoaError(.fileWriteNoPermission)
            }
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            immediate = false
        } else {
            handle = FileHandle.standardOutput
            immediate = isatty(STDOUT_FILENO) != 0
        }
    }

    func write(_ line: String) throws {
        buffer.append(contentsOf: line.utf8)
        buffer.append(UInt8(ascii: "\n"))
        if immediate || buffer.count >= 1 << 16 { try flush() }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        try handle.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

/// A progress line on stderr when it is a terminal: count, rate and (for a file) ETA.
final class Progress {
    private let total: Int?
    private let lines: FileLines
    private let enabled = isatty(STDERR_FILENO) != 0
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now

    init(total: Int?, lines: FileLines) {
        self.total = total
        self.lines = lines
    }

    func update(_ count: Int) {
        guard enabled, ContinuousClock.now - last > .milliseconds(250) else { return }
        last = .now
        let elapsed = seconds(ContinuousClock.now - start)
        var text = String(format: "\r%d lines, %.0f/s", count, Double(count) / max(elapsed, 1e-9))
        if let total, total > 0 {
            let fraction = Double(lines.bytesRead.count) / Double(total)
            if fraction > 0 {
                let remaining = elapsed / fraction - elapsed
                text += String(format: ", %.0f%%, ETA %d:%02d", fraction * 100, Int(remaining) / 60, Int(remaining) % 60)
            }
        }
        FileHandle.standardError.write(Data((text + "\u{1B}[K").utf8))
    }

    func finish(_ summary: JSONLinesMap.Summary) {
        guard enabled else { return }
        let elapsed = seconds(ContinuousClock.now - start)
        FileHandle.standardError.write(Data(String(
            format: "\r%d lines in %.1f s (%.0f/s), %d failed\u{1B}[K\n", summary.lines, elapsed,
            Double(summary.lines) / max(elapsed, 1e-9), summary.failures).utf8))
    }

    private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}
