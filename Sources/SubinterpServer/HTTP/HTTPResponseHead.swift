import Foundation
import NIOCore
import Synchronization

/// A response header the app gave that cannot be sent: it is never dropped silently, the request
/// fails instead.
struct HTTPResponseHeaderError: Error, Sendable, CustomStringConvertible {
    var description: String
}

/// A response head, encoded as it is built (on whichever thread builds it, a worker's usually):
/// the status line and the app's fields go straight into one `ByteBuffer`. The connection then
/// adds what only it knows (`Date` if missing, `Connection`, the framing header) and the empty
/// line, in the same buffer, and usually the body too, so a small response is one write.
///
/// The fields that decide framing and the connection are read, not copied: `Content-Length`
/// (kept, and checked against the body), `Transfer-Encoding: chunked` (the server chunks; any
/// other coding is refused), `Connection` (`close` is honoured; the server writes its own
/// `Connection` field) and `Keep-Alive` (dropped; the server decides).
struct HTTPResponseHead: Sendable {
    let status: Int
    /// `HTTP/1.1 <status> <reason>\r\n` and the field lines so far.
    private(set) var buffer: ByteBuffer
    private(set) var contentLength: Int?
    private(set) var hasDate = false
    /// The app asked for `Connection: close`.
    private(set) var wantsClose = false

    /// Starts a head; `reason` must be Latin-1 text without control characters.
    init(status: Int, reason: String, allocator: ByteBufferAllocator = ByteBufferAllocator(), capacity: Int = 256) throws {
        guard (100...999).contains(status) else { throw HTTPResponseHeaderError(description: "the status \(status) is not 3 digits") }
        self.status = status
        buffer = allocator.buffer(capacity: capacity)
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(status))
        buffer.writeInteger(UInt8(ascii: " "))
        let start = buffer.writerIndex
        guard Latin1.encode(reason, into: &buffer), Self.isFieldValue(buffer, from: start) else {
            throw HTTPResponseHeaderError(description: "the reason phrase \(reason.debugDescription) has a control character or a character above U+00FF")
        }
        buffer.writeStaticString("\r\n")
    }

    /// A head for a response the server makes itself (errors, 100 Continue).
    static func server(status: Int, reason: String) -> HTTPResponseHead {
        // Our own reasons are plain ASCII.
        try! HTTPResponseHead(status: status, reason: reason)
    }

    /// The reason phrase RFC 9110 gives `status` (plus a few in wide use); "Unknown" for others.
    static func reasonPhrase(for status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 102: "Processing"
        case 103: "Early Hints"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 203: "Non-Authoritative Information"
        case 204: "No Content"
        case 205: "Reset Content"
        case 206: "Partial Content"
        case 207: "Multi-Status"
        case 300: "Multiple Choices"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 303: "See Other"
        case 304: "Not Modified"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 402: "Payment Required"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 407: "Proxy Authentication Required"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 410: "Gone"
        case 411: "Length Required"
        case 412: "Precondition Failed"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 416: "Range Not Satisfiable"
        case 417: "Expectation Failed"
        case 418: "I'm a teapot"
        case 421: "Misdirected Request"
        case 422: "Unprocessable Content"
        case 423: "Locked"
        case 424: "Failed Dependency"
        case 425: "Too Early"
        case 426: "Upgrade Required"
        case 428: "Precondition Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 451: "Unavailable For Legal Reasons"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        case 507: "Insufficient Storage"
        case 511: "Network Authentication Required"
        default: "Unknown"
        }
    }

    /// Whether a response with this status has a body at all (RFC 9110 §6.4.1).
    var allowsBody: Bool { !(status < 200 || status == 204 || status == 304) }

    /// Adds a field. The name must be a token, the value Latin-1 text without CR, LF, NUL or other
    /// control characters (HTAB is allowed); otherwise this throws and the head is unchanged.
    mutating func add(name: String, value: String) throws {
        let mark = buffer.writerIndex
        var nameBytes = name
        let kind = nameBytes.withUTF8 { Self.kind(ofName: UnsafeRawBufferPointer($0)) }
        guard let kind else {
            throw HTTPResponseHeaderError(description: "the header name \(name.debugDescription) is not a token (letters, digits, !#$%&'*+-.^_`|~)")
        }
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        let valueStart = buffer.writerIndex
        guard Latin1.encode(value, into: &buffer), Self.isFieldValue(buffer, from: valueStart) else {
            buffer.moveWriterIndex(to: mark)
            throw HTTPResponseHeaderError(
                description: "the value of header \(name.debugDescription) has CR, LF, NUL, another control character or a character above U+00FF: \(value.debugDescription)")
        }
        try finishField(kind, mark: mark, valueStart: valueStart)
    }

    /// Adds a field given as raw bytes (an ASGI app's headers): the same rules as
    /// `add(name:value:)`, with the value's bytes sent as they are (bytes above 0x7F are obs-text).
    mutating func add(rawName name: UnsafeRawBufferPointer, rawValue value: UnsafeRawBufferPointer) throws {
        let mark = buffer.writerIndex
        guard let kind = Self.kind(ofName: name) else {
            throw HTTPResponseHeaderError(
                description: "the header name \(String(decoding: name, as: UTF8.self).debugDescription) is not a token (letters, digits, !#$%&'*+-.^_`|~)")
        }
        guard value.allSatisfy(ASCII.isFieldValueByte) else {
            throw HTTPResponseHeaderError(
                description: "the value of header \(String(decoding: name, as: UTF8.self).debugDescription) has CR, LF, NUL or another control character")
        }
        buffer.writeBytes(name)
        buffer.writeStaticString(": ")
        let valueStart = buffer.writerIndex
        buffer.writeBytes(value)
        try finishField(kind, mark: mark, valueStart: valueStart)
    }

    /// The kind of a field by its name; nil if the name is not a token.
    private static func kind(ofName name: UnsafeRawBufferPointer) -> FieldKind? {
        guard !name.isEmpty, name.allSatisfy(ASCII.isTokenCharacter) else { return nil }
        switch name.count {
        case 4 where ASCII.equals(name, "date", caseInsensitive: true): return .date
        case 10 where ASCII.equals(name, "connection", caseInsensitive: true): return .connection
        case 10 where ASCII.equals(name, "keep-alive", caseInsensitive: true): return .keepAlive
        case 14 where ASCII.equals(name, "content-length", caseInsensitive: true): return .contentLength
        case 17 where ASCII.equals(name, "transfer-encoding", caseInsensitive: true): return .transferEncoding
        default: return .plain
        }
    }

    /// A field was written from `mark` (its value from `valueStart`): reads what decides framing
    /// and the connection, drops what the server writes itself, and ends the line.
    private mutating func finishField(_ kind: FieldKind, mark: Int, valueStart: Int) throws {
        let valueBytes = buffer.getSlice(at: valueStart, length: buffer.writerIndex - valueStart)!
        switch kind {
        case .contentLength:
            let digits = valueBytes.readableBytesView
            guard contentLength == nil, !digits.isEmpty, digits.count <= 18,
                digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
            else {
                buffer.moveWriterIndex(to: mark)
                throw HTTPResponseHeaderError(
                    description: "Content-Length \(String(decoding: valueBytes.readableBytesView, as: UTF8.self).debugDescription) is not one decimal number")
            }
            contentLength = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        case .transferEncoding:
            buffer.moveWriterIndex(to: mark)
            let value = String(decoding: valueBytes.readableBytesView, as: UTF8.self)
            guard value.trimmingCharacters(in: .whitespaces).lowercased() == "chunked" else {
                throw HTTPResponseHeaderError(
                    description: "Transfer-Encoding \(value.debugDescription) is not supported; leave framing to the server")
            }
            // The server chunks when there is no Content-Length; nothing to write.
            return
        case .connection:
            buffer.moveWriterIndex(to: mark)
            let value = String(decoding: valueBytes.readableBytesView, as: UTF8.self)
            if value.lowercased().split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == "close" }) {
                wantsClose = true
            }
            return
        case .keepAlive:
            buffer.moveWriterIndex(to: mark)
            return
        case .date:
            hasDate = true
        case .plain:
            break
        }
        buffer.writeStaticString("\r\n")
    }

    private enum FieldKind {
        case plain, date, connection, keepAlive, contentLength, transferEncoding
    }

    private static func isFieldValue(_ buffer: ByteBuffer, from start: Int) -> Bool {
        buffer.withUnsafeReadableBytes { raw in
            raw[(start - buffer.readerIndex)...].allSatisfy(ASCII.isFieldValueByte)
        }
    }

    /// How the body of a response goes on the wire.
    enum Framing: Sendable, Equatable {
        /// No body (HEAD, 1xx, 204, 304): body bytes are dropped.
        case none
        /// `Content-Length`: this many bytes are still due.
        case length(Int)
        case chunked
        /// HTTP/1.0 without a length: the body ends when the connection closes.
        case untilClose
    }

    /// Ends the head: adds `Date` if missing, `Connection`, and the framing field chosen from
    /// the app's fields, the request, and (when the whole body is already known) its length.
    mutating func finish(
        keepAlive: Bool, explicitKeepAlive: Bool, isHEAD: Bool, http10: Bool, completeBody: Int?
    ) -> (framing: Framing, keepAlive: Bool) {
        if !hasDate {
            buffer.writeStaticString("Date: ")
            HTTPDate.write(into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        var keepAlive = keepAlive && !wantsClose
        var framing: Framing
        if !allowsBody {
            framing = .none
        } else if let contentLength {
            framing = isHEAD ? .none : .length(contentLength)
        } else if let completeBody {
            // The whole body is here already: say its length rather than chunk it.
            buffer.writeStaticString("Content-Length: ")
            buffer.writeString(String(completeBody))
            buffer.writeStaticString("\r\n")
            framing = isHEAD ? .none : .length(completeBody)
        } else if isHEAD {
            framing = .none
        } else if http10 {
            framing = .untilClose
            keepAlive = false
        } else {
            buffer.writeStaticString("Transfer-Encoding: chunked\r\n")
            framing = .chunked
        }
        if !keepAlive {
            buffer.writeStaticString("Connection: close\r\n\r\n")
        } else if explicitKeepAlive {
            buffer.writeStaticString("Connection: keep-alive\r\n\r\n")
        } else {
            buffer.writeStaticString("\r\n")
        }
        return (framing, keepAlive)
    }

    /// Ends the head of an interim response (100 Continue, 101 Switching Protocols): no framing;
    /// a 101 says `Connection: upgrade` (the app's `Upgrade` field names the protocol).
    mutating func finishInterim() {
        if status == 101 { buffer.writeStaticString("Connection: upgrade\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// A complete short response the server makes itself (`detail`, if any, says what was wrong
    /// in one line); the connection closes after it.
    static func serverResponse(
        status: Int, reason: String, detail: String? = nil, extraFields: [(String, String)] = [], close: Bool = true
    ) -> ByteBuffer {
        var head = HTTPResponseHead.server(status: status, reason: reason)
        let body = "\(status) \(reason)" + (detail.map { ": \($0)" } ?? "") + "\n"
        try! head.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        for (name, value) in extraFields { try! head.add(name: name, value: value) }
        _ = head.finish(keepAlive: !close, explicitKeepAlive: false, isHEAD: false, http10: false, completeBody: body.utf8.count)
        var buffer = head.buffer
        buffer.writeString(body)
        return buffer
    }
}

/// `Date` header values (RFC 9110 §5.6.7), made once per second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, bytes: ByteBuffer)>((0, ByteBuffer()))

    static func write(into buffer: inout ByteBuffer) {
        let now = Int(Date().timeIntervalSince1970)
        var cached = cache.withLock { cached in cached.second == now ? cached.bytes : nil }
        if cached == nil {
            var time = time_t(now)
            var parts = tm()
            gmtime_r(&time, &parts)
            var text = [CChar](repeating: 0, count: 64)
            let length = strftime(&text, text.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
            var bytes = ByteBuffer()
            bytes.writeBytes(text.prefix(length).map { UInt8(bitPattern: $0) })
            cache.withLock { $0 = (now, bytes) }
            cached = bytes
        }
        buffer.writeImmutableBuffer(cached!)
    }
}
