import ArgumentParser
import Foundation
import Subinterpreters

struct PoolBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool", abstract: "InterpreterPool: speedup, per-call overhead, start-up, memory.")

    @Option(help: "Where to write the JSON rows (default: stdout).") var json: String?
    @Option(help: "Workers (default: CPU count).") var workers: Int?
    @Option(help: "Trivial calls through map.") var mapCalls = 100_000
    @Option(help: "Trivial calls made one at a time.") var singleCalls = 2_000

    func run() async throws {
        let runtime = try await PythonRuntime.start()
        let workers = self.workers ?? SystemInfo.cpuCount
        let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("peers").path
        let configuration = InterpreterPool.Configuration(workers: workers, setup: "from workloads import fib, noop", path: [peers])
        let clock = ContinuousClock()
        var rows: [Row] = []

        // (d) RSS added per worker: measured first, on a process that has only the runtime.
        let before = SystemInfo.residentBytes() ?? 0
        let pool = try await InterpreterPool(configuration: configuration, runtime: runtime)
        let holds = try (0..<(workers * 2)).map { _ in try pool.submit("workloads.hold", arguments: [0.05]) }
        for hold in holds { _ = try await hold.value }
        let perWorker = Double((SystemInfo.residentBytes() ?? 0) - before) / Double(workers) / 1_048_576
        rows.append(Row(suite: "pool", workload: "rss-per-worker", value: perWorker, unit: "MiB"))
        log(String(format: "rss per worker: %.1f MiB", perWorker))

        // (a) 64 × fib(24): serial in one worker, then spread over the pool.
        let inputs = Array(repeating: PythonValue(24), count: 64)
        var serial: [Double] = []
        var parallel: [Double] = []
        for _ in 0..<7 {
            serial.append(try await clock.measure {
                _ = try await pool.withWorker { python in
                    try python.exec("for _ in range(64): fib(24)")
                }
            }.seconds)
            parallel.append(try await clock.measure {
                for try await _ in pool.map("fib", inputs, chunkSize: .fixed(1)) {}
            }.seconds)
        }
        let speedup = median(serial) / median(parallel)
        rows.append(Row(suite: "pool", workload: "fib24x64", value: median(parallel), unit: "s", speedup: speedup,
                        note: String(format: "median of 7 (min %.3f s); serial in one interpreter, same runs interleaved: median %.3f s, min %.3f s",
                                     parallel.min()!, median(serial), serial.min()!)))
        log(String(format: "fib24x64: %.3f s (serial %.3f s, %.2fx)", median(parallel), median(serial), speedup))

        // (b) trivial calls: through map, and one awaited call at a time.
        let trivial = (0..<mapCalls).map { PythonValue($0) }
        var mapTimes: [Double] = []
        for _ in 0..<5 {
            mapTimes.append(try await clock.measure {
                for try await _ in pool.map("noop", trivial) {}
            }.seconds)
        }
        let mapPerCall = median(mapTimes) / Double(mapCalls) * 1e6
        rows.append(Row(suite: "pool", workload: "map-trivial", value: mapPerCall, unit: "us/call", note: "adaptive chunks"))
        log(String(format: "map: %.2f µs/call", mapPerCall))
        var callTimes: [Double] = []
        for _ in 0..<5 {
            callTimes.append(try await clock.measure {
                for i in 0..<singleCalls { _ = try await pool.call("noop", PythonValue(i)) }
            }.seconds)
        }
        let callPerCall = median(callTimes) / Double(singleCalls) * 1e6
        rows.append(Row(suite: "pool", workload: "call-trivial", value: callPerCall, unit: "us/call"))
        log(String(format: "call: %.2f µs/call", callPerCall))
        await pool.shutdown()

        // (c) pool start to first result.
        var starts: [Double] = []
        for _ in 0..<5 {
            let start = clock.now
            let fresh = try await InterpreterPool(configuration: configuration, runtime: runtime)
            _ = try await fresh.call("noop", 1)
            starts.append((clock.now - start).seconds * 1000)
            await fresh.shutdown()
        }
        rows.append(Row(suite: "pool", workload: "start-to-first", value: median(starts), unit: "ms"))
        log(String(format: "start to first result: %.1f ms", median(starts)))

        try write(rows, to: json)
    }
}
