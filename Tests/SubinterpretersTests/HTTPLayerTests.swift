import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import SubinterpServer
import Subinterpreters

/// The HTTP layer in memory: the parser over the corpus (whole and byte by byte), response
/// heads, and the connection handler's seams (streamed bodies, back-pressure, disconnects,
/// upgrades) on an `EmbeddedChannel`.
@Suite struct HTTPParserTests {
    struct Parsed {
        var requests: [(head: HTTPRequestHead, body: [UInt8])] = []
        var error: HTTPParseError?
        /// A request was started and not finished when the bytes ran out.
        var incomplete = false
    }

    static func parse(_ bytes: [UInt8], byteByByte: Bool, limits: HTTPParserLimits = .init()) -> Parsed {
        var parser = HTTPRequestParser(limits: limits)
        var buffer = ByteBuffer()
        var parsed = Parsed()
        var head: HTTPRequestHead?
        var body: [UInt8] = []
        let pieces = byteByByte ? bytes.map { [$0] } : [bytes]
        feeding: for piece in pieces {
            buffer.writeBytes(piece)
            while let event = parser.next(&buffer) {
                switch event {
                case .head(let next):
                    head = next
                    body = []
                case .body(let bytes):
                    body += Array(bytes.readableBytesView)
                case .end:
                    parsed.requests.append((head!, body))
                    head = nil
                case .error(let error):
                    parsed.error = error
                    break feeding
                }
            }
        }
        parsed.incomplete = head != nil || parser.isInsideRequest
        return parsed
    }

    static var corpusLimits: HTTPParserLimits {
        var limits = HTTPParserLimits()
        limits.maxBody = CorpusCase.maxBody
        return limits
    }

    @Test(arguments: CorpusCase.all)
    func corpusCase(_ testCase: CorpusCase) {
        for byteByByte in [false, true] {
            let parsed = Self.parse(testCase.bytes, byteByByte: byteByByte, limits: Self.corpusLimits)
            let comment = Comment(rawValue: "\(testCase.name)\(byteByByte ? ", byte by byte" : "")")
            switch testCase.outcome {
            case .accepted(let requests):
                #expect(parsed.error == nil, comment)
                #expect(!parsed.incomplete, comment)
                #expect(parsed.requests.count == requests.count, comment)
                for (request, expected) in zip(parsed.requests, requests) { Self.expect(request, matches: expected, comment) }
                #expect(parsed.requests.last?.head.keepAlive == !testCase.closes, comment)
            case .refused(let status, let after):
                #expect(parsed.error?.status == status, comment)
                #expect(parsed.requests.count == after.count, comment)
                for (request, expected) in zip(parsed.requests, after) { Self.expect(request, matches: expected, comment) }
            }
        }
    }

    static func expect(_ request: (head: HTTPRequestHead, body: [UInt8]), matches expected: CorpusCase.Seen, _ comment: Comment) {
        var body = ByteBuffer()
        body.writeBytes(request.body)
        let items = WSGIEnvironment.items(for: HTTPRequest(
            head: request.head, body: body, bodyStream: nil,
            connection: HTTPConnectionInfo(localHost: "127.0.0.1", localPort: 8000, remoteHost: "127.0.0.1", remotePort: 5000)))
        var environ: [String: String] = [:]
        for item in items {
            if case .string(let key) = item.key, case .string(let value) = item.value { environ[key] = value }
        }
        #expect(environ["REQUEST_METHOD"] == expected.method, comment)
        #expect(environ["PATH_INFO"] == expected.path, comment)
        #expect(environ["QUERY_STRING"] == expected.query, comment)
        #expect(environ["SERVER_PROTOCOL"] == expected.version, comment)
        #expect(environ.filter { $0.key.hasPrefix("HTTP_") || $0.key == "CONTENT_TYPE" || $0.key == "CONTENT_LENGTH" } == expected.environ, comment)
        #expect(request.body == expected.body.unicodeScalars.map { UInt8($0.value) }, comment)
    }

    @Test func aPipelinedRequestStaysInTheBufferUntilAsked() {
        var parser = HTTPRequestParser(limits: .init())
        var buffer = ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: x\r\nX-A:  1 \r\n\r\nGET /b HTTP/1.1\r\nHo")
        guard case .head(let head) = parser.next(&buffer) else {
            Issue.record("no head")
            return
        }
        #expect(head.methodString == "GET")
        #expect(head.targetString == "/a")
        #expect(head.field("x-a") == "1")
        #expect(head.field("host") == "x")
        guard case .end = parser.next(&buffer) else {
            Issue.record("no end")
            return
        }
        let pending = parser.next(&buffer)
        #expect(pending.map { _ in false } ?? true)
        #expect(buffer.readableBytes == "GET /b HTTP/1.1\r\nHo".utf8.count)
        #expect(parser.isInsideRequest)
        buffer.writeString("st: y\r\n\r\n")
        guard case .head(let second) = parser.next(&buffer) else {
            Issue.record("no second head")
            return
        }
        #expect(second.targetString == "/b")
        #expect(second.field("host") == "y")
    }

    @Test func chunkSizeLinesAndExtensions() {
        func size(_ line: String) -> Int? {
            let bytes = Array(line.utf8)
            return try? bytes.withUnsafeBytes { HTTPRequestParser.parseChunkSizeLine($0) }.get()
        }
        #expect(size("5") == 5)
        #expect(size("ff") == 255)
        #expect(size("5 ; a = \"b c\" ;d") == 5)
        #expect(size("5;a=b;c") == 5)
        #expect(size("fffffffffffffff") == 0xfffffffffffffff)
        #expect(size("ffffffffffffffff") == nil)
        #expect(size(";a") == nil)
        #expect(size("5;") == nil)
        #expect(size("5;a=") == nil)
        #expect(size("5;a=\"unterminated") == nil)
        #expect(size("5 5") == nil)
    }
}

@Suite struct HTTPResponseHeadTests {
    static func text(_ head: HTTPResponseHead) -> String { String(buffer: head.buffer) }

    @Test func framingFollowsTheAppTheRequestAndTheBody() throws {
        // The app's Content-Length is kept.
        var head = try HTTPResponseHead(status: 200, reason: "OK")
        try head.add(name: "Content-Length", value: "5")
        var result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: nil)
        #expect(result.framing == .length(5) && result.keepAlive)
        #expect(Self.text(head).hasPrefix("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: "))
        #expect(Self.text(head).hasSuffix("GMT\r\n\r\n"))

        // A whole body: its length is sent, nothing is chunked.
        head = try HTTPResponseHead(status: 200, reason: "OK")
        result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: 11)
        #expect(result.framing == .length(11))
        #expect(Self.text(head).contains("Content-Length: 11\r\n"))

        // A stream: chunked in HTTP/1.1, until close in HTTP/1.0.
        head = try HTTPResponseHead(status: 200, reason: "OK")
        result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: nil)
        #expect(result.framing == .chunked && result.keepAlive)
        #expect(Self.text(head).contains("Transfer-Encoding: chunked\r\n"))
        head = try HTTPResponseHead(status: 200, reason: "OK")
        result = head.finish(keepAlive: true, explicitKeepAlive: true, isHEAD: false, http10: true, completeBody: nil)
        #expect(result.framing == .untilClose && !result.keepAlive)
        #expect(Self.text(head).hasSuffix("Connection: close\r\n\r\n"))

        // HEAD: the length a GET would have, no body.
        head = try HTTPResponseHead(status: 200, reason: "OK")
        result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: true, http10: false, completeBody: 5)
        #expect(result.framing == .none)
        #expect(Self.text(head).contains("Content-Length: 5\r\n"))

        // 204 and 304 carry no body and no framing field.
        for status in [204, 304] {
            head = try HTTPResponseHead(status: status, reason: "X")
            result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: 0)
            #expect(result.framing == .none)
            #expect(!Self.text(head).contains("Content-Length") && !Self.text(head).contains("Transfer-Encoding"))
        }

        // HTTP/1.0 keep-alive is echoed.
        head = try HTTPResponseHead(status: 200, reason: "OK")
        result = head.finish(keepAlive: true, explicitKeepAlive: true, isHEAD: false, http10: true, completeBody: 0)
        #expect(result.keepAlive)
        #expect(Self.text(head).hasSuffix("Connection: keep-alive\r\n\r\n"))
    }

    @Test func theAppsConnectionAndFramingFieldsAreReadNotCopied() throws {
        var head = try HTTPResponseHead(status: 200, reason: "OK")
        try head.add(name: "Connection", value: "Close")
        try head.add(name: "Keep-Alive", value: "timeout=5")
        try head.add(name: "Transfer-Encoding", value: "chunked")
        try head.add(name: "Date", value: "Thu, 01 Jan 1970 00:00:00 GMT")
        let result = head.finish(keepAlive: true, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: nil)
        #expect(!result.keepAlive && result.framing == .chunked)
        #expect(Self.text(head) == "HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    }

    @Test func headersThatCannotBeSentAreErrorsNotDropped() throws {
        var head = try HTTPResponseHead(status: 200, reason: "OK")
        let before = Self.text(head)
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "X-Bad", value: "a\r\nSet-Cookie: x=1") }
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "X-Bad", value: "a\u{0}b") }
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "X-Bad", value: "snow \u{2603}") }
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "Bad Name", value: "v") }
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "Transfer-Encoding", value: "gzip") }
        #expect(throws: HTTPResponseHeaderError.self) { try head.add(name: "Content-Length", value: "5, 5") }
        #expect(throws: HTTPResponseHeaderError.self) { try HTTPResponseHead(status: 200, reason: "OK\r\nX: y") }
        #expect(Self.text(head) == before)
        // Latin-1 text and tabs are fine.
        try head.add(name: "X-Latin", value: "caf\u{E9}\tok")
        #expect(Array(head.buffer.readableBytesView).suffix(9) == Array("caf".utf8) + [0xE9, 0x09] + Array("ok\r\n".utf8))
    }
}

/// An application for handler tests: records each request and its exchange.
final class RecordingApplication: HTTPApplication {
    let delivery: HTTPBodyDelivery
    let received = Mutex<[(HTTPRequest, HTTPExchange)]>([])

    init(delivery: HTTPBodyDelivery = .collect) {
        self.delivery = delivery
    }

    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery { delivery }

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange) {
        received.withLock { $0.append((request, exchange)) }
    }

    var count: Int { received.withLock { $0.count } }
    func exchange(_ index: Int) -> HTTPExchange { received.withLock { $0[index].1 } }
    func request(_ index: Int) -> HTTPRequest { received.withLock { $0[index].0 } }
}

/// Counts the `read()` calls that reach the head of the pipeline: each one asks the socket for bytes.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

@Suite struct HTTPConnectionHandlerTests {
    struct Harness {
        let channel: EmbeddedChannel
        let app: RecordingApplication
        let reads: ReadCounter

        init(delivery: HTTPBodyDelivery = .collect, limits: HTTPLimits = HTTPLimits()) throws {
            app = RecordingApplication(delivery: delivery)
            reads = ReadCounter()
            channel = EmbeddedChannel()
            let context = HTTPServerContext(
                application: app, limits: limits, bodyBudget: HTTPBodyBudget(limit: 1 << 20), logger: Logger(label: "test"))
            try channel.pipeline.syncOperations.addHandler(reads)
            try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(server: context))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
            channel.embeddedEventLoop.run()
        }

        /// Everything written so far, as text.
        func written() throws -> String {
            channel.embeddedEventLoop.run()
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }
    }

    static func okHead() -> HTTPResponseHead {
        var head = HTTPResponseHead.server(status: 200, reason: "OK")
        try! head.add(name: "X-Test", value: "1")
        return head
    }

    @Test func aWholeResponseIsOneWriteWithItsLength() throws {
        let harness = try Harness()
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(harness.app.count == 1)
        harness.app.exchange(0).send(head: Self.okHead(), body: ByteBuffer(string: "hello"), end: true)
        harness.channel.embeddedEventLoop.run()
        let first = try #require(try harness.channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: first).hasPrefix("HTTP/1.1 200 OK\r\nX-Test: 1\r\nDate: "))
        #expect(String(buffer: first).hasSuffix("Content-Length: 5\r\n\r\nhello"))
        #expect(try harness.channel.readOutbound(as: ByteBuffer.self) == nil)
    }

    @Test func pipelinedRequestsWaitForTheResponseBeforeThem() throws {
        let harness = try Harness()
        try harness.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(harness.app.count == 1)
        harness.app.exchange(0).send(head: Self.okHead(), body: nil, end: true)
        harness.channel.embeddedEventLoop.run()
        #expect(harness.app.count == 2)
        #expect(harness.app.request(1).head.targetString == "/2")
        #expect(try harness.written().components(separatedBy: "HTTP/1.1 200").count == 2)
    }

    @Test func sendersWaitForTheirPreviousSendAndForWritability() throws {
        let harness = try Harness()
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let exchange = harness.app.exchange(0)
        func succeeded(_ future: EventLoopFuture<Void>) -> Bool {
            let done = Mutex(false)
            future.whenSuccess { done.withLock { $0 = true } }
            return done.withLock { $0 }
        }
        // A few sends may be in transit while the sender makes the next; one more waits for them.
        guard case .ready = exchange.send(head: Self.okHead(), body: ByteBuffer(string: "a")) else {
            Issue.record("expected .ready")
            return
        }
        for _ in 1..<HTTPExchange.maxInTransit {
            guard case .ready = exchange.send(body: ByteBuffer(string: "a")) else {
                Issue.record("expected .ready")
                return
            }
        }
        guard case .wait(let previous) = exchange.send(body: ByteBuffer(string: "b")) else {
            Issue.record("expected .wait")
            return
        }
        #expect(!succeeded(previous))
        harness.channel.embeddedEventLoop.run()
        #expect(succeeded(previous))
        // Above the high water mark, senders wait until the channel is writable again.
        harness.channel.isWritable = false
        harness.channel.pipeline.fireChannelWritabilityChanged()
        guard case .wait(let writable) = exchange.send(body: ByteBuffer(string: "c")) else {
            Issue.record("expected .wait")
            return
        }
        harness.channel.embeddedEventLoop.run()
        #expect(!succeeded(writable))
        harness.channel.isWritable = true
        harness.channel.pipeline.fireChannelWritabilityChanged()
        #expect(succeeded(writable))
        exchange.send(body: ByteBuffer(string: "d"), end: true)
        #expect(try harness.written().hasSuffix("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n0\r\n\r\n"))
        #expect(HTTPExchange.maxInTransit >= 1)
    }

    @Test func aDisconnectFreesWaitersAndTellsTheApplication() throws {
        let harness = try Harness()
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let exchange = harness.app.exchange(0)
        let notified = Mutex(false)
        exchange.onClose { notified.withLock { $0 = true } }
        harness.channel.isWritable = false
        harness.channel.pipeline.fireChannelWritabilityChanged()
        exchange.send(head: Self.okHead(), body: ByteBuffer(string: "a"))
        guard case .wait(let writable) = exchange.send(body: ByteBuffer(string: "b")) else {
            Issue.record("expected .wait")
            return
        }
        let failed = Mutex(false)
        writable.whenFailure { _ in failed.withLock { $0 = true } }
        harness.channel.embeddedEventLoop.run()
        try harness.channel.close().wait()
        harness.channel.embeddedEventLoop.run()
        #expect(failed.withLock { $0 })
        #expect(notified.withLock { $0 })
        #expect(exchange.isClosed)
        guard case .closed = exchange.send(body: ByteBuffer(string: "c")) else {
            Issue.record("expected .closed")
            return
        }
    }

    @Test func aStreamedBodyIsReadOnlyAsFastAsItIsConsumed() throws {
        let harness = try Harness(delivery: .stream)
        try harness.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        #expect(harness.app.count == 1)
        let stream = try #require(harness.app.request(0).bodyStream)
        // Feed more than the stream buffers (64 KiB): the handler stops asking for reads.
        for _ in 0..<3 { try harness.send(String(repeating: "a", count: 40_000)) }
        let readsWhileFull = harness.reads.reads
        harness.channel.read()
        harness.channel.read()
        #expect(harness.reads.reads == readsWhileFull)
        // Consuming makes room: the held-back read goes out.
        func take() -> ByteBuffer?? {
            let result = Mutex<ByteBuffer??>(.none)
            stream.read().whenSuccess { piece in result.withLock { $0 = .some(piece) } }
            harness.channel.embeddedEventLoop.run()
            return result.withLock { $0 }
        }
        var received = 0
        while received < 120_000, case .some(.some(let piece)) = take() { received += piece.readableBytes }
        #expect(received == 120_000)
        #expect(harness.reads.reads > readsWhileFull)
        try harness.send(String(repeating: "a", count: 80_000))
        while case .some(.some(let piece)) = take() { received += piece.readableBytes }
        #expect(received == 200_000)
        // The end of the body: nil.
        #expect(take() == .some(.none))
    }

    @Test func aBatchedResponseIsNeverOvertakenByItsOwnFailure() throws {
        let harness = try Harness()
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let exchange = harness.app.exchange(0)
        let batch = HTTPSendBatch()
        // The head and a first chunk wait in the batch; the app then fails (a 500 if no head
        // went out, else the connection closes). The failure must come after the batch.
        exchange.send(head: Self.okHead(), body: ByteBuffer(string: "partial"), batch: batch)
        exchange.fail(status: 500, reason: "Internal Server Error")
        #expect(try harness.written() == "")
        batch.flush()
        let written = try harness.written()
        #expect(written.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(written)")
        #expect(written.hasSuffix("7\r\npartial\r\n"), "\(written)")
        #expect(!written.contains("500"))
        #expect(!harness.channel.isActive)
    }

    @Test func sendsInABatchGoOutTogetherInOrder() throws {
        let harness = try Harness()
        try harness.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        let exchange = harness.app.exchange(0)
        let batch = HTTPSendBatch()
        exchange.send(head: Self.okHead(), body: ByteBuffer(string: "a"), batch: batch)
        exchange.send(body: ByteBuffer(string: "b"), batch: batch)
        exchange.send(body: ByteBuffer(string: "c"), end: true, batch: batch)
        #expect(try harness.written() == "")
        batch.flush()
        #expect(try harness.written().hasSuffix("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"))
    }

    @Test func expectContinueForAStreamedBodyWaitsUntilTheBodyIsAskedFor() throws {
        let harness = try Harness(delivery: .stream)
        try harness.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        #expect(harness.app.count == 1)
        #expect(try harness.written() == "")
        let stream = try #require(harness.app.request(0).bodyStream)
        let got = Mutex<(ByteBuffer, Bool)?>(nil)
        stream.readAvailable().whenSuccess { piece in got.withLock { $0 = piece } }
        #expect(try harness.written() == "HTTP/1.1 100 Continue\r\n\r\n")
        // The piece and the end that arrive together are given together.
        try harness.send("hello")
        let taken = try #require(got.withLock { $0 })
        #expect(String(buffer: taken.0) == "hello" && taken.1)

        // An app that answers without asking for the body: no 100, and the connection closes.
        let refusing = try Harness(delivery: .stream)
        try refusing.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        refusing.app.exchange(0).send(head: Self.okHead(), body: ByteBuffer(string: "no"), end: true)
        let written = try refusing.written()
        #expect(written.hasPrefix("HTTP/1.1 200 OK\r\n") && written.contains("Connection: close"), "\(written)")
    }

    @Test func aClientThatStopsSendingIsToldToTheAppWhileItsResponseStillGoesOut() throws {
        let harness = try Harness()
        try harness.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let exchange = harness.app.exchange(0)
        let told = Mutex(0)
        exchange.onInputClosed { told.withLock { $0 += 1 } }
        harness.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        harness.channel.embeddedEventLoop.run()
        #expect(told.withLock { $0 } == 1)
        #expect(!exchange.isClosed)
        exchange.send(head: Self.okHead(), body: ByteBuffer(string: "still"), end: true)
        #expect(try harness.written().hasSuffix("still"))
    }

    /// What a close callback holds (an ASGI request, which holds its exchange in turn) is let go
    /// once the response is written, or the connection switched protocols: no cycle is left.
    @Test func anExchangeLetsGoOfItsCallbacksOnceItsResponseIsDone() throws {
        /// Like an ASGI request: its close callback holds it, and it holds the exchange.
        final class Holder: Sendable {
            let exchange: HTTPExchange
            init(_ exchange: HTTPExchange) { self.exchange = exchange }
        }
        final class Weak: @unchecked Sendable {
            // Only read after the callbacks ran or were dropped, on this test's thread.
            weak var holder: Holder?
        }
        for upgrade in [false, true] {
            let harness = try Harness()
            try harness.send(upgrade ? "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" : "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let weak = Weak()
            do {
                let exchange = harness.app.exchange(0)
                let holder = Holder(exchange)
                weak.holder = holder
                exchange.onClose { _ = holder }
                exchange.onInputClosed { _ = holder }
                if upgrade {
                    var head = HTTPResponseHead.server(status: 101, reason: "Switching Protocols")
                    try head.add(name: "Upgrade", value: "echo")
                    _ = exchange.upgrade(head: head) { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
                    }
                } else {
                    exchange.send(head: Self.okHead(), body: ByteBuffer(string: "done"), end: true)
                }
                _ = try harness.written()
            }
            harness.app.received.withLock { $0.removeAll() }
            #expect(weak.holder == nil, upgrade ? "after an upgrade" : "after a response")
        }
    }

    @Test func anUpgradeHandsTheConnectionToAnotherProtocol() throws {
        let harness = try Harness()
        try harness.send("GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly bytes")
        #expect(harness.app.request(0).head.wantsUpgrade)
        var head = HTTPResponseHead.server(status: 101, reason: "Switching Protocols")
        try head.add(name: "Upgrade", value: "echo")
        let upgraded = harness.app.exchange(0).upgrade(head: head) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }
        harness.channel.embeddedEventLoop.run()
        try upgraded.wait()
        try harness.send(" and later")
        let written = try harness.written()
        #expect(written.hasPrefix("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n"), "\(written)")
        #expect(written.hasSuffix("\r\n\r\nearly bytes and later"), "\(written)")
        #expect(throws: (any Error).self) { try harness.channel.pipeline.syncOperations.handler(type: HTTPConnectionHandler.self) }
    }
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}
