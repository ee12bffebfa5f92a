import ArgumentParser
import Foundation
import Subinterpreters

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the versions and paths in use.")

    @OptionGroup var python: PythonOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        let runtime = try await python.runtime()
        let installation = runtime.installation
        let rows: [(String, String)] = [
            ("subinterp", SystemInfo.version),
            ("python", runtime.version),
            ("executable", installation.executable),
            ("libpython", installation.library),
            ("virtualenv", installation.virtualEnvironment ?? "-"),
            ("cpus", "\(SystemInfo.cpuCount)"),
        ]
        if json {
            var object = Dictionary(uniqueKeysWithValues: rows.map { ($0.0, $0.1 as Any) })
            object["cpus"] = SystemInfo.cpuCount
            object["virtualenv"] = installation.virtualEnvironment ?? NSNull()
            printLine(jsonLine(object))
        } else {
            for (name, value) in rows { printLine(name.padding(toLength: 12, withPad: " ", startingAt: 0) + value) }
        }
    }
}
