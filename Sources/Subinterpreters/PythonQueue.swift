import BigInt
import CPython
import Dispatch

/// A FIFO queue shared by Swift and every interpreter of the process: the same queue Python
/// code sees as `subinterp.Queue`. Values cross as `PythonValue`s (basic types natively,
/// other objects pickled; queues and shared buffers as themselves).
///
/// ```swift
/// let jobs = PythonQueue.named("jobs")          // Python: subinterp.queue("jobs")
/// try await jobs.put(["n": 1])
/// for try await result in PythonQueue.named("results").values { … }
/// ```
public final class PythonQueue: Sendable, Hashable, CustomStringConvertible {
    /// The host queue (`cpy_queue *`), one reference owned by this object. Safe to share: the
    /// C queue does its own locking.
    nonisolated(unsafe) let handle: OpaquePointer

    /// A new queue; `maxsize` <= 0 means unbounded.
    public init(maxsize: Int = 0) {
        guard let handle = cpy_queue_create(maxsize) else { fatalError("out of memory creating a queue") }
        self.handle = handle
    }

    /// Takes over one reference to `handle`.
    init(owning handle: OpaquePointer) {
        self.handle = handle
    }

    /// The process-wide queue with this name (Python: `subinterp.queue(name)`), created on first
    /// use with `maxsize`. Named queues live as long as the process.
    public static func named(_ name: String, maxsize: Int = 0) -> PythonQueue {
        guard let handle = cpy_queue_named(name, maxsize) else { fatalError("out of memory creating a queue") }
        return PythonQueue(owning: handle)
    }

    deinit { cpy_queue_release(handle) }

    /// The queue's process-wide id (`Queue.id` in Python).
    public var id: Int64 { cpy_queue_id(handle) }
    /// The most items it holds; 0 means no limit.
    public var maxsize: Int { cpy_queue_maxsize(handle) }
    /// Items queued now.
    public var count: Int { cpy_queue_count(handle) }

    public var description: String { "PythonQueue(id: \(id), maxsize: \(maxsize))" }
    public static func == (lhs: PythonQueue, rhs: PythonQueue) -> Bool { lhs.handle == rhs.handle }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Adds a value, waiting while the queue is full. Throws `.timedOut` if `timeout` passes
    /// first, `.cancelled` if the task is cancelled.
    public func put(_ value: PythonValue, timeout: Duration? = nil) async throws {
        let box = ItemBox()
        box.item = try ItemCoding.encode(value)
        if cpy_queue_put(handle, box.item, 0, 0, 0, nil) == 0 { return }
        let result = try await blocking { cancel in cpy_queue_put(self.handle, box.item, 1, Self.seconds(timeout), 0, cancel) }
        if result != 0 { cpy_item_free(box.item) }  // not queued: the item is still ours
        try Self.check(result, full: true)
    }

    /// Adds a value if there is room; returns whether it was added.
    public func putNowait(_ value: PythonValue) throws -> Bool {
        let item = try ItemCoding.encode(value)
        if cpy_queue_put(handle, item, 0, 0, 0, nil) == 0 { return true }
        cpy_item_free(item)
        return false
    }

    /// Removes and returns the oldest value, waiting while the queue is empty. Throws
    /// `.timedOut` if `timeout` passes first, `.cancelled` if the task is cancelled.
    public func get(timeout: Duration? = nil) async throws -> PythonValue {
        if let value = try getNowait() { return value }
        let box = ItemBox()
        let result = try await blocking { cancel in
            var item: OpaquePointer?
            let result = cpy_queue_get(self.handle, &item, 1, Self.seconds(timeout), 0, cancel)
            box.item = item
            return result
        }
        try Self.check(result, full: false)
        return try ItemCoding.decode(box.item!)
    }

    /// Removes and returns the oldest value, or nil if the queue is empty.
    public func getNowait() throws -> PythonValue? {
        var item: OpaquePointer?
        guard cpy_queue_get(handle, &item, 0, 0, 0, nil) == 0, let item else { return nil }
        return try ItemCoding.decode(item)
    }

    /// The values as they arrive, for `for try await`; ends when the iterating task is cancelled.
    public var values: Values { Values(queue: self) }

    public struct Values: AsyncSequence, Sendable {
        public typealias Element = PythonValue
        let queue: PythonQueue

        public struct AsyncIterator: AsyncIteratorProtocol {
            let queue: PythonQueue
            public mutating func next() async throws -> PythonValue? {
                do {
                    return try await queue.get()
                } catch let error as SubinterpreterError where error.code == .cancelled {
                    return nil
                }
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(queue: queue) }
    }

    // MARK: - Waiting off the Swift concurrency pool

    /// Carries an item to or from the thread that waits.
    private final class ItemBox: @unchecked Sendable {
        // Safe: written before the wait is handed off or by the waiting thread before the
        // continuation resumes, and read after.
        var item: OpaquePointer?
    }

    private static func seconds(_ timeout: Duration?) -> Double {
        guard let timeout else { return -1 }
        return max(0, Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
    }

    /// Runs a blocking C wait on a Dispatch thread, so no Swift concurrency thread blocks;
    /// cancelling the task sets the wait's cancel flag and wakes the queue's waiters.
    private func blocking(_ wait: @escaping @Sendable (OpaquePointer?) -> Int32) async throws -> Int32 {
        let cancel = CancelFlag()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: wait(cancel.handle)) }
            }
        } onCancel: {
            cancel.set()
            cpy_queue_wake_all(handle)
        }
    }

    private static func check(_ result: Int32, full: Bool) throws {
        switch result {
        case 0: return
        case CPY_WAIT_TIMEOUT:
            throw SubinterpreterError(.timedOut, full ? "the queue stayed full until the timeout" : "the queue stayed empty until the timeout")
        case CPY_WAIT_CANCELLED: throw SubinterpreterError(.cancelled, "the queue wait was cancelled")
        default: throw SubinterpreterError(.interpreterClosed, "the queue wait ended because its thread is closing")
        }
    }
}

/// A cancel flag shared with a waiting C call; it wakes the queue the call waits on.
private final class CancelFlag: Sendable {
    nonisolated(unsafe) let handle: OpaquePointer

    init() { handle = cpy_cancel_create() }
    deinit { cpy_cancel_free(handle) }

    func set() { cpy_cancel_set(handle) }
}

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

/// The item encoding of channels.h, for values made in Swift.
enum ItemCoding {
    static func encode(_ value: PythonValue) throws -> OpaquePointer {
        var bytes: [UInt8] = []
        var retained: [() -> Void] = []
        do {
            try write(value, into: &bytes, retained: &retained, depth: 0)
        } catch {
            for undo in retained { undo() }
            throw error
        }
        guard let item = bytes.withUnsafeBufferPointer({ cpy_item_create($0.baseAddress, $0.count) }) else {
            for undo in retained { undo() }
            throw SubinterpreterError(.runtimeFailed, "out of memory encoding a value")
        }
        return item
    }

    private static func write(_ value: PythonValue, into bytes: inout [UInt8], retained: inout [() -> Void], depth: Int) throws {
        guard depth < 512 else {
            throw SubinterpreterError(.invalidArgument, "value nested more than 512 levels deep; flatten it or pass it pickled")
        }
        func tag(_ t: Character) { bytes.append(t.asciiValue!) }
        func length(_ n: Int) { withUnsafeBytes(of: UInt64(n).littleEndian) { bytes.append(contentsOf: $0) } }
        func blob(_ t: Character, _ data: some Collection<UInt8>) {
            tag(t)
            length(data.count)
            bytes.append(contentsOf: data)
        }
        switch value {
        case .none: tag("N")
        case .bool(let b): tag(b ? "T" : "F")
        case .int(let n):
            if let small = Int64(exactly: n) {
                tag("i")
                withUnsafeBytes(of: small.littleEndian) { bytes.append(contentsOf: $0) }
            } else {
                blob("I", Array((n < 0 ? "-0x" + String(n.magnitude, radix: 16) : "0x" + String(n, radix: 16)).utf8))
            }
        case .float(let d):
            tag("f")
            withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        case .string(let s): blob("s", Array(s.utf8))
        case .bytes(let b): blob("b", b)
        case .pickled(let p): blob("p", p)
        case .list(let items), .tuple(let items):
            if case .list = value { tag("l") } else { tag("t") }
            length(items.count)
            for item in items { try write(item, into: &bytes, retained: &retained, depth: depth + 1) }
        case .dict(let items):
            tag("d")
            length(items.count)
            for (key, item) in items {
                try write(key, into: &bytes, retained: &retained, depth: depth + 1)
                try write(item, into: &bytes, retained: &retained, depth: depth + 1)
            }
        case .queue(let queue):
            tag("Q")
            cpy_queue_retain(queue.handle)
            retained.append { cpy_queue_release(queue.handle) }
            withUnsafeBytes(of: UInt(bitPattern: UnsafeRawPointer(queue.handle))) { bytes.append(contentsOf: $0) }
        case .buffer(let buffer):
            tag("B")
            cpy_buffer_retain(buffer.handle)
            retained.append { cpy_buffer_release(buffer.handle) }
            withUnsafeBytes(of: UInt(bitPattern: UnsafeRawPointer(buffer.handle))) { bytes.append(contentsOf: $0) }
        }
    }

    /// Decodes and frees an item; its handles move to the new values.
    static func decode(_ item: OpaquePointer) throws -> PythonValue {
        let data = UnsafeBufferPointer(start: cpy_item_data(item), count: cpy_item_size(item))
        var offset = 0
        defer { cpy_item_free_decoded(item) }
        return try read(data, &offset)
    }

    private static func read(_ data: UnsafeBufferPointer<UInt8>, _ offset: inout Int) throws -> PythonValue {
        func corrupt() -> SubinterpreterError { SubinterpreterError(.runtimeFailed, "corrupt item in a queue") }
        func word() throws -> UInt64 {
            guard offset + 8 <= data.count else { throw corrupt() }
            var value: UInt64 = 0
            for i in (0..<8).reversed() { value = value << 8 | UInt64(data[offset + i]) }
            offset += 8
            return value
        }
        func blob() throws -> ArraySlice<UInt8> {
            let n = Int(try word())
            guard offset + n <= data.count else { throw corrupt() }
            defer { offset += n }
            return ArraySlice(data[offset..<offset + n])
        }
        guard offset < data.count else { throw corrupt() }
        let tag = Character(UnicodeScalar(data[offset]))
        offset += 1
        switch tag {
        case "N": return .none
        case "T": return .bool(true)
        case "F": return .bool(false)
        case "i": return .int(BigInt(Int64(bitPattern: try word())))
        case "f": return .float(Double(bitPattern: try word()))
        case "I":
            let text = String(decoding: try blob(), as: UTF8.self)
            let negative = text.hasPrefix("-")
            guard let magnitude = BigInt(text.dropFirst(negative ? 3 : 2), radix: 16) else { throw corrupt() }
            return .int(negative ? -magnitude : magnitude)
        case "s": return .string(String(decoding: try blob(), as: UTF8.self))
        case "b": return .bytes(Array(try blob()))
        case "p": return .pickled(Array(try blob()))
        case "l", "t":
            let count = Int(try word())
            var items: [PythonValue] = []
            items.reserveCapacity(min(count, 1 << 16))
            for _ in 0..<count { items.append(try read(data, &offset)) }
            return tag == "l" ? .list(items) : .tuple(items)
        case "d":
            let count = Int(try word())
            var items: [(key: PythonValue, value: PythonValue)] = []
            for _ in 0..<count { items.append((try read(data, &offset), try read(data, &offset))) }
            return .dict(items)
        case "Q", "B":
            guard let pointer = OpaquePointer(bitPattern: UInt(truncatingIfNeeded: try word())) else { throw corrupt() }
            return tag == "Q" ? .queue(PythonQueue(owning: pointer)) : .buffer(SharedBuffer(owning: pointer))
        default:
            throw corrupt()
        }
    }
}
