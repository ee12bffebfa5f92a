import Foundation

@testable import SubinterpServer

/// A WebSocket client over `RawHTTP` that writes frames byte by byte, so tests can send what a
/// real client never would (unmasked frames, bad codes, fragments around control frames).
final class RawWebSocket {
    let http: RawHTTP
    /// The handshake's response (101 when it was accepted).
    let handshake: RawHTTP.Response?

    struct Frame: Equatable, CustomStringConvertible {
        var fin: Bool
        var opcode: UInt8
        var payload: [UInt8]
        var text: String { String(decoding: payload, as: UTF8.self) }
        /// For a close frame: its code (nil if it had none).
        var closeCode: Int? { payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil }
        var closeReason: String { String(decoding: payload.dropFirst(2), as: UTF8.self) }
        var description: String { "opcode \(opcode)\(fin ? "" : " (not fin)"): \(opcode == 8 ? "close \(closeCode.map(String.init) ?? "-") \(closeReason)" : text)" }
    }

    /// The key from RFC 6455's example, whose accept value is known.
    static let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="
    static let sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    /// Connects and sends the opening handshake for `path` (with `extraHeaders`, each ending in CRLF).
    init(port: Int, path: String, extraHeaders: String = "", timeout: Double = 15, receiveBuffer: Int? = nil) throws {
        http = try RawHTTP(port: port, timeout: timeout, receiveBuffer: receiveBuffer)
        http.send(
            "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(Self.sampleKey)\r\nSec-WebSocket-Version: 13\r\n\(extraHeaders)\r\n")
        handshake = http.response(head: true)
    }

    static func frame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | rsv << 4 | opcode]
        let mask: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(mask | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes.append(mask | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(mask | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: payload.count >> shift)) }
        }
        guard masked else { return bytes + payload }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        bytes += key
        for (i, byte) in payload.enumerated() { bytes.append(byte ^ key[i % 4]) }
        return bytes
    }

    func send(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) {
        http.send(Self.frame(opcode: opcode, payload, fin: fin, masked: masked, rsv: rsv))
    }

    func sendText(_ text: String) { send(opcode: 1, Array(text.utf8)) }

    func sendClose(code: Int, reason: String = "") {
        send(opcode: 8, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    /// The next frame from the server; nil if the connection closed or nothing came in time.
    func next() -> Frame? {
        let head = http.read(upTo: 2)
        guard head.count == 2 else { return nil }
        guard head[1] & 0x80 == 0 else { return Frame(fin: true, opcode: 0xFF, payload: Array("a server frame was masked".utf8)) }
        var length = Int(head[1] & 0x7F)
        if length == 126 {
            let extended = http.read(upTo: 2)
            guard extended.count == 2 else { return nil }
            length = Int(extended[0]) << 8 | Int(extended[1])
        } else if length == 127 {
            let extended = http.read(upTo: 8)
            guard extended.count == 8 else { return nil }
            length = extended.reduce(0) { $0 << 8 | Int($1) }
        }
        let payload = http.read(upTo: length)
        guard payload.count == length else { return nil }
        return Frame(fin: head[0] & 0x80 != 0, opcode: head[0] & 0x0F, payload: payload)
    }

    /// Reads until the server closes the connection; whether it did (not merely timed out).
    func closedByServer() -> Bool {
        http.readUntilClosed().result == .closed
    }
}
