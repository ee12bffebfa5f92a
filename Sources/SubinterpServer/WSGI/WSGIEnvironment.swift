import NIOCore
import Subinterpreters

/// The per-request part of a PEP 3333 environ, made from the raw request head in Swift (the
/// worker's Python adds the constant keys and `wsgi.input`).
///
/// - Every value is the raw bytes decoded as Latin-1, as PEP 3333 asks (`caf\xc3\xa9` arrives as
///   `'cafÃ©'`, so `value.encode('latin-1').decode('utf-8')` gives back `'café'`).
/// - `PATH_INFO` is the path percent-decoded, as Latin-1; `QUERY_STRING` is the raw query. A
///   fragment never reaches either. For an absolute-form target (`GET http://host/p?q`), the
///   path and query come from the target and `HTTP_HOST` is its authority (RFC 9112 §3.2.2).
/// - Header names containing `_` are dropped (as gunicorn >= 22 does): `X_Forwarded_For` would
///   otherwise arrive as `HTTP_X_FORWARDED_FOR` and pass for the header a proxy sets, and
///   `Content_Length` would override `CONTENT_LENGTH`.
/// - Repeated headers are joined with `,` in one key.
/// - The body is always complete: `CONTENT_LENGTH` is its real length when it came chunked, and
///   `Transfer-Encoding` is not passed on (`wsgi.input_terminated` is True).
enum WSGIEnvironment {
    static func items(for request: HTTPRequest) -> [(key: PythonValue, value: PythonValue)] {
        let head = request.head
        var items: [(key: PythonValue, value: PythonValue)] = []
        items.reserveCapacity(head.fields.count + 12)
        items.append(("REQUEST_METHOD", .string(head.methodString)))
        switch head.targetForm {
        case .asterisk:
            items.append(("PATH_INFO", "*"))
        case .origin, .absolute:
            items.append(("PATH_INFO", .string(head.path.isEmpty ? "/" : percentDecodedLatin1(head, head.path))))
        }
        items.append(("QUERY_STRING", .string(head.query.map { head.latin1($0) } ?? "")))
        items.append(("SERVER_PROTOCOL", .string(head.version.description)))
        let connection = request.connection
        items.append(("SERVER_NAME", .string(connection.localHost)))
        items.append(("SERVER_PORT", .string(String(connection.localPort))))
        items.append(("REMOTE_ADDR", .string(connection.remoteHost)))
        items.append(("REMOTE_PORT", .string(String(connection.remotePort))))
        let bodyLength = request.body.readableBytes
        if head.isChunked || bodyLength > 0 || head.contentLength != nil {
            items.append(("CONTENT_LENGTH", .string(String(bodyLength))))
        }
        var authority: HeadRange?
        if case .absolute(let range) = head.targetForm {
            authority = range
            items.append(("HTTP_HOST", .string(head.latin1(range))))
        }
        let headerStart = items.count
        head.bytes.withUnsafeReadableBytes { raw in
            for field in head.fields {
                switch field.kind {
                case .contentLength, .transferEncoding:
                    continue
                case .host where authority != nil:
                    continue
                case .contentType:
                    items.append(("CONTENT_TYPE", .string(head.latin1(field.value))))
                    continue
                default:
                    break
                }
                let name = UnsafeRawBufferPointer(rebasing: raw[Int(field.name.start)..<Int(field.name.end)])
                if name.contains(UInt8(ascii: "_")) { continue }
                let key = PythonValue.string(environKey(name))
                let value = head.latin1(field.value)
                if let index = items[headerStart...].firstIndex(where: { $0.key == key }), case .string(let earlier) = items[index].value {
                    items[index].value = .string(earlier + "," + value)
                } else {
                    items.append((key, .string(value)))
                }
            }
        }
        return items
    }

    /// `HTTP_` and the name upper-cased with `-` as `_`.
    static func environKey(_ name: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: name.count + 5) { buffer in
            for (i, byte) in "HTTP_".utf8.enumerated() { buffer[i] = byte }
            for (i, byte) in name.enumerated() {
                var upper = byte
                if upper >= UInt8(ascii: "a") && upper <= UInt8(ascii: "z") { upper -= 0x20 }
                if upper == UInt8(ascii: "-") { upper = UInt8(ascii: "_") }
                buffer[i + 5] = upper
            }
            return name.count + 5
        }
    }

    /// The bytes at `range` with `%XY` escapes decoded (malformed ones kept as they are), as Latin-1.
    static func percentDecodedLatin1(_ head: HTTPRequestHead, _ range: HeadRange) -> String {
        head.bytes.withUnsafeReadableBytes { raw in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[Int(range.start)..<Int(range.end)])
            guard bytes.contains(UInt8(ascii: "%")) else { return Latin1.decode(bytes) }
            var decoded: [UInt8] = []
            decoded.reserveCapacity(bytes.count)
            var i = 0
            while i < bytes.count {
                if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let high = hex(bytes[i + 1]), let low = hex(bytes[i + 2]) {
                    decoded.append(high << 4 | low)
                    i += 3
                } else {
                    decoded.append(bytes[i])
                    i += 1
                }
            }
            return decoded.withUnsafeBytes { Latin1.decode($0) }
        }
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
