import CoreMetrics
import NIOCore
import Subinterpreters
import Synchronization

/// Request counters and a latency histogram, exposed in Prometheus' text format by the metrics
/// endpoint, and reported through swift-metrics too (`subinterp_requests_total` with a
/// `status` dimension, the `subinterp_request_duration` timer), so a program that embeds the
/// server and bootstraps a `MetricsSystem` gets them in its own backend.
///
/// The endpoint's own copy is kept here rather than read back from a swift-metrics backend: a
/// supervisor re-exposes the counters of its worker processes, which reach it as snapshots
/// over their control channels, and a snapshot (not an instrumentation point) is what it sums
/// and labels per process.
final class Metrics: Sendable {
    static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private struct State {
        var snapshot = MetricsSnapshot()
        /// swift-metrics counters by status, made once each.
        var counters: [Int: CoreMetrics.Counter] = [:]
    }
    private let state = Mutex(State())
    private let duration = CoreMetrics.Timer(label: "subinterp_request_duration")

    func record(status: Int, elapsed: Duration) {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let counter = state.withLock { state -> CoreMetrics.Counter in
            state.snapshot.byStatus[status, default: 0] += 1
            if let bucket = Self.buckets.firstIndex(where: { seconds <= $0 }) { state.snapshot.counts[bucket] += 1 }
            state.snapshot.sum += seconds
            state.snapshot.total += 1
            if let counter = state.counters[status] { return counter }
            let counter = CoreMetrics.Counter(label: "subinterp_requests_total", dimensions: [("status", String(status))])
            state.counters[status] = counter
            return counter
        }
        counter.increment()
        duration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }

    var snapshot: MetricsSnapshot { state.withLock { $0.snapshot } }

    func exposition(busyWorkers: Int, queued: Int, workers: Int) -> String {
        MetricsExposition.text(
            total: snapshot, busyWorkers: busyWorkers, queued: queued, workers: workers, processes: [])
    }
}

/// The counters of `Metrics` at one moment; what a worker process reports to its supervisor.
struct MetricsSnapshot: Codable, Sendable, Equatable {
    var byStatus: [Int: Int] = [:]
    /// Requests per histogram bucket (`Metrics.buckets`), not cumulative.
    var counts: [Int] = Array(repeating: 0, count: Metrics.buckets.count)
    var sum: Double = 0
    var total = 0

    /// Adds `other`'s counts to these.
    mutating func add(_ other: MetricsSnapshot) {
        for (status, count) in other.byStatus { byStatus[status, default: 0] += count }
        for index in counts.indices where index < other.counts.count { counts[index] += other.counts[index] }
        sum += other.sum
        total += other.total
    }
}

/// One worker process's series, as a supervisor exposes them (label `process`).
struct ProcessSeries: Sendable {
    var process: Int
    var snapshot: MetricsSnapshot
    var busyWorkers: Int
    var queued: Int
    var workers: Int
    var residentBytes: Int?
    var restarts: Int
}

enum MetricsExposition {
    /// The exposition: totals unlabelled, as a single process serves them, then the series of
    /// each worker process (if any) with the label `process`.
    static func text(
        total: MetricsSnapshot, busyWorkers: Int, queued: Int, workers: Int, processes: [ProcessSeries]
    ) -> String {
        var text = "# HELP subinterp_requests_total Requests answered, by status code.\n# TYPE subinterp_requests_total counter\n"
        for (status, count) in total.byStatus.sorted(by: { $0.key < $1.key }) {
            text += "subinterp_requests_total{status=\"\(status)\"} \(count)\n"
        }
        for series in processes {
            for (status, count) in series.snapshot.byStatus.sorted(by: { $0.key < $1.key }) {
                text += "subinterp_requests_total{process=\"\(series.process)\",status=\"\(status)\"} \(count)\n"
            }
        }
        text += "# HELP subinterp_request_duration_seconds Time from a complete request to its last response byte.\n"
        text += "# TYPE subinterp_request_duration_seconds histogram\n"
        text += histogram(total, labels: "")
        for series in processes { text += histogram(series.snapshot, labels: "process=\"\(series.process)\",") }
        text += "# HELP subinterp_busy_workers Workers running a request now.\n# TYPE subinterp_busy_workers gauge\n"
        text += gauge("subinterp_busy_workers", busyWorkers, processes.map { ($0.process, $0.busyWorkers) })
        text += "# HELP subinterp_queue_depth Requests waiting for a free worker.\n# TYPE subinterp_queue_depth gauge\n"
        text += gauge("subinterp_queue_depth", queued, processes.map { ($0.process, $0.queued) })
        text += "# HELP subinterp_workers Workers (interpreters, or worker processes in processes isolation).\n"
        text += "# TYPE subinterp_workers gauge\n"
        text += gauge("subinterp_workers", workers, processes.map { ($0.process, $0.workers) })
        guard !processes.isEmpty else { return text }
        text += "# HELP subinterp_processes Worker processes serving.\n# TYPE subinterp_processes gauge\n"
        text += "subinterp_processes \(processes.count)\n"
        text += "# HELP subinterp_process_restarts_total Worker processes replaced in this slot (crashed, recycled or reloaded).\n"
        text += "# TYPE subinterp_process_restarts_total counter\n"
        for series in processes { text += "subinterp_process_restarts_total{process=\"\(series.process)\"} \(series.restarts)\n" }
        text += "# HELP subinterp_process_resident_memory_bytes Resident memory of each worker process.\n"
        text += "# TYPE subinterp_process_resident_memory_bytes gauge\n"
        for series in processes {
            if let bytes = series.residentBytes {
                text += "subinterp_process_resident_memory_bytes{process=\"\(series.process)\"} \(bytes)\n"
            }
        }
        return text
    }

    private static func histogram(_ snapshot: MetricsSnapshot, labels: String) -> String {
        var text = ""
        var cumulative = 0
        for (bucket, count) in zip(Metrics.buckets, snapshot.counts) {
            cumulative += count
            text += "subinterp_request_duration_seconds_bucket{\(labels)le=\"\(bucket)\"} \(cumulative)\n"
        }
        text += "subinterp_request_duration_seconds_bucket{\(labels)le=\"+Inf\"} \(snapshot.total)\n"
        let selector = labels.isEmpty ? "" : "{\(labels.dropLast())}"
        text += "subinterp_request_duration_seconds_sum\(selector) \(snapshot.sum)\n"
        text += "subinterp_request_duration_seconds_count\(selector) \(snapshot.total)\n"
        return text
    }

    private static func gauge(_ name: String, _ total: Int, _ perProcess: [(Int, Int)]) -> String {
        var text = "\(name) \(total)\n"
        for (process, value) in perProcess { text += "\(name){process=\"\(process)\"} \(value)\n" }
        return text
    }
}

/// The metrics endpoint: answers every request with the metrics, through the same HTTP layer.
struct MetricsApplication: HTTPApplication {
    let metrics: Metrics
    let dispatcher: AppDispatcher
    let workers: Int

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange) {
        let activity = dispatcher.current?.application.activity
        let text = metrics.exposition(busyWorkers: activity?.busy ?? 0, queued: activity?.queued ?? 0, workers: workers)
        MetricsApplication.answer(exchange, text)
    }

    static func answer(_ exchange: HTTPExchange, _ text: String) {
        var head = HTTPResponseHead.server(status: 200, reason: "OK")
        try! head.add(name: "Content-Type", value: "text/plain; version=0.0.4")
        exchange.send(head: head, body: ByteBuffer(string: text), end: true)
    }
}
