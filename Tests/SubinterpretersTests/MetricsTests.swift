import CoreMetrics
import MetricsTestKit
import Testing

@testable import SubinterpServer

/// The server's request metrics reach a swift-metrics backend that the embedding program
/// bootstraps, besides its own endpoint. (The only test in this process that bootstraps the
/// metrics system, which can be done once.)
@Suite struct MetricsTests {
    @Test func requestsAreCountedThroughSwiftMetrics() throws {
        let backend = TestMetrics()
        MetricsSystem.bootstrap(backend)
        let metrics = Metrics()
        metrics.record(status: 200, elapsed: .milliseconds(3))
        metrics.record(status: 200, elapsed: .milliseconds(5))
        metrics.record(status: 404, elapsed: .milliseconds(1))
        #expect(try backend.expectCounter("subinterp_requests_total", [("status", "200")]).totalValue == 2)
        #expect(try backend.expectCounter("subinterp_requests_total", [("status", "404")]).totalValue == 1)
        #expect(try backend.expectTimer("subinterp_request_duration").values == [3_000_000, 5_000_000, 1_000_000])
        // The endpoint's own copy agrees.
        #expect(metrics.snapshot.byStatus == [200: 2, 404: 1])
    }
}
