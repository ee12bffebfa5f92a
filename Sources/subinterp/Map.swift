import ArgumentParser
import Foundation
import Logging
import Subinterpreters

struct Map: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a Python function on every line of JSON input, in parallel sub-interpreters or worker processes.",
        discussion: """
            Reads JSON lines (stdin by default), calls FUNCTION with each value (--star spreads a JSON \
            array as positional arguments), and writes one JSON line per input, in input order, each as \
            soon as it and every earlier one are done. A failing or malformed line is written in its \
            place as {"error": {"line": N, "type": ..., "message": ..., "traceback": ...}} and the exit \
            status is 1. The current directory is on sys.path, so local modules import. Memory stays \
            bounded however long the input is.

            --isolation says what a worker is. interpreters: an isolated sub-interpreter of this process \
            (cheapest; extension modules without sub-interpreter support, such as numpy or orjson, refuse \
            to load). processes: a child Python process running one call at a time, so every extension \
            module loads; values are copied through pipes, and a crash costs only that process: its line \
            gets an error record whose type is the signal (SIGSEGV) and a fresh process takes over. auto \
            (the default): interpreters, unless the function or --setup imports an extension module that \
            refuses them; then one warning says so and processes are used.
            """)

    @OptionGroup var python: PythonOptions
    @Argument(help: "The function, as MODULE:FUNCTION or MODULE.FUNCTION.") var function: String
    @Option(name: .short, parsing: .unconditional, help: "Workers, interpreters or processes (default: CPU count).") var j: Int?
    @Option(help: "interpreters, processes or auto: what a worker is; see above.")
    var isolation: String = "auto"
    @Option(help: "Read lines from this file instead of stdin.") var input: String?
    @Option(help: "Write lines to this file instead of stdout.") var output: String?
    @Flag(help: "Spread each JSON array as positional arguments.") var star = false
    @Option(parsing: .unconditional, help: "Interrupt a call that runs longer than this many seconds; its line gets a TimeoutError record.")
    var timeout: Double?
    @Option(help: "Python statements each worker runs first.") var setup: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical (default warning); debug adds tracebacks to load errors.")
    var logLevel: String = "warning"

    func validate() throws {
        if let j, j < 1 { throw ValidationError(j < 0 ? "-j must be at least 1; \(j) is negative" : "-j must be at least 1") }
        if let timeout {
            if timeout < 0 { throw ValidationError("--timeout must be a positive number of seconds; \(String(format: "%g", timeout)) is negative") }
            if !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds") }
        }
        if Self.isolations[isolation] == nil {
            throw ValidationError("--isolation must be interpreters, processes or auto")
        }
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if !function.contains(":") && !function.contains(".") {
            throw ValidationError("give the function as MODULE:FUNCTION, e.g. `subinterp map mymodule:transform`")
        }
    }

    static let isolations: [String: InterpreterPool.Isolation] = ["interpreters": .interpreters, "processes": .processes, "auto": .auto]

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        let logger = Logger(label: "subinterp.map") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
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
            printError("\(error)")
            throw ExitCode(1)
        }
        let pool: InterpreterPool
        do {
            pool = try await JSONLinesMap.makePool(
                function: function, star: star, workers: j ?? SystemInfo.cpuCount, setup: setup,
                timeout: timeout.map { .milliseconds(Int($0 * 1000)) },
                path: [FileManager.default.currentDirectoryPath], runtime: runtime, isolation: Self.isolations[isolation] ?? .auto,
                logger: logger)
        } catch let error as SubinterpreterError {
            let failure = LoadFailure(error, loading: function, setup: .option("--setup"))
            printError(failure.summary)
            if level <= .debug, !failure.traceback.isEmpty { FileHandle.standardError.write(Data((failure.traceback + "\n").utf8)) }
            throw ExitCode(1)
        }
        let progress = Progress(total: input.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int })
        let summary: JSONLinesMap.Summary
        do {
            summary = try await JSONLinesMap.run(
                pool: pool, input: inputDescriptor, write: sink.write, flush: sink.flush, progress: { progress.update($0, bytesRead: $1) })
        } catch {
            await pool.shutdown(cancelPending: true)
            try? sink.flush()
            printError((error as? SubinterpreterError)?.message ?? "\(error)")
            throw ExitCode(1)
        }
        progress.finish(summary)
        // A call stuck in C past its timeout has had its worker abandoned: its interpreter may
        // still run, so Python is not finalized and the process simply exits.
        let abandoned = await pool.shutdown()
        if abandoned.isEmpty { _ = runtime.finalize() }
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

    /// Opens `path` for writing (stdout when nil); the error is one line saying what is wrong.
    init(path: String?) throws {
        guard let path else {
            handle = FileHandle.standardOutput
            return
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            let reason: String
            switch errno {
            case ENOENT: reason = "no such directory: \((path as NSString).deletingLastPathComponent)"
            case ENOTDIR: reason = "a part of the path is not a directory"
            case EISDIR: reason = "it is a directory; give a file name"
            default: reason = String(cString: strerror(errno))
            }
            throw OutputError(description: "cannot write --output \(path): \(reason)")
        }
        handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }

    struct OutputError: Error, CustomStringConvertible {
        var description: String
    }

    func write(_ line: String) throws {
        buffer.append(contentsOf: line.utf8)
        buffer.append(UInt8(ascii: "\n"))
        if buffer.count >= 1 << 16 { try flush() }
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
    private let enabled = isatty(STDERR_FILENO) != 0
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now

    init(total: Int?) {
        self.total = total
    }

    func update(_ count: Int, bytesRead: Int) {
        guard enabled, ContinuousClock.now - last > .milliseconds(250) else { return }
        last = .now
        let elapsed = (ContinuousClock.now - start).seconds
        var text = String(format: "\r%d lines, %.0f/s", count, Double(count) / max(elapsed, 1e-9))
        if let total, total > 0, bytesRead > 0 {
            let fraction = min(1, Double(bytesRead) / Double(total))
            let remaining = elapsed / fraction - elapsed
            text += String(format: ", %.0f%%, ETA %d:%02d", fraction * 100, Int(remaining) / 60, Int(remaining) % 60)
        }
        FileHandle.standardError.write(Data((text + "\u{1B}[K").utf8))
    }

    func finish(_ summary: JSONLinesMap.Summary) {
        guard enabled else { return }
        let elapsed = (ContinuousClock.now - start).seconds
        FileHandle.standardError.write(Data(String(
            format: "\r%d lines in %.1f s (%.0f/s), %d failed\u{1B}[K\n", summary.lines, elapsed,
            Double(summary.lines) / max(elapsed, 1e-9), summary.failures).utf8))
    }
}
