import Foundation
import NIOCore

/// The server's side of the opening handshake (RFC 6455 §4.2.1, §4.2.2).
enum WebSocketHandshake {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Why a request that asks for a WebSocket is not a valid opening handshake.
    struct Refusal: Error, Sendable {
        /// 400, or 426 for a version other than 13 (answered with `Sec-WebSocket-Version: 13`).
        var status: Int
        var detail: String
    }

    /// The client's `Sec-WebSocket-Key` if `head` is a valid opening handshake: a GET in
    /// HTTP/1.1 without a body, with `Upgrade: websocket` and `Connection: upgrade` (which routed
    /// it here), one `Sec-WebSocket-Key` that is 16 bytes in base64, and version 13.
    static func validate(_ head: HTTPRequestHead) -> Result<String, Refusal> {
        guard head.methodIs("GET") else {
            return .failure(Refusal(status: 400, detail: "a WebSocket handshake must be a GET request"))
        }
        guard head.version.major == 1, head.version.minor >= 1 else {
            return .failure(Refusal(status: 400, detail: "a WebSocket handshake needs HTTP/1.1"))
        }
        guard !head.hasBody else {
            return .failure(Refusal(status: 400, detail: "a WebSocket handshake has no body"))
        }
        let keys = values(of: "sec-websocket-key", in: head)
        guard keys.count == 1, let key = keys.first, let decoded = Data(base64Encoded: key), decoded.count == 16 else {
            return .failure(Refusal(status: 400, detail: "the WebSocket handshake needs one Sec-WebSocket-Key: 16 random bytes in base64"))
        }
        let versions = values(of: "sec-websocket-version", in: head)
        guard versions == ["13"] else {
            return .failure(Refusal(status: 426, detail: "this server speaks WebSocket version 13 (Sec-WebSocket-Version: 13)"))
        }
        return .success(key)
    }

    /// `Sec-WebSocket-Accept` for a client's key.
    static func accept(key: String) -> String {
        Data(SHA1.hash(Array((key + guid).utf8))).base64EncodedString()
    }

    private static func values(of name: StaticString, in head: HTTPRequestHead) -> [String] {
        head.bytes.withUnsafeReadableBytes { raw in
            head.fields.compactMap { field -> String? in
                guard ASCII.equals(UnsafeRawBufferPointer(rebasing: raw[Int(field.name.start)..<Int(field.name.end)]), name, caseInsensitive: true)
                else { return nil }
                return head.latin1(field.value)
            }
        }
    }
}
