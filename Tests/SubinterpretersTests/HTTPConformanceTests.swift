import Foundation
import Testing

@testable import Subinterpreters

/// The corpus (`HTTPCorpus.swift`) over a real socket: valid requests reach an echo app exactly
/// as sent, invalid ones are refused with the right status and the connection closes, and no
/// request is ever read out of another's body.
@Suite struct HTTPConformanceTests {
    static let probe = "GET /__probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    @Test func everyCorpusRequestGetsTheRightAnswer() throws {
        #expect(CorpusCase.all.count >= 60)
        let server = try LiveServer(["--workers", "1", "--max-body", String(CorpusCase.maxBody)], app: "liveapp:inspect")
        defer { server.stop() }
        for testCase in CorpusCase.all {
            try check(testCase, port: server.port)
        }
        // Nothing smuggled reached the app, and the probe sent behind each request was answered
        // only where the connection was to stay open.
        let seen = try #require(try RawHTTP.get(server.port, "/__seen"))
        let paths = try #require(try JSONSerialization.jsonObject(with: Data(seen.body)) as? [String])
        #expect(!paths.contains("/smuggled"), "\(paths)")
        #expect(paths.filter { $0 == "/__probe" }.count == CorpusCase.accepted.filter { !$0.closes }.count)
    }

    private func check(_ testCase: CorpusCase, port: Int) throws {
        let comment = Comment(rawValue: testCase.name)
        let client = try RawHTTP(port: port, timeout: 10)
        // A probe behind every request: answered only when the connection stays open.
        client.send(testCase.bytes + Array(Self.probe.utf8))
        switch testCase.outcome {
        case .accepted(let requests):
            for request in requests {
                expect(finalResponse(client), matches: request, comment)
            }
            if !testCase.closes {
                let probe = finalResponse(client)
                #expect(probe.flatMap(Self.environ)?["PATH_INFO"] as? String == "/__probe", comment)
            }
        case .refused(let status, let after):
            for request in after {
                expect(finalResponse(client), matches: request, comment)
            }
            // The refusal comes first: no 100 Continue before it.
            let refusal = client.response()
            #expect(refusal?.status == status, comment)
        }
        let rest = client.readUntilClosed()
        #expect(rest.result == .closed, comment)
        #expect(rest.bytes.isEmpty, "\(testCase.name): unexpected bytes \(String(decoding: rest.bytes, as: UTF8.self))")
    }

    /// The next response that is not an interim (1xx) one.
    private func finalResponse(_ client: RawHTTP) -> RawHTTP.Response? {
        while let response = client.response() {
            if response.status >= 200 { return response }
        }
        return nil
    }

    private static func environ(_ response: RawHTTP.Response) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
    }

    private func expect(_ response: RawHTTP.Response?, matches request: CorpusCase.Seen, _ comment: Comment) {
        guard let response, response.status == 200, let environ = Self.environ(response) else {
            Issue.record("\(comment.rawValue): no echo for \(request.method) \(request.path): \(response.map { "\($0.status) \($0.text)" } ?? "nothing")")
            return
        }
        #expect(environ["REQUEST_METHOD"] as? String == request.method, comment)
        #expect(environ["PATH_INFO"] as? String == request.path, comment)
        #expect(environ["QUERY_STRING"] as? String == request.query, comment)
        #expect(environ["SERVER_PROTOCOL"] as? String == request.version, comment)
        var headers: [String: String] = [:]
        for (key, value) in environ where key.hasPrefix("HTTP_") || key == "CONTENT_TYPE" || key == "CONTENT_LENGTH" {
            headers[key] = value as? String
        }
        #expect(headers == request.environ, comment)
        let hex = request.body.unicodeScalars.map { String(format: "%02x", $0.value) }.joined()
        #expect(environ["body_hex"] as? String == hex, comment)
    }
}
