import ArgumentParser
import Foundation
import Subinterpreters

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subinterp-bench", abstract: "Benchmarks of Subinterpreters, written as JSON rows for Benchmarks/report.py.",
        subcommands: [PoolBench.self, ChannelBench.self])
}

/// One measurement, in the row format the report reads.
struct Row: Encodable {
    var suite: String
    var workload: String
    var runner = "subinterp InterpreterPool"

    var value: Double
    var unit: String
    var speedup: Double?
    var note: String?
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

func write(_ rows: [Row], to path: String?) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try encoder.encode(rows)
    if let path {
        try data.write(to: URL(fileURLWithPath: path))
    } else {
        FileHandle.standardOutput.write(data)
    }
}

func log(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
