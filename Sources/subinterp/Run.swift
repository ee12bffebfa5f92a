import ArgumentParser
import Foundation
import Subinterpreters

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a script as __main__ in N isolated sub-interpreters at once.",
        discussion: """
            Each copy sees sys.argv = [SCRIPT, ARGS...] and can ask `import subinterp; \
            subinterp.worker_index()` (0 to N-1) and `subinterp.worker_count()` (N). Lines printed by \
            different copies never interleave mid-line. Exits non-zero if any copy failed; each \
            failure's traceback is labelled with its index.
            """)

    @OptionGroup var python: PythonOptions
    @Option(name: .short, parsing: .unconditional, help: "How many interpreters run the script.") var n: Int = 1
    @Argument(help: "The Python script.") var script: String
    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script.") var arguments: [String] = []

    func validate() throws {
        if n < 1 { throw ValidationError(n < 0 ? "-n must be at least 1; \(n) is negative" : "-n must be at least 1") }
        if n > 1024 { throw ValidationError("-n must be at most 1024") }
    }

    func run() async throws {
        let runtime = try await python.runtime()
        let outcomes = try await failing {
            try await ScriptRunner.run(script: script, arguments: arguments, count: n, runtime: runtime)
        }
        _ = runtime.finalize()
        let failures = outcomes.filter { $0.status != 0 }
        // Identical failures (a syntax error, say) are printed once, labelled with every index.
        var reports: [(text: String, indices: [Int])] = []
        for outcome in failures {
            guard let error = outcome.error else { continue }
            let text = error.pythonException?.traceback.trimmingCharacters(in: .newlines) ?? error.message
            if let i = reports.firstIndex(where: { $0.text == text }) {
                reports[i].indices.append(outcome.index)
            } else {
                reports.append((text, [outcome.index]))
            }
        }
        for report in reports {
            let label = "[" + report.indices.map(String.init).joined(separator: ",") + "] "
            let lines = report.text.split(separator: "\n", omittingEmptySubsequences: false).map { label + $0 }
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        if !failures.isEmpty {
            if n > 1 {
                let list = failures.map { "\($0.index) (status \($0.status))" }.joined(separator: ", ")
                printError("\(failures.count) of \(n) interpreters failed: \(list)")
            }
            throw ExitCode(failures.count == 1 ? failures[0].status : 1)
        }
    }
}
