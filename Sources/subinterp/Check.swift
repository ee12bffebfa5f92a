import ArgumentParser
import Foundation
import Subinterpreters

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import each module in a fresh isolated sub-interpreter and say whether it loads.",
        discussion: """
            Prints one line per module: ok, incompatible (an extension module refused to load in a \
            sub-interpreter: it needs multi-phase init and per-interpreter GIL support), or error (the \
            import raised). Exits 0 only if every module is ok.
            """)

    @OptionGroup var python: PythonOptions
    @Flag(help: "Print one JSON object per module.") var json = false
    @Argument(help: "Modules to import, e.g. json flask numpy.") var modules: [String]

    func validate() throws {
        if modules.isEmpty { throw ValidationError("name at least one module, e.g. `subinterp check json`") }
    }

    func run() async throws {
        let runtime = try await python.runtime()
        let results = try await failing { try await ModuleCheck.run(modules, runtime: runtime) }
        let width = min(40, (results.map(\.module.count).max() ?? 0) + 2)
        for result in results {
            switch result.outcome {
            case .ok:
                printLine(json ? jsonLine(["module": result.module, "status": "ok"])
                    : pad(result.module, width) + "ok")
            case .incompatible(let extensionModule, let message):
                printLine(json
                    ? jsonLine(["module": result.module, "status": "incompatible", "extension_module": extensionModule, "message": message])
                    : pad(result.module, width) + "incompatible: \(extensionModule) does not support sub-interpreters (\(message))")
            case .error(let exception):
                printLine(json
                    ? jsonLine(["module": result.module, "status": "error", "type": exception.typeName, "message": exception.message])
                    : pad(result.module, width) + "error: \(exception)")
            }
        }
        if results.contains(where: { $0.outcome != .ok }) { throw ExitCode(1) }
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }
}
