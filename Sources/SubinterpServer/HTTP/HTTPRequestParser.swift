import Foundation
import NIOCore

/// Why a request was refused, and the status that says so.
struct HTTPParseError: Error, Sendable, Hashable, CustomStringConvertible {
    var status: Int
    /// One short line for the log and the response body.
    var reason: String

    static func badRequest(_ reason: String) -> Self { .init(status: 400, reason: reason) }

    var description: String { "\(status): \(reason)" }
}

/// Limits the parser enforces.
struct HTTPParserLimits: Sendable {
    /// The whole head (request line and fields) may be this long; longer gets 431.
    var maxHeadBytes = 16 << 10
    /// The request line may be this long; longer gets 414.
    var maxRequestLine = 8 << 10
    /// At most this many field lines; more gets 431.
    var maxFields = 100
    /// Bodies (declared or chunked) larger than this get 413.
    var maxBody = 16 << 20
}

/// An incremental HTTP/1.1 request parser, written from RFC 9112 and RFC 9110, over the bytes of
/// one connection.
///
/// Feed it the connection's inbound buffer; each `next` consumes what it can and returns one
/// event: a head, a piece of body, the end of the request, or an error. It returns nil when it
/// needs more bytes. It never makes a `String` on the way; a head keeps its bytes and ranges.
///
/// It is strict wherever leniency lets two parsers disagree about where a request ends (request
/// smuggling), and follows gunicorn (>= 22) where the RFC leaves a choice:
/// - Lines end with CRLF. A bare LF, or a CR not followed by LF, anywhere in the head or in the
///   chunked framing is refused with 400 (RFC 9112 §2.2 lets a recipient accept a bare LF; this
///   parser never does, so one message is never read with two line-ending rules).
/// - Up to a few empty lines before the request line are skipped (RFC 9112 §2.2).
/// - 400 for: a malformed request line; a method that is not a token; a target that is not
///   origin-form, absolute-form (`http`/`https`), or `*` with `OPTIONS`; whitespace before a
///   field's colon; obs-fold; NUL, CR or other control bytes in a field; `Content-Length` that is
///   not plain digits, or given twice; both `Content-Length` and `Transfer-Encoding`;
///   `Transfer-Encoding` in HTTP/1.0; a coding list whose last coding is not `chunked`, or with
///   `chunked` twice; a missing or repeated `Host` in HTTP/1.1; a malformed chunk.
/// - 501 for a transfer coding other than `chunked`, and for `CONNECT` (not a proxy).
/// - 505 for any version other than 1.x.
/// - 414 for an oversize request line, 431 for an oversize head or too many fields, 413 for an
///   oversize body.
struct HTTPRequestParser {
    enum Event {
        case head(HTTPRequestHead)
        case body(ByteBuffer)
        case end
        case error(HTTPParseError)
    }

    private enum State {
        /// Reading a head; `scanned` bytes from the reader index are checked whole lines.
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers(bytes: Int)
        case end
        case failed
    }

    let limits: HTTPParserLimits
    private var state = State.head
    /// How far into the buffer (from its reader index) the head has been checked.
    private var scanned = 0
    private var requestLine: (method: HeadRange, target: HeadRange, version: HTTPVersion)?
    private var headStart = 0
    private var fields: [HTTPField] = []
    private var bodyRead = 0

    init(limits: HTTPParserLimits) {
        self.limits = limits
    }

    /// Whether any byte of a request has been taken since the last one ended (leading empty
    /// lines count): a timeout now interrupts a request rather than an idle connection.
    var isInsideRequest: Bool {
        if case .head = state { return scanned > 0 }
        return true
    }

    /// The next event from `buffer`, consuming the bytes it covers; nil when more are needed.
    mutating func next(_ buffer: inout ByteBuffer) -> Event? {
        switch state {
        case .head:
            return parseHead(&buffer)
        case .body(let remaining):
            if remaining == 0 {
                state = .end
                return next(&buffer)
            }
            guard buffer.readableBytes > 0 else { return nil }
            let count = min(remaining, buffer.readableBytes)
            state = .body(remaining: remaining - count)
            return .body(buffer.readSlice(length: count)!)
        case .chunkSize:
            return parseChunkSize(&buffer)
        case .chunkData(let remaining):
            guard buffer.readableBytes > 0 else { return nil }
            let count = min(remaining, buffer.readableBytes)
            state = count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - count)
            return .body(buffer.readSlice(length: count)!)
        case .chunkDataEnd:
            guard buffer.readableBytes >= 2 else {
                if buffer.readableBytes == 1 && buffer.readableBytesView.first != UInt8(ascii: "\r") {
                    return fail(.badRequest("chunk data not followed by CRLF"))
                }
                return nil
            }
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
                return fail(.badRequest("chunk data not followed by CRLF"))
            }
            state = .chunkSize
            return next(&buffer)
        case .trailers(let bytes):
            return parseTrailers(&buffer, seen: bytes)
        case .end:
            reset()
            return .end
        case .failed:
            return nil
        }
    }

    private mutating func reset() {
        state = .head
        scanned = 0
        requestLine = nil
        headStart = 0
        fields.removeAll(keepingCapacity: true)
        bodyRead = 0
    }

    private mutating func fail(_ error: HTTPParseError) -> Event {
        state = .failed
        return .error(error)
    }

    // MARK: - Head

    private enum Line {
        case needMore
        /// A complete line from `start` to `end` (its CRLF follows `end`).
        case line(start: Int, end: Int)
        case error(HTTPParseError)
    }

    /// The next CRLF-terminated line at `offset` in `buffer`; a bare LF is an error.
    private static func findLine(_ buffer: ByteBuffer, from offset: Int, within limit: Int = .max, what: String) -> Line {
        buffer.withUnsafeReadableBytes { raw in
            let available = min(raw.count, limit)
            guard offset < available, let base = raw.baseAddress else { return .needMore }
            guard let found = memchr(base + offset, 0x0A, available - offset) else { return .needMore }
            let lf = base.distance(to: UnsafeRawPointer(found))
            guard lf > offset, raw[lf - 1] == 0x0D else { return .error(.badRequest("\(what) ends with a bare LF")) }
            return .line(start: offset, end: lf - 1)
        }
    }

    /// The error for a head that has grown to `total` bytes (from the reader index), if too big.
    private func sizeError(total: Int) -> HTTPParseError? {
        if requestLine == nil && total - headStart > limits.maxRequestLine + 2 {
            return HTTPParseError(status: 414, reason: "the request line is longer than \(limits.maxRequestLine) bytes")
        }
        if total - headStart > limits.maxHeadBytes {
            return HTTPParseError(status: 431, reason: "the request head is larger than \(limits.maxHeadBytes) bytes")
        }
        return nil
    }

    private mutating func parseHead(_ buffer: inout ByteBuffer) -> Event? {
        while true {
            switch Self.findLine(buffer, from: scanned, what: "a line of the head") {
            case .error(let error):
                return fail(error)
            case .needMore:
                if let error = sizeError(total: buffer.readableBytes) { return fail(error) }
                return nil
            case .line(let start, let end):
                scanned = end + 2
                if let error = sizeError(total: scanned) { return fail(error) }
                if requestLine == nil {
                    if start == end {
                        // An empty line before the request line (RFC 9112 §2.2); a few are allowed.
                        guard start < 8 else { return fail(.badRequest("too many empty lines before the request line")) }
                        headStart = scanned
                        continue
                    }
                    switch buffer.withUnsafeReadableBytes({ Self.parseRequestLine($0, start: start, end: end) }) {
                    case .success(let line): requestLine = line
                    case .failure(let error): return fail(error)
                    }
                    continue
                }
                if start == end {
                    return finishHead(&buffer)
                }
                switch buffer.withUnsafeReadableBytes({ Self.parseFieldLine($0, start: start, end: end, base: headStart) }) {
                case .success(let field):
                    fields.append(field)
                    if fields.count > limits.maxFields {
                        return fail(HTTPParseError(status: 431, reason: "the request has more than \(limits.maxFields) header fields"))
                    }
                case .failure(let error):
                    return fail(error)
                }
            }
        }
    }

    private static func parseRequestLine(
        _ raw: UnsafeRawBufferPointer, start: Int, end: Int
    ) -> Result<(method: HeadRange, target: HeadRange, version: HTTPVersion), HTTPParseError> {
        // method SP request-target SP HTTP-version, single spaces, nothing else (RFC 9112 §3).
        var i = start
        while i < end, ASCII.isTokenCharacter(raw[i]) { i += 1 }
        guard i > start, i < end, raw[i] == UInt8(ascii: " ") else {
            return .failure(.badRequest("malformed request line (the method must be a token followed by one space)"))
        }
        let methodEnd = i
        i += 1
        let targetStart = i
        while i < end, raw[i] > 0x20, raw[i] < 0x7F { i += 1 }
        guard i > targetStart, i < end, raw[i] == UInt8(ascii: " ") else {
            return .failure(.badRequest("malformed request line (the target must be visible ASCII followed by one space)"))
        }
        let targetEnd = i
        i += 1
        // HTTP-version = "HTTP/" DIGIT "." DIGIT
        guard end - i == 8, raw[i] == UInt8(ascii: "H"), raw[i + 1] == UInt8(ascii: "T"), raw[i + 2] == UInt8(ascii: "T"),
            raw[i + 3] == UInt8(ascii: "P"), raw[i + 4] == UInt8(ascii: "/"), raw[i + 6] == UInt8(ascii: "."),
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(raw[i + 5]), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(raw[i + 7])
        else {
            return .failure(.badRequest("malformed request line (the version must be HTTP/1.1 or HTTP/1.0)"))
        }
        let major = Int(raw[i + 5] - UInt8(ascii: "0")), minor = Int(raw[i + 7] - UInt8(ascii: "0"))
        guard major == 1 else {
            return .failure(HTTPParseError(status: 505, reason: "HTTP/\(major).\(minor) is not supported; use HTTP/1.1"))
        }
        // The ranges are relative to the head start, fixed up when the head is done.
        return .success((HeadRange(start, methodEnd), HeadRange(targetStart, targetEnd), HTTPVersion(major: 1, minor: min(minor, 1))))
    }

    private static func parseFieldLine(_ raw: UnsafeRawBufferPointer, start: Int, end: Int, base: Int) -> Result<HTTPField, HTTPParseError> {
        // field-line = field-name ":" OWS field-value OWS (RFC 9112 §5)
        if raw[start] == UInt8(ascii: " ") || raw[start] == UInt8(ascii: "\t") {
            return .failure(.badRequest("obsolete line folding (a header line starts with whitespace)"))
        }
        var i = start
        while i < end, ASCII.isTokenCharacter(raw[i]) { i += 1 }
        guard i < end, raw[i] == UInt8(ascii: ":") else {
            if i < end, raw[i] == UInt8(ascii: " ") || raw[i] == UInt8(ascii: "\t") {
                return .failure(.badRequest("whitespace between a header name and its colon"))
            }
            return .failure(.badRequest("malformed header line (a name of token characters, then a colon)"))
        }
        guard i > start else { return .failure(.badRequest("a header line with an empty name")) }
        let nameEnd = i
        i += 1
        while i < end, raw[i] == UInt8(ascii: " ") || raw[i] == UInt8(ascii: "\t") { i += 1 }
        let valueStart = i
        var valueEnd = i
        while i < end {
            let byte = raw[i]
            guard ASCII.isFieldValueByte(byte) else {
                return .failure(.badRequest("a header value contains a control byte (NUL, CR or another)"))
            }
            i += 1
            if byte != UInt8(ascii: " ") && byte != UInt8(ascii: "\t") { valueEnd = i }
        }
        let name = UnsafeRawBufferPointer(rebasing: raw[start..<nameEnd])
        return .success(HTTPField(
            name: HeadRange(start - base, nameEnd - base), value: HeadRange(valueStart - base, valueEnd - base), kind: Self.kind(of: name)))
    }

    private static func kind(of name: UnsafeRawBufferPointer) -> HTTPField.Kind {
        switch name.count {
        case 4: return ASCII.equals(name, "host", caseInsensitive: true) ? .host : .other
        case 6: return ASCII.equals(name, "expect", caseInsensitive: true) ? .expect : .other
        case 7: return ASCII.equals(name, "upgrade", caseInsensitive: true) ? .upgrade : .other
        case 10: return ASCII.equals(name, "connection", caseInsensitive: true) ? .connection : .other
        case 12: return ASCII.equals(name, "content-type", caseInsensitive: true) ? .contentType : .other
        case 14: return ASCII.equals(name, "content-length", caseInsensitive: true) ? .contentLength : .other
        case 17: return ASCII.equals(name, "transfer-encoding", caseInsensitive: true) ? .transferEncoding : .other
        default: return .other
        }
    }

    /// The head is complete: check the fields that decide framing and hand it over.
    private mutating func finishHead(_ buffer: inout ByteBuffer) -> Event {
        guard let line = requestLine else { return fail(.badRequest("no request line")) }
        buffer.moveReaderIndex(forwardBy: headStart)
        let bytes = buffer.readSlice(length: scanned - headStart)!
        let shift = headStart
        let method = HeadRange(Int(line.method.start) - shift, Int(line.method.end) - shift)
        let target = HeadRange(Int(line.target.start) - shift, Int(line.target.end) - shift)
        let result = bytes.withUnsafeReadableBytes { raw in
            Self.interpret(raw, version: line.version, method: method, target: target, fields: fields, maxBody: limits.maxBody)
        }
        switch result {
        case .failure(let error):
            return fail(error)
        case .success(let parts):
            let head = HTTPRequestHead(
                bytes: bytes, version: line.version, method: method, target: target, targetForm: parts.form, path: parts.path,
                query: parts.query, fields: fields, contentLength: parts.contentLength, isChunked: parts.chunked,
                keepAlive: parts.keepAlive, explicitKeepAlive: parts.explicitKeepAlive, expectsContinue: parts.expectsContinue,
                wantsUpgrade: parts.upgrade)
            fields = []
            if parts.chunked {
                state = .chunkSize
            } else {
                state = .body(remaining: parts.contentLength ?? 0)
            }
            scanned = 0
            headStart = 0
            requestLine = nil
            return .head(head)
        }
    }

    private struct Interpretation {
        var form: RequestTargetForm
        var path: HeadRange
        var query: HeadRange?
        var contentLength: Int?
        var chunked = false
        var keepAlive: Bool
        var explicitKeepAlive = false
        var expectsContinue = false
        var upgrade = false
    }

    private static func interpret(
        _ raw: UnsafeRawBufferPointer, version: HTTPVersion, method: HeadRange, target: HeadRange, fields: [HTTPField], maxBody: Int
    ) -> Result<Interpretation, HTTPParseError> {
        let methodBytes = UnsafeRawBufferPointer(rebasing: raw[Int(method.start)..<Int(method.end)])
        let isOptions = ASCII.equals(methodBytes, "OPTIONS", caseInsensitive: false)
        if ASCII.equals(methodBytes, "CONNECT", caseInsensitive: false) {
            return .failure(HTTPParseError(status: 501, reason: "CONNECT is not supported: this server is not a proxy"))
        }
        guard case .success(let (form, path, query)) = parseTarget(raw, target, isOptions: isOptions) else {
            return .failure(.badRequest("malformed request target (expected /path, http://host/path, or * with OPTIONS)"))
        }
        var result = Interpretation(form: form, path: path, query: query, keepAlive: version.minor >= 1)
        var hosts = 0
        var codings: [(chunked: Bool, valid: Bool)] = []
        var transferEncodingFields = 0
        var lengths = 0
        var hasUpgradeField = false
        var connectionUpgrade = false
        var closeRequested = false
        var keepAliveRequested = false
        for field in fields where field.kind != .other {
            let value = UnsafeRawBufferPointer(rebasing: raw[Int(field.value.start)..<Int(field.value.end)])
            switch field.kind {
            case .host:
                hosts += 1
                guard value.allSatisfy(isHostByte) else { return .failure(.badRequest("malformed Host header")) }
            case .contentLength:
                lengths += 1
                guard lengths == 1 else { return .failure(.badRequest("more than one Content-Length header")) }
                guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                    return .failure(.badRequest("Content-Length must be a decimal number of bytes"))
                }
                result.contentLength = value.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            case .transferEncoding:
                transferEncodingFields += 1
                forEachListElement(value) { element in
                    let isToken = element.allSatisfy(ASCII.isTokenCharacter)
                    codings.append((isToken && ASCII.equals(element, "chunked", caseInsensitive: true), isToken))
                }
            case .connection:
                forEachListElement(value) { token in
                    if ASCII.equals(token, "close", caseInsensitive: true) { closeRequested = true }
                    if ASCII.equals(token, "keep-alive", caseInsensitive: true) { keepAliveRequested = true }
                    if ASCII.equals(token, "upgrade", caseInsensitive: true) { connectionUpgrade = true }
                }
            case .expect:
                if ASCII.equals(value, "100-continue", caseInsensitive: true) { result.expectsContinue = true }
            case .upgrade:
                hasUpgradeField = true
            case .contentType, .other:
                break
            }
        }
        if version.minor >= 1 && hosts == 0 { return .failure(.badRequest("HTTP/1.1 requests need a Host header")) }
        if hosts > 1 { return .failure(.badRequest("more than one Host header")) }
        if transferEncodingFields > 0 {
            // RFC 9112 §6.1 and §6.3: a message with both is a smuggling attempt; HTTP/1.0 has no chunked.
            if lengths > 0 { return .failure(.badRequest("both Content-Length and Transfer-Encoding")) }
            if version.minor == 0 { return .failure(.badRequest("Transfer-Encoding in an HTTP/1.0 request")) }
            if let error = checkCodings(codings) { return .failure(error) }
            result.chunked = true
        }
        if let length = result.contentLength, length > maxBody {
            return .failure(HTTPParseError(status: 413, reason: "the body is larger than \(maxBody) bytes"))
        }
        if closeRequested {
            result.keepAlive = false
        } else if version.minor == 0 && keepAliveRequested {
            result.keepAlive = true
            result.explicitKeepAlive = true
        }
        result.expectsContinue = result.expectsContinue && version.minor >= 1 && (result.chunked || (result.contentLength ?? 0) > 0)
        result.upgrade = connectionUpgrade && hasUpgradeField
        return .success(result)
    }

    /// Decides the framing from the codings of every `Transfer-Encoding` field, in order (a
    /// later field continues the list): succeeds when the list is exactly `chunked`.
    private static func checkCodings(_ codings: [(chunked: Bool, valid: Bool)]) -> HTTPParseError? {
        guard !codings.isEmpty else { return .badRequest("empty Transfer-Encoding") }
        var endsChunked = false
        var unsupported = false
        for coding in codings {
            guard coding.valid else { return .badRequest("malformed Transfer-Encoding") }
            if endsChunked {
                // Something after chunked: chunked is not last, or it is applied twice. 400 wins
                // over 501: such a list cannot be framed at all.
                return .badRequest(coding.chunked ? "chunked is applied twice" : "the last transfer coding must be chunked")
            }
            if coding.chunked { endsChunked = true } else { unsupported = true }
        }
        guard endsChunked else { return .badRequest("the last transfer coding must be chunked") }
        if unsupported { return HTTPParseError(status: 501, reason: "unsupported transfer coding (only chunked is implemented)") }
        return nil
    }

    /// Calls `body` with each non-empty element of a comma-separated list, trimmed of whitespace.
    private static func forEachListElement(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        for i in 0...value.count where i == value.count || value[i] == UInt8(ascii: ",") {
            var lower = start, upper = i
            while lower < upper, value[lower] == UInt8(ascii: " ") || value[lower] == UInt8(ascii: "\t") { lower += 1 }
            while upper > lower, value[upper - 1] == UInt8(ascii: " ") || value[upper - 1] == UInt8(ascii: "\t") { upper -= 1 }
            if upper > lower { body(UnsafeRawBufferPointer(rebasing: value[lower..<upper])) }
            start = i + 1
        }
    }

    /// `uri-host [ ":" port ]` characters: unreserved, pct-encoded, sub-delims, `:`, `[`, `]`.
    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"), UInt8(ascii: "!"),
            UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
            UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "["),
            UInt8(ascii: "]"):
            return true
        default:
            return false
        }
    }

    /// Splits the target into its form, path and query; a fragment is dropped.
    private static func parseTarget(
        _ raw: UnsafeRawBufferPointer, _ target: HeadRange, isOptions: Bool
    ) -> Result<(RequestTargetForm, HeadRange, HeadRange?), HTTPParseError> {
        let start = Int(target.start), end = Int(target.end)
        var stop = end
        for i in start..<end where raw[i] == UInt8(ascii: "#") {
            stop = i
            break
        }
        func pathAndQuery(from pathStart: Int) -> (HeadRange, HeadRange?) {
            for i in pathStart..<stop where raw[i] == UInt8(ascii: "?") {
                return (HeadRange(pathStart, i), HeadRange(i + 1, stop))
            }
            return (HeadRange(pathStart, stop), nil)
        }
        if raw[start] == UInt8(ascii: "/") {
            let (path, query) = pathAndQuery(from: start)
            return .success((.origin, path, query))
        }
        if end - start == 1 && raw[start] == UInt8(ascii: "*") {
            guard isOptions else { return .failure(.badRequest("* is a target for OPTIONS only")) }
            return .success((.asterisk, target, nil))
        }
        // absolute-form: http:// or https:// then an authority (RFC 9110 §4.2; no userinfo).
        var i = start
        while i < stop, raw[i] != UInt8(ascii: ":") { i += 1 }
        let scheme = UnsafeRawBufferPointer(rebasing: raw[start..<i])
        guard ASCII.equals(scheme, "http", caseInsensitive: true) || ASCII.equals(scheme, "https", caseInsensitive: true),
            stop - i >= 3, raw[i + 1] == UInt8(ascii: "/"), raw[i + 2] == UInt8(ascii: "/")
        else {
            return .failure(.badRequest("malformed request target"))
        }
        let authorityStart = i + 3
        var authorityEnd = authorityStart
        while authorityEnd < stop, raw[authorityEnd] != UInt8(ascii: "/"), raw[authorityEnd] != UInt8(ascii: "?") { authorityEnd += 1 }
        let authority = UnsafeRawBufferPointer(rebasing: raw[authorityStart..<authorityEnd])
        guard !authority.isEmpty, authority.allSatisfy({ isHostByte($0) && $0 != UInt8(ascii: ",") }), isWellFormedAuthority(authority) else {
            return .failure(.badRequest("malformed authority in the request target"))
        }
        let (path, query) = pathAndQuery(from: authorityEnd)
        return .success((.absolute(authority: HeadRange(authorityStart, authorityEnd)), path, query))
    }

    /// `host [":" port]` where host is a bracketed IP literal or a name without brackets.
    private static func isWellFormedAuthority(_ authority: UnsafeRawBufferPointer) -> Bool {
        var hostEnd = authority.count
        if authority[0] == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else { return false }
            hostEnd = close + 1
            if hostEnd < authority.count && authority[hostEnd] != UInt8(ascii: ":") { return false }
        } else {
            if authority.contains(UInt8(ascii: "[")) || authority.contains(UInt8(ascii: "]")) { return false }
            hostEnd = authority.firstIndex(of: UInt8(ascii: ":")) ?? authority.count
            if hostEnd == 0 { return false }
        }
        if hostEnd < authority.count {
            let port = authority[(hostEnd + 1)...]
            return port.count <= 5 && port.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        }
        return true
    }

    // MARK: - Chunked body (RFC 9112 §7.1)

    private mutating func parseChunkSize(_ buffer: inout ByteBuffer) -> Event? {
        let maxLine = 4096
        let lineEnd: Int
        switch Self.findLine(buffer, from: 0, within: maxLine, what: "a chunk size line") {
        case .needMore:
            if buffer.readableBytes >= maxLine { return fail(.badRequest("a chunk size line is longer than \(maxLine) bytes")) }
            return nil
        case .error(let error):
            return fail(error)
        case .line(_, let end):
            lineEnd = end
        }
        let parsed = buffer.withUnsafeReadableBytes { Self.parseChunkSizeLine(UnsafeRawBufferPointer(rebasing: $0[0..<lineEnd])) }
        buffer.moveReaderIndex(forwardBy: lineEnd + 2)
        switch parsed {
        case .failure(let error):
            return fail(error)
        case .success(0):
            state = .trailers(bytes: 0)
            return next(&buffer)
        case .success(let size):
            bodyRead += size
            if bodyRead > limits.maxBody {
                return fail(HTTPParseError(status: 413, reason: "the body is larger than \(limits.maxBody) bytes"))
            }
            state = .chunkData(remaining: size)
            return next(&buffer)
        }
    }

    /// `chunk-size [ chunk-ext ]`: hex digits, then `; name[=value]` extensions, which are read
    /// and ignored (`value` is a token or a quoted string; whitespace is allowed around `;` and `=`).
    static func parseChunkSizeLine(_ line: UnsafeRawBufferPointer) -> Result<Int, HTTPParseError> {
        var i = 0
        var size = 0
        while i < line.count, let digit = hexValue(line[i]) {
            guard i < 15 else { return .failure(.badRequest("chunk size too large")) }
            size = size << 4 | digit
            i += 1
        }
        guard i > 0 else { return .failure(.badRequest("malformed chunk size")) }
        func skipWhitespace() {
            while i < line.count, line[i] == UInt8(ascii: " ") || line[i] == UInt8(ascii: "\t") { i += 1 }
        }
        func token() -> Bool {
            let start = i
            while i < line.count, ASCII.isTokenCharacter(line[i]) { i += 1 }
            return i > start
        }
        while true {
            skipWhitespace()
            if i == line.count { return .success(size) }
            guard line[i] == UInt8(ascii: ";") else { return .failure(.badRequest("malformed chunk size line")) }
            i += 1
            skipWhitespace()
            guard token() else { return .failure(.badRequest("malformed chunk extension")) }
            skipWhitespace()
            guard i < line.count, line[i] == UInt8(ascii: "=") else { continue }
            i += 1
            skipWhitespace()
            if i < line.count, line[i] == UInt8(ascii: "\"") {
                i += 1
                var closed = false
                while i < line.count {
                    let byte = line[i]
                    if byte == UInt8(ascii: "\"") {
                        closed = true
                        i += 1
                        break
                    }
                    if byte == UInt8(ascii: "\\") { i += 1 }
                    guard i < line.count, ASCII.isFieldValueByte(line[i]) else {
                        return .failure(.badRequest("malformed chunk extension"))
                    }
                    i += 1
                }
                guard closed else { return .failure(.badRequest("malformed chunk extension")) }
            } else if !token() {
                return .failure(.badRequest("malformed chunk extension"))
            }
        }
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// The trailer section after the last chunk: field lines, checked like the head's and
    /// dropped, then the empty line.
    private mutating func parseTrailers(_ buffer: inout ByteBuffer, seen: Int) -> Event? {
        var seen = seen
        let tooLarge = HTTPParseError(status: 431, reason: "the trailer section is larger than \(limits.maxHeadBytes) bytes")
        while true {
            switch Self.findLine(buffer, from: 0, what: "a trailer line") {
            case .needMore:
                if seen + buffer.readableBytes > limits.maxHeadBytes { return fail(tooLarge) }
                state = .trailers(bytes: seen)
                return nil
            case .error(let error):
                return fail(error)
            case .line(_, let end):
                seen += end + 2
                if seen > limits.maxHeadBytes { return fail(tooLarge) }
                if end == 0 {
                    buffer.moveReaderIndex(forwardBy: 2)
                    reset()
                    return .end
                }
                if case .failure(let error) = buffer.withUnsafeReadableBytes({ Self.parseFieldLine($0, start: 0, end: end, base: 0) }) {
                    return fail(error)
                }
                buffer.moveReaderIndex(forwardBy: end + 2)
            }
        }
    }
}
