import ArgumentParser
import Foundation
import Subinterpreters

struct ChannelBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "channels", abstract: "subinterp.Queue round trip and throughput; SharedBuffer hand-off.")

    @Option(help: "Where to write the JSON rows (default: stdout).") var json: String?
    @Option(help: "Round trips per run.") var roundTrips = 20_000
    @Option(help: "Messages per throughput run.") var messages = 200_000

    static let code = """
        import subinterp, time
        def echo(count):
            ping, pong = subinterp.queue("bench-ping"), subinterp.queue("bench-pong")
            for _ in range(count):
                pong.put(ping.get())
        def pinger(count):
            ping, pong = subinterp.queue("bench-ping"), subinterp.queue("bench-pong")
            start = time.perf_counter()
            for i in range(count):
                ping.put(i)
                pong.get()
            return (time.perf_counter() - start) / count
        def produce(count):
            q = subinterp.queue("bench-stream")
            start = time.perf_counter()
            for i in range(count):
                q.put(i)
            return start
        def consume(count):
            q = subinterp.queue("bench-stream")
            for _ in range(count):
                q.get()
            return time.perf_counter()
        def send_buffer(size):
            buf = subinterp.SharedBuffer(size)
            buf.view[-1] = 1
            subinterp.queue("bench-buffer").put((time.perf_counter(), buf))
        def receive_buffer():
            sent, buf = subinterp.queue("bench-buffer").get()
            last = buf.view[-1]
            return (time.perf_counter() - sent, last)
        """

    func run() async throws {
        let runtime = try await PythonRuntime.start()
        let a = try await Interpreter(runtime: runtime)
        let b = try await Interpreter(runtime: runtime)
        try await a.exec(Self.code)
        try await b.exec(Self.code)
        var rows: [Row] = []

        var trips: [Double] = []
        for _ in 0..<5 {
            async let echo = b.call("echo", PythonValue(roundTrips))
            let perTrip = try await a.call("pinger", PythonValue(roundTrips))
            _ = try await echo
            trips.append(perTrip.doubleValue! * 1e6)
        }
        rows.append(Row(suite: "channels", workload: "roundtrip", runner: "subinterp.Queue", value: median(trips), unit: "us",
                        note: "\(roundTrips) round trips between two interpreters; median of 5"))
        log(String(format: "round trip: %.2f µs", median(trips)))

        var rates: [Double] = []
        for _ in 0..<5 {
            async let end = b.call("consume", PythonValue(messages))
            let start = try await a.call("produce", PythonValue(messages)).doubleValue!
            let finish = try await end.doubleValue!
            rates.append(Double(messages) / (finish - start))
        }
        rows.append(Row(suite: "channels", workload: "throughput", runner: "subinterp.Queue", value: median(rates), unit: "msg/s",
                        note: "\(messages) small ints one way; median of 5"))
        log(String(format: "throughput: %.0f msg/s", median(rates)))

        var handoffs: [Double] = []
        for _ in 0..<5 {
            async let received = b.call("receive_buffer")
            _ = try await a.call("send_buffer", PythonValue(100_000_000))
            let result = try await received
            handoffs.append(result.arrayValue![0].doubleValue! * 1000)
        }
        rows.append(Row(suite: "channels", workload: "handoff-100MB", runner: "subinterp.SharedBuffer", value: median(handoffs), unit: "ms",
                        note: "100 MB SharedBuffer through a queue, receiver reads its last byte; median of 5"))
        log(String(format: "100 MB hand-off: %.3f ms", median(handoffs)))

        await a.close()
        await b.close()
        try write(rows, to: json)
    }
}
