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

