import ArgumentParser
import Foundation
import Subinterpreters

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what sub-interpreters buy: one CPU-bound job on 1 interpreter, on N interpreters, and on N threads of one interpreter.")

    @OptionGroup var python: PythonOptions
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Interpreters and threads to use (default: CPU count).") var workers: Int?
    @Option(parsing: .unconditional, help: "How many fib() calls make up the job.") var tasks: Int = 64
    @Option(parsing: .unconditional, help: "The argument of each fib() call.") var fib: Int = 27

    func validate() throws {
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1" + (workers < 0 ? "; \(workers) is negative" : "")) }
        if tasks < 1 { throw ValidationError("--tasks must be at least 1" + (tasks < 0 ? "; \(tasks) is negative" : "")) }
        if !(1...35).contains(fib) { throw ValidationError("--fib must be between 1 and 35") }
    }

    func run() async throws {
        let runtime = try await python.runtime()
        let count = workers ?? SystemInfo.cpuCount
        printLine("Python \(runtime.version): \(tasks) × fib(\(fib)) in pure Python, \(count) workers, \(SystemInfo.cpuCount) CPUs")
        let report = try await failing {
            try await Subinterpreters.Demo.run(workers: count, tasks: tasks, fibonacci: fib, runtime: runtime)
        }
        let base = report.oneInterpreter.seconds
        func row(_ label: String, _ time: Duration, _ note: String) {
            let speedup = base / time.seconds
            printLine(label.padding(toLength: 34, withPad: " ", startingAt: 0)
                + String(format: "%7.2f s   %5.2f×  %@", time.seconds, speedup, note))
        }
        row("1 interpreter", report.oneInterpreter, "")
        row("\(count) interpreters (one GIL each)", report.manyInterpreters, "")
        row("\(count) threads in 1 interpreter", report.manyThreads, "(they share one GIL)")
        var footer = String(format: "creating an interpreter took %.1f ms", report.creation.seconds * 1000)
        if let bytes = report.residentBytesPerInterpreter {
            footer += String(format: "; each idle one adds about %.1f MiB", Double(bytes) / 1_048_576)
        }
        printLine(footer)
        _ = runtime.finalize()
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
