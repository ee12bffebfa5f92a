/// A request head (or WebSocket handshake) as the HTTP layer hands it to an ASGI worker,
/// already in the byte layout the worker reads (asgi.h): one copy into the worker's event, no
/// per-field allocations. Header names keep their case here; the worker lowercases them for
/// the scope.
struct ASGIRequestHead: Sendable {
    /// The encoded head.
    private(set) var bytes: [UInt8] = []
    private var headerCountOffset = 0
    private(set) var headerCount: UInt32 = 0
    /// The request target, for logs.
    let target: String

    /// - Parameters:
    ///   - target: the request target as received (`/path?query`, or absolute-form).
    ///   - version: `1.0`, `1.1` or `2`.
    ///   - scheme: `http`/`https` (or `ws`/`wss` for a WebSocket).
    ///   - server: the address the connection came in on, if known.
    ///   - client: the peer's address, if known.
    init(
        method: String, target: String, version: String = "1.1", scheme: String = "http",
        server: (host: String, port: Int)? = nil, client: (host: String, port: Int)? = nil
    ) {
        self.target = target
        bytes.reserveCapacity(256 + target.utf8.count)
        appendField(method.utf8)
        appendField(target.utf8)
        appendField(version.utf8)
        appendField(scheme.utf8)
        appendField((server?.host ?? "").utf8)
        appendInt(Int32(clamping: server?.port ?? -1))
        appendField((client?.host ?? "").utf8)
        appendInt(Int32(clamping: client?.port ?? -1))
        headerCountOffset = bytes.count
        appendInt(0)
    }

    /// Adds a header with the name and value exactly as received.
    mutating func addHeader(name: some Collection<UInt8>, value: some Collection<UInt8>) {
        appendField(name)
        appendField(value)
        headerCount += 1
        withUnsafeBytes(of: headerCount) { count in
            for (i, byte) in count.enumerated() { bytes[headerCountOffset + i] = byte }
        }
    }

    mutating func addHeader(name: String, value: String) {
        addHeader(name: name.utf8, value: value.utf8)
    }

    private mutating func appendField(_ field: some Collection<UInt8>) {
        appendInt(Int32(clamping: field.count))
        bytes.append(contentsOf: field)
    }

    private mutating func appendInt(_ value: Int32) {
        withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
    }
}
