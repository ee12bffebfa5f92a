import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import SubinterpServer

/// An app that answers every request at once and is done with it.
private final class InstantApp: LoadedApp {
    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery { .collect }

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange, finished: @escaping @Sendable () -> Void) {
        exchange.send(head: HTTPResponseHead.server(status: 200, reason: "OK"), body: ByteBuffer(string: "ok"), end: true)
        finished()
    }

    var activity: (busy: Int, queued: Int) { (0, 0) }
    func shutdown(cancelPending: Bool) async {}
}

@Suite struct AppDispatcherTests {
    /// What a worker process's dispatcher is told of each request must cost the same at the
    /// ten-thousandth request as at the first. A closure kept in a `Mutex` and read through
    /// `withLock`'s `inout` gained two reabstraction thunks per read: every call went through
    /// all of them, so a worker process slowed down with every request it served and would in
    /// the end overflow its stack. The depth of the stack inside the callback shows it.
    @Test func theRequestObserverCostsTheSameAtEveryRequest() throws {
        let dispatcher = AppDispatcher()
        dispatcher.install(InstantApp())
        let depths = Mutex<[Int]>([])
        dispatcher.observe(started: {}) {
            var marker = 0
            let address = withUnsafeMutablePointer(to: &marker) { Int(bitPattern: $0) }
            depths.withLock { $0.append(address) }
        }
        let channel = EmbeddedChannel()
        let context = HTTPServerContext(
            application: dispatcher, limits: HTTPLimits(), bodyBudget: HTTPBodyBudget(limit: 1 << 20), logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(server: context))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        for _ in 0..<5000 {
            try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            channel.embeddedEventLoop.run()
            while try channel.readOutbound(as: ByteBuffer.self) != nil {}
        }
        let all = depths.withLock { $0 }
        #expect(all.count == 5000)
        // The stack grows down: a deeper call has a lower address.
        let growth = (all.first ?? 0) - (all.min() ?? 0)
        #expect(growth < 4096, "the callback ran \(growth) bytes deeper after \(all.count) requests")
    }
}
