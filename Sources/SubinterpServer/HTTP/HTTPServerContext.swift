import Logging
import NIOCore
import Synchronization

/// Limits and timeouts of every connection.
struct HTTPLimits: Sendable {
    var parser = HTTPParserLimits()
    /// A keep-alive connection with no request for this long is closed; so is a client that
    /// sends nothing for this long in the middle of a request (with 408).
    var idleTimeout: TimeAmount = .seconds(5)
    /// The whole of a request (head and body) must arrive within this, from its first byte; else 408.
    var requestReadTimeout: TimeAmount = .seconds(30)
    /// A connection whose client takes less than 64 KiB of a response in this long is dropped.
    var writeTimeout: TimeAmount = .seconds(30)
    /// The channel's write buffer water marks: above `high`, senders wait (back-pressure) until
    /// it drains below `low`. They also bound what a response may leave queued when its worker
    /// is done.
    var writeBufferLow = 256 << 10
    var writeBufferHigh = 1 << 20
    /// While a response is in progress, at most this many bytes of pipelined requests are read
    /// ahead; beyond it the connection stops reading until the response ends.
    var maxReadAhead = 64 << 10
}

/// A process-wide budget for request bodies held in memory. A request reserves its declared
/// length when its head arrives (a chunked body reserves as it arrives) and gives it back when
/// its response ends; a request that does not fit gets 503 with `Retry-After`.
final class HTTPBodyBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    func reserve(_ bytes: Int) -> Bool {
        guard bytes > 0 else { return true }
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + bytes <= limit else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    func release(_ bytes: Int) {
        if bytes > 0 { used.subtract(bytes, ordering: .relaxed) }
    }
}

/// One finished exchange, for metrics and the access log.
struct HTTPExchangeRecord: Sendable {
    var status: Int
    /// Body bytes sent.
    var bytes: Int
    /// From the complete request to its last response byte written.
    var duration: Duration
    /// `METHOD target HTTP/x.y`, when the server asked for it (access log); nil for requests
    /// refused before their head was read.
    var requestLine: String?
    var client: String
}

/// What the connections of one listener share: the application, the limits, the body budget,
/// the draining flag and the reporting of finished exchanges.
final class HTTPServerContext: Sendable {
    let application: any HTTPApplication
    let limits: HTTPLimits
    let bodyBudget: HTTPBodyBudget
    let logger: Logger
    /// Called on the event loop when an exchange ends (answered, refused, or cut short: 499).
    let record: (@Sendable (HTTPExchangeRecord) -> Void)?
    /// Whether `record` wants the request line.
    let recordsRequestLine: Bool
    private let draining = Atomic<Bool>(false)

    init(
        application: any HTTPApplication, limits: HTTPLimits, bodyBudget: HTTPBodyBudget, logger: Logger,
        recordsRequestLine: Bool = false, record: (@Sendable (HTTPExchangeRecord) -> Void)? = nil
    ) {
        self.application = application
        self.limits = limits
        self.bodyBudget = bodyBudget
        self.logger = logger
        self.recordsRequestLine = recordsRequestLine
        self.record = record
    }

    /// Once set, every response says `Connection: close` and idle connections close.
    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func beginDraining() { draining.store(true, ordering: .relaxed) }
}

/// Sent through a connection's pipeline when the server begins a graceful shutdown.
struct HTTPDrainEvent: Sendable {}
