import NIOCore

/// `HTTP/1.0` or `HTTP/1.1` (a request that says `HTTP/1.x` with a higher minor version is
/// read as 1.1, as RFC 9110 §2.5 asks).
struct HTTPVersion: Sendable, Hashable, CustomStringConvertible {
    var major: Int
    var minor: Int

    var description: String { "HTTP/\(major).\(minor)" }
}

/// A byte range inside an `HTTPRequestHead`'s bytes (offsets from the start of the head).
struct HeadRange: Sendable, Hashable {
    var start: Int32
    var end: Int32

    init(_ start: Int, _ end: Int) {
        self.start = Int32(start)
        self.end = Int32(end)
    }

    var count: Int { Int(end - start) }
    var isEmpty: Bool { start == end }
}

/// One field line of a request head: where its name and its value (without the optional
/// whitespace around it) lie in the head's bytes.
struct HTTPField: Sendable, Hashable {
    /// The fields the HTTP layer itself reads; everything else is `.other`.
    enum Kind: UInt8, Sendable {
        case other, host, contentLength, contentType, transferEncoding, connection, expect, upgrade
    }

    var name: HeadRange
    var value: HeadRange
    var kind: Kind
}

/// How the request line names its target (RFC 9112 §3.2).
enum RequestTargetForm: Sendable, Hashable {
    /// `/path?query`
    case origin
    /// `http://authority/path?query`: `authority` is where the host is.
    case absolute(authority: HeadRange)
    /// `*`, for `OPTIONS` only.
    case asterisk
}

/// A parsed request head. It keeps the head's raw bytes and where each part lies in them, so no
/// `String` is made for a header on the way in; `String`s are made only when asked for.
struct HTTPRequestHead: Sendable {
    /// The bytes of the head, from the request line to the empty line that ends it.
    let bytes: ByteBuffer
    let version: HTTPVersion
    let method: HeadRange
    /// The request target exactly as sent.
    let target: HeadRange
    let targetForm: RequestTargetForm
    /// The path of the target (for the absolute form, what follows the authority; may be empty).
    let path: HeadRange
    /// The query, without its `?`; nil when the target has none. A fragment (`#…`) is never part of it.
    let query: HeadRange?
    let fields: [HTTPField]

    // Framing and connection handling, decided when the head was parsed.
    /// The declared body length; nil when the body is chunked or absent.
    let contentLength: Int?
    /// `Transfer-Encoding: chunked`.
    let isChunked: Bool
    /// Whether the client wants the connection kept open after this exchange (its version and
    /// `Connection` header); the server may still close it.
    let keepAlive: Bool
    /// HTTP/1.0 with `Connection: keep-alive`: the response must say it keeps the connection.
    let explicitKeepAlive: Bool
    /// `Expect: 100-continue` with a body to come.
    let expectsContinue: Bool
    /// `Connection: upgrade` with an `Upgrade` header: the client asks to switch protocols.
    let wantsUpgrade: Bool

    /// Whether the request has a body to read.
    var hasBody: Bool { isChunked || (contentLength ?? 0) > 0 }

    /// The bytes at `range`.
    func view(_ range: HeadRange) -> ByteBufferView {
        bytes.getSlice(at: bytes.readerIndex + Int(range.start), length: range.count)!.readableBytesView
    }

    /// The bytes at `range` as a `String` (they are ASCII wherever the parser allows a `String`).
    func string(_ range: HeadRange) -> String {
        bytes.getString(at: bytes.readerIndex + Int(range.start), length: range.count) ?? ""
    }

    /// The bytes at `range` decoded as Latin-1: every byte is one character, nothing is lost
    /// (PEP 3333's rule for header values).
    func latin1(_ range: HeadRange) -> String {
        bytes.withUnsafeReadableBytes { raw in
            Latin1.decode(UnsafeRawBufferPointer(rebasing: raw[Int(range.start)..<Int(range.end)]))
        }
    }

    var methodString: String { string(method) }
    var targetString: String { string(target) }

    /// Whether the method is exactly `name` (methods are case-sensitive).
    func methodIs(_ name: StaticString) -> Bool {
        bytes.withUnsafeReadableBytes { raw in
            ASCII.equals(UnsafeRawBufferPointer(rebasing: raw[Int(method.start)..<Int(method.end)]), name, caseInsensitive: false)
        }
    }

    var isHEAD: Bool { methodIs("HEAD") }

    /// The first field named `name` (case-insensitive), as Latin-1.
    func field(_ name: StaticString) -> String? {
        bytes.withUnsafeReadableBytes { raw in
            for field in fields
            where ASCII.equals(UnsafeRawBufferPointer(rebasing: raw[Int(field.name.start)..<Int(field.name.end)]), name, caseInsensitive: true) {
                return Latin1.decode(UnsafeRawBufferPointer(rebasing: raw[Int(field.value.start)..<Int(field.value.end)]))
            }
            return nil
        }
    }

    /// `METHOD target HTTP/x.y`, for the access log.
    var requestLine: String { "\(methodString) \(targetString) \(version)" }
}

/// Latin-1 (ISO 8859-1) decoding: byte N is U+00NN.
enum Latin1 {
    static func decode(_ bytes: UnsafeRawBufferPointer) -> String {
        // ASCII, by far the common case, is already valid UTF-8.
        if !bytes.contains(where: { $0 >= 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        var scalars = String.UnicodeScalarView()
        for byte in bytes { scalars.append(Unicode.Scalar(byte)) }
        return String(scalars)
    }

    /// Encodes `text` as Latin-1 into `buffer`; false (and nothing written) if it has a character
    /// above U+00FF.
    static func encode(_ text: String, into buffer: inout ByteBuffer) -> Bool {
        var text = text
        let wroteASCII = text.withUTF8 { utf8 -> Bool in
            guard !utf8.contains(where: { $0 >= 0x80 }) else { return false }
            buffer.writeBytes(utf8)
            return true
        }
        if wroteASCII { return true }
        let scalars = text.unicodeScalars
        guard scalars.allSatisfy({ $0.value <= 0xFF }) else { return false }
        for scalar in scalars { buffer.writeInteger(UInt8(scalar.value)) }
        return true
    }
}

/// Byte classes of RFC 9110 and comparisons of ASCII names.
enum ASCII {
    /// `tchar`: the characters of a token (methods, field names, codings).
    @inline(__always)
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// A byte allowed inside a field value: HTAB, SP, visible ASCII and obs-text (0x80–0xFF).
    /// NUL, CR, LF, the other control bytes and DEL are not.
    @inline(__always)
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
    }

    /// Whether `bytes` spell `name`; `name` must be lowercase when `caseInsensitive`.
    @inline(__always)
    static func equals(_ bytes: UnsafeRawBufferPointer, _ name: StaticString, caseInsensitive: Bool) -> Bool {
        guard bytes.count == name.utf8CodeUnitCount else { return false }
        let expected = name.utf8Start
        for i in 0..<bytes.count {
            var byte = bytes[i]
            if caseInsensitive, byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z") { byte |= 0x20 }
            if byte != expected[i] { return false }
        }
        return true
    }
}
