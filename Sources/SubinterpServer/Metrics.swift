import NIOCore
import Subinterpreters
import Synchronization

/// Request counters and a latency histogram, exposed in Prometheus' text format.
final class Metrics: Sendable {
    static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private let state = Mutex<(byStatus: [Int: Int], counts: [Int], sum: Double, total: Int)>(([:], Array(repeating: 0, count: 13), 0, 0))

    func record(status: Int, elapsed: Duration) {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        state.withLock { state in
            state.byStatus[status, default: 0] += 1
            if let bucket = Self.buckets.firstIndex(where: { seconds <= $0 }) { state.counts[bucket] += 1 }
            state.sum += seconds
            state.total += 1
        }
    }

    func exposition(busyWorkers: Int, queued: Int, workers: Int) -> String {
        let snapshot = state.withLock { $0 }
        var text = "# HELP subinterp_requests_total Requests answered, by status code.\n# TYPE subinterp_requests_total counter\n"
        for (status, count) in snapshot.byStatus.sorted(by: { $0.key < $1.key }) {
            text += "subinterp_requests_total{status=\"\(status)\"} \(count)\n"
        }
        text += "# HELP subinterp_request_duration_seconds Time from a complete request to its last response byte.\n"
        text += "# TYPE subinterp_request_duration_seconds histogram\n"
        var cumulative = 0
        for (bucket, count) in zip(Self.buckets, snapshot.counts) {
            cumulative += count
            text += "subinterp_request_duration_seconds_bucket{le=\"\(bucket)\"} \(cumulative)\n"
        }
        text += "subinterp_request_duration_seconds_bucket{le=\"+Inf\"} \(snapshot.total)\n"
        text += "subinterp_request_duration_seconds_sum \(snapshot.sum)\nsubinterp_request_duration_seconds_count \(snapshot.total)\n"
        text += "# HELP subinterp_busy_workers Workers running a request now.\n# TYPE subinterp_busy_workers gauge\nsubinterp_busy_workers \(busyWorkers)\n"
        text += "# HELP subinterp_queue_depth Requests waiting for a free worker.\n# TYPE subinterp_queue_depth gauge\nsubinterp_queue_depth \(queued)\n"
        text += "# HELP subinterp_workers Worker interpreters.\n# TYPE subinterp_workers gauge\nsubinterp_workers \(workers)\n"
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
        var head = HTTPResponseHead.server(status: 200, reason: "OK")
        try! head.add(name: "Content-Type", value: "text/plain; version=0.0.4")
        exchange.send(head: head, body: ByteBuffer(string: text), end: true)
    }
}
