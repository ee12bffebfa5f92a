import CPython

/// Memory owned by the host, shared by Swift and every interpreter it reaches: Python sees it
/// as `subinterp.SharedBuffer` and reads and writes it through `memoryview`. Passing it through
/// a queue or a call copies nothing. Access is not synchronized: coordinate writers yourself
/// (for example with a queue).
public final class SharedBuffer: Sendable, Hashable, CustomStringConvertible {
    /// The host buffer (`cpy_buffer *`), one reference owned by this object.
    nonisolated(unsafe) let handle: OpaquePointer

    /// A zero-filled buffer of `size` bytes.
    public init(size: Int) {
        precondition(size >= 0, "a SharedBuffer's size must be >= 0")
        guard let handle = cpy_buffer_create(size) else { fatalError("out of memory creating a SharedBuffer of \(size) bytes") }
        self.handle = handle
    }

    init(owning handle: OpaquePointer) {
        self.handle = handle
    }

    deinit { cpy_buffer_release(handle) }

    public var id: Int64 { cpy_buffer_id(handle) }
    public var count: Int { cpy_buffer_size(handle) }
    public var description: String { "SharedBuffer(id: \(id), size: \(count))" }
    public static func == (lhs: SharedBuffer, rhs: SharedBuffer) -> Bool { lhs.handle == rhs.handle }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Reads or writes the memory in place.
    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: cpy_buffer_data(handle), count: count))
    }
}
