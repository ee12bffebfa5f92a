/// Raw HTTP/1.1 requests and what the server must make of them, written from RFC 9112 and
/// RFC 9110 and from the published request-smuggling shapes (CL.TE, TE.CL, TE.TE
/// obfuscations). `HTTPConformanceTests` sends each over a real socket to an app that echoes
/// what it saw; `HTTPParserTests` runs each through the parser in memory, whole and byte by byte.
///
/// Requests are written as text where every character stands for one byte (`\u{E9}` is the
/// byte 0xE9), so the bytes are exact and the values the app must see read the same way:
/// PEP 3333 decodes header bytes as Latin-1.
struct CorpusCase: Sendable, CustomStringConvertible {
    /// What one request must look like to the app.
    struct Seen: Sendable {
        var method = "GET"
        var path = "/"
        var query = ""
        var version = "HTTP/1.1"
        /// Every `HTTP_*` key, and `CONTENT_TYPE` / `CONTENT_LENGTH` when present: exactly these.
        var environ: [String: String] = ["HTTP_HOST": "x"]
        var body = ""
    }

    enum Outcome: Sendable {
        /// Every request is answered, in order.
        case accepted([Seen])
        /// The requests in `after` are answered, then the next gets `status` and the connection
        /// closes; nothing behind it is ever answered.
        case refused(Int, after: [Seen] = [])
    }

    let name: String
    let raw: String
    let outcome: Outcome
    /// For accepted requests: whether the connection closes after the last one.
    let closes: Bool

    init(_ name: String, _ raw: String, _ outcome: Outcome, closes: Bool = false) {
        self.name = name
        self.raw = raw
        self.outcome = outcome
        self.closes = closes
    }

    var bytes: [UInt8] { raw.unicodeScalars.map { UInt8($0.value) } }
    var description: String { name }

    /// The largest body the corpus server accepts (`--max-body`).
    static let maxBody = 4096

    static func get(_ path: String = "/", query: String = "", _ environ: [String: String] = ["HTTP_HOST": "x"]) -> Seen {
        Seen(method: "GET", path: path, query: query, environ: environ)
    }

    static let all: [CorpusCase] = accepted + refused

    // MARK: Valid requests: they reach the app exactly as sent.

    static let accepted: [CorpusCase] = [
        CorpusCase("a plain GET", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/a")])),
        CorpusCase("a query", "GET /a?b=1&c=%20 HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/a", query: "b=1&c=%20")])),
        CorpusCase(
            "a percent-encoded path is decoded, as Latin-1", "GET /caf%C3%A9/%2F HTTP/1.1\r\nHost: x\r\n\r\n",
            .accepted([get("/caf\u{C3}\u{A9}//")])),
        CorpusCase("malformed escapes are kept", "GET /%zz%4 HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/%zz%4")])),
        CorpusCase(
            "a POST with Content-Length", "POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            .accepted([Seen(method: "POST", path: "/form", environ: ["HTTP_HOST": "x", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5"], body: "hello")])),
        CorpusCase(
            "Content-Length with leading zeros", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "5"], body: "hello")])),
        CorpusCase(
            "Content-Length: 0", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "0"])])),
        CorpusCase(
            "a chunked body", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "11"], body: "hello world")])),
        CorpusCase(
            "chunk extensions with whitespace", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5; some; parameters=stuff\r\nhello\r\n0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "5"], body: "hello")])),
        CorpusCase(
            "a quoted chunk extension with ; and an escaped quote",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"a;b\\\"c\" ; n2 = v2\r\nhello\r\n0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "5"], body: "hello")])),
        CorpusCase(
            "upper-case hex sizes and zero padding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00A\r\n0123456789\r\n000\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "10"], body: "0123456789")])),
        CorpusCase(
            "trailer fields are read and dropped",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "5"], body: "hello")])),
        CorpusCase(
            "Transfer-Encoding is case-insensitive", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "2"], body: "hi")])),
        CorpusCase(
            "whitespace around a coding is not part of it", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \t chunked \t\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "2"], body: "hi")])),
        CorpusCase("any token is a method", "FOO /a HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([Seen(method: "FOO", path: "/a")])),
        CorpusCase("a method with token punctuation", "M-SEARCH.v2 /a HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([Seen(method: "M-SEARCH.v2", path: "/a")])),
        CorpusCase("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([Seen(method: "OPTIONS", path: "*")])),
        CorpusCase(
            "absolute-form: the target's authority is the host, the query is kept",
            "GET http://h.example/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n", .accepted([get("/p", query: "q=1", ["HTTP_HOST": "h.example"])])),
        CorpusCase(
            "absolute-form with a port and no path", "GET HTTPS://h.example:8443?x=1 HTTP/1.1\r\nHost: h.example:8443\r\n\r\n",
            .accepted([get("/", query: "x=1", ["HTTP_HOST": "h.example:8443"])])),
        CorpusCase("a fragment is dropped", "GET /p?page=1#posts-17408 HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/p", query: "page=1")])),
        CorpusCase("a fragment without a query", "GET /p#top?x HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/p")])),
        CorpusCase("empty lines before the request line", "\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/a")])),
        CorpusCase(
            "obs-text in a value, as Latin-1", "GET / HTTP/1.1\r\nHost: x\r\nX-V: caf\u{E9}\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_V": "caf\u{E9}"])])),
        CorpusCase(
            "UTF-8 in a value, as Latin-1", "GET / HTTP/1.1\r\nHost: x\r\nX-V: caf\u{C3}\u{A9}\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_V": "caf\u{C3}\u{A9}"])])),
        CorpusCase(
            "whitespace around a value is trimmed, inside it is kept", "GET / HTTP/1.1\r\nHost: x\r\nX-V: \t a \t b \t\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_V": "a \t b"])])),
        CorpusCase(
            "an empty value", "GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n", .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_EMPTY": ""])])),
        CorpusCase(
            "a repeated header is joined with commas", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: b\r\nx-a: 2\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_A": "1,2", "HTTP_X_B": "b"])])),
        CorpusCase(
            "names are matched and keyed without regard to case", "GET / HTTP/1.1\r\nhOsT: x\r\nx-MiXeD-case: v\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_X_MIXED_CASE": "v"])])),
        CorpusCase(
            "names with _ never reach the app",
            "POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 6.6.6.6\r\nContent_Length: 9\r\nRemote_User: r\r\nContent-Length: 2\r\n\r\nok",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "HTTP_X_FORWARDED_FOR": "10.0.0.1", "CONTENT_LENGTH": "2"], body: "ok")])),
        CorpusCase(
            "many small headers", "GET / HTTP/1.1\r\nHost: x\r\n" + (0..<95).map { "X-H\($0): \($0)\r\n" }.joined() + "\r\n",
            .accepted([get("/", (0..<95).reduce(into: ["HTTP_HOST": "x"]) { $0["HTTP_X_H\($1)"] = "\($1)" })])),
        CorpusCase(
            "a Host with a port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", .accepted([get("/", ["HTTP_HOST": "example.com:8080"])])),
        CorpusCase(
            "HTTP/1.0 without Host closes after the response", "GET /a HTTP/1.0\r\n\r\n",
            .accepted([Seen(path: "/a", version: "HTTP/1.0", environ: [:])]), closes: true),
        CorpusCase(
            "HTTP/1.0 keep-alive keeps the connection for the next request",
            "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
            .accepted([
                Seen(path: "/1", version: "HTTP/1.0", environ: ["HTTP_CONNECTION": "keep-alive"]), Seen(path: "/2", version: "HTTP/1.0", environ: [:]),
            ]), closes: true),
        CorpusCase(
            "three pipelined requests", "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
            .accepted([get("/1"), get("/2"), get("/3")])),
        CorpusCase(
            "a body that looks like a request is only a body",
            "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: \(smuggled.unicodeScalars.count)\r\n\r\n\(smuggled)GET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
            .accepted([
                Seen(method: "POST", path: "/1", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "\(smuggled.unicodeScalars.count)"], body: smuggled), get("/2"),
            ])),
        CorpusCase(
            "a chunk that looks like a request is only a chunk",
            "POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(String(smuggled.unicodeScalars.count, radix: 16))\r\n\(smuggled)\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
            .accepted([
                Seen(method: "POST", path: "/1", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "\(smuggled.unicodeScalars.count)"], body: smuggled), get("/2"),
            ])),
        CorpusCase(
            "Expect: 100-continue with the body right behind",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
            .accepted([Seen(method: "POST", environ: ["HTTP_HOST": "x", "HTTP_EXPECT": "100-continue", "CONTENT_LENGTH": "2"], body: "ok")])),
        CorpusCase("HTTP/1.2 is read as HTTP/1.1", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", .accepted([get()])),
        CorpusCase("a query with ? and /", "GET /p?a=1?b=/c HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/p", query: "a=1?b=/c")])),
        CorpusCase(
            "sub-delims, @ and : in a path", "GET /a;b=c/d@e:f!$&'()*+,= HTTP/1.1\r\nHost: x\r\n\r\n", .accepted([get("/a;b=c/d@e:f!$&'()*+,=")])),
        CorpusCase(
            "Connection: close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_CONNECTION": "close"])]), closes: true),
        CorpusCase(
            "close anywhere in the Connection list", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
            .accepted([get("/", ["HTTP_HOST": "x", "HTTP_CONNECTION": "keep-alive, Close"])]), closes: true),
        CorpusCase(
            "a DELETE with a body", "DELETE /item HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            .accepted([Seen(method: "DELETE", path: "/item", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "3"], body: "abc")])),
        CorpusCase(
            "one-byte chunks", "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n",
            .accepted([Seen(method: "PUT", environ: ["HTTP_HOST": "x", "CONTENT_LENGTH": "3"], body: "abc")])),
    ]

    // MARK: Invalid requests: refused, and the connection closes.

    static let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    static let refused: [CorpusCase] = [
        CorpusCase(
            "CL.TE: Content-Length and Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase(
            "TE.CL: Transfer-Encoding then Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\(String(smuggled.unicodeScalars.count, radix: 16))\r\n" + smuggled + "\r\n0\r\n\r\n",
            .refused(400)),
        CorpusCase("Content-Length twice, equal", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", .refused(400)),
        CorpusCase("Content-Length twice, different", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", .refused(400)),
        CorpusCase("a Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", .refused(400)),
        CorpusCase("a signed Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", .refused(400)),
        CorpusCase("a negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", .refused(400)),
        CorpusCase("a hex Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", .refused(400)),
        CorpusCase("a space inside Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n0123456789", .refused(400)),
        CorpusCase("an empty Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", .refused(400)),
        CorpusCase("a Content-Length that overflows", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", .refused(400)),
        CorpusCase("TE.TE: xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("TE.TE: chunked, identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("TE.TE: identity, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(501)),
        CorpusCase("TE.TE: x, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x, chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(501)),
        CorpusCase("a coding other than chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase(
            "TE.TE: chunked in two fields", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
            .refused(400)),
        CorpusCase(
            "TE.TE: a second field after chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n" + smuggled,
            .refused(400)),
        CorpusCase("TE.TE: a space before the colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("TE.TE: a tab before the colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", .refused(400)),
        CorpusCase("TE.TE: chunked by obs-fold", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("a bare LF after a field", "GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", .refused(400)),
        CorpusCase("bare LFs throughout", "GET / HTTP/1.1\nHost: x\n\n", .refused(400)),
        CorpusCase("a bare CR in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n", .refused(400)),
        CorpusCase("NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\u{0}2\r\n\r\n", .refused(400)),
        CorpusCase("NUL in a name", "GET / HTTP/1.1\r\nHost: x\r\nX-\u{0}A: 1\r\n\r\n", .refused(400)),
        CorpusCase("a control byte in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\u{1}\r\n\r\n", .refused(400)),
        CorpusCase("DEL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\u{7F}\r\n\r\n", .refused(400)),
        CorpusCase(
            "HTTP/1.0 with chunked, and a request behind it",
            "POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, .refused(400)),
        CorpusCase("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", .refused(400)),
        CorpusCase("two Host fields", "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example.com\r\n\r\n", .refused(400)),
        CorpusCase("a Host with a space", "GET / HTTP/1.1\r\nHost: ex ample\r\n\r\n", .refused(400)),
        CorpusCase("* for a method other than OPTIONS", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("a malformed absolute target", "PUT s://]ufd/: HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("a target without a leading slash", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("userinfo in an absolute target", "GET http://u@h.example/ HTTP/1.1\r\nHost: h.example\r\n\r\n", .refused(400)),
        CorpusCase("two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("whitespace before the method", " GET / HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("a lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("a two-digit minor version", "GET / HTTP/1.10\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("HTTP/2.0 over HTTP/1 framing", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", .refused(505)),
        CorpusCase("HTTP/0.9", "GET / HTTP/0.9\r\nHost: x\r\n\r\n", .refused(505)),
        CorpusCase("a method that is not a token", "GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase("a raw non-ASCII byte in the target", "GET /caf\u{E9} HTTP/1.1\r\nHost: x\r\n\r\n", .refused(400)),
        CorpusCase(
            "a chunk size that overflows", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
            .refused(400)),
        CorpusCase("whitespace before a chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", .refused(400)),
        CorpusCase("a negative chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", .refused(400)),
        CorpusCase("a 0x chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", .refused(400)),
        CorpusCase(
            "chunk data longer than its size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello world\r\n0\r\n\r\n" + smuggled,
            .refused(400)),
        CorpusCase("a malformed chunk extension", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n", .refused(400)),
        CorpusCase("a chunk size line ending in a bare LF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", .refused(400)),
        CorpusCase("a head over 16 KiB", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 17_000) + "\r\n\r\n", .refused(431)),
        CorpusCase(
            "more than 100 header fields", "GET / HTTP/1.1\r\nHost: x\r\n" + (0..<101).map { "X-H\($0): \($0)\r\n" }.joined() + "\r\n", .refused(431)),
        CorpusCase("a request line over 8 KiB", "GET /" + String(repeating: "x", count: 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n", .refused(414)),
        CorpusCase("CONNECT", "CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n", .refused(501)),
        CorpusCase("an empty header name", "GET / HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n", .refused(400)),
        CorpusCase("a header line without a colon", "GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n", .refused(400)),
        CorpusCase("a Content-Length over the body limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", .refused(413)),
        CorpusCase(
            "a chunked body over the body limit",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1100\r\n" + String(repeating: "b", count: 0x1100) + "\r\n0\r\n\r\n", .refused(413)),
        CorpusCase(
            "Expect: 100-continue over the body limit gets 413, not 100", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
            .refused(413)),
        CorpusCase(
            "a valid request, then an invalid one", "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" + smuggled,
            .refused(400, after: [get("/1")])),
    ]
}
