import ArgumentParser
import Foundation
import Subinterpreters

@main
struct Subinterp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Python in parallel on isolated CPython sub-interpreters, each with its own GIL.",
        version: SystemInfo.version,
        subcommands: [Info.self, Check.self, Run.self, Map.self, Serve.self, Demo.self, ServeWorker.self, ServeSupervisor.self]
    )
}

/// `--python`, shared by every command that starts Python.
struct PythonOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Python executable or virtual environment to use (default: $\(PythonInstallation.environmentVariable), else the newest CPython 3.12/3.13 found).",
            valueName: "path"))
    var python: String?

    /// Starts the runtime, or exits with one clear line. Finding, loading and initializing
    /// Python happen on a thread of their own, not on a Swift concurrency thread.
    func runtime() async throws -> PythonRuntime {
        let explicit = python
        return try await failing { try await PythonRuntime.start(explicit: explicit) }
    }

    /// Starts the runtime on the calling thread, or exits with one clear line. (For `serve`,
    /// until it moves to `runtime()`.)
    func start() throws -> PythonRuntime {
        try failing { try PythonRuntime.start(PythonInstallation.find(explicit: python)) }
    }
}

/// Runs `body`; a library error becomes one line on stderr and exit status 1.
func failing<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as SubinterpreterError {
        printError(error.detailedDescription)
        throw ExitCode(1)
    }
}

func failing<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as SubinterpreterError {
        printError(error.detailedDescription)
        throw ExitCode(1)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("subinterp: \(message)\n".utf8))
}

/// Writes and flushes at once, so our lines keep their place among the interpreters' output.
func printLine(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func jsonLine(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}
