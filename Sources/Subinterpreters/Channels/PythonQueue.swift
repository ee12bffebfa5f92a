import CPython
import Dispatch
import Synchronization

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
    /// Swift waits registered with the queue now (for tests and diagnostics).
    var registeredWaits: Int { cpy_queue_registered_waits(handle) }

    public var description: String { "PythonQueue(id: \(id), maxsize: \(maxsize))" }
    public static func == (lhs: PythonQueue, rhs: PythonQueue) -> Bool { lhs.handle == rhs.handle }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Adds a value, waiting while the queue is full. Throws `.timedOut` if `timeout` passes
    /// first, `.cancelled` if the task is cancelled. No thread waits: the wait is registered
    /// with the queue, and a get that makes room completes it.
    public func put(_ value: PythonValue, timeout: Duration? = nil) async throws {
        let item = ItemPointer(pointer: try ItemCoding.encode(value))
        let wait = QueueWait(queue: self)
        _ = try await wait.run(timeout: timeout) { waiter in
            cpy_queue_put_async(self.handle, item.pointer, waiter) == 0 ? .done(nil) : .pending
        } withdrawn: {
            cpy_item_free(item.pointer)  // not queued: the item is still ours
        }
    }

    /// Adds a value if there is room; returns whether it was added.
    public func putNowait(_ value: PythonValue) throws -> Bool {
        let item = try ItemCoding.encode(value)
        if cpy_queue_put(handle, item, 0, 0, 0) == 0 { return true }
        cpy_item_free(item)
        return false
    }

    /// Removes and returns the oldest value, waiting while the queue is empty. Throws
    /// `.timedOut` if `timeout` passes first, `.cancelled` if the task is cancelled. No thread
    /// waits: the wait is registered with the queue, and the next put completes it.
    public func get(timeout: Duration? = nil) async throws -> PythonValue {
        let wait = QueueWait(queue: self)
        let item = try await wait.run(timeout: timeout) { waiter in
            var item: OpaquePointer?
            return cpy_queue_get_async(self.handle, &item, waiter) == 0 ? .done(item) : .pending
        } withdrawn: {}
        guard let item else { throw SubinterpreterError(.runtimeFailed, "a queue wait completed without an item") }
        return try ItemCoding.decode(item)
    }

    /// Removes and returns the oldest value, or nil if the queue is empty.
    public func getNowait() throws -> PythonValue? {
        var item: OpaquePointer?
        guard cpy_queue_get(handle, &item, 0, 0, 0) == 0, let item else { return nil }
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

}

/// An item's pointer, handed between the threads of one wait.
private struct ItemPointer: @unchecked Sendable {
    // Safe: the item is owned by exactly one side at a time (the caller, or the C queue).
    let pointer: OpaquePointer
}

/// One Swift wait on a queue: registered with the C queue (`cpy_waiter`), completed by the put
/// or get that satisfies it, or withdrawn when the task is cancelled or the timeout passes. No
/// thread blocks, so any number of tasks can wait at once.
private final class QueueWait: @unchecked Sendable {
    // Safe: `state` is a Mutex; `waiter` is written once in init; the C queue serializes the
    // rest (a registered waiter is completed or withdrawn exactly once, under the queue's lock).
    enum Start {
        case done(OpaquePointer?)
        case pending
    }

    private struct State {
        var continuation: CheckedContinuation<ItemPointer?, any Error>?
        /// Set once the C side holds the waiter (until then a cancellation only marks `ended`).
        var registered = false
        /// Why the wait must end early (cancelled or timed out), if it must.
        var ended: SubinterpreterError?
        var timer: DispatchWorkItem?
    }

    private let queue: PythonQueue
    private let state = Mutex(State())
    private var waiter: OpaquePointer!

    init(queue: PythonQueue) {
        self.queue = queue
        let context = Unmanaged.passUnretained(self).toOpaque()
        guard let waiter = cpy_waiter_create({ context, item in
            Unmanaged<QueueWait>.fromOpaque(context!).takeUnretainedValue().finish(.success(item.map(ItemPointer.init)))
        }, context) else { fatalError("out of memory creating a queue waiter") }
        self.waiter = waiter
    }

    deinit { cpy_waiter_free(waiter) }

    /// Starts the wait with `start` (which registers `waiter` unless it can finish at once) and
    /// returns what completes it. `withdrawn` runs if the wait ends without completing (for a
    /// put: the item is still the caller's).
    func run(
        timeout: Duration?, start: (OpaquePointer) -> Start, withdrawn: @escaping @Sendable () -> Void
    ) async throws -> OpaquePointer? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ItemPointer?, any Error>) in
                let early = state.withLock { state -> SubinterpreterError? in
                    if let ended = state.ended { return ended }
                    state.continuation = continuation
                    return nil
                }
                if let early {
                    withdrawn()
                    continuation.resume(throwing: early)
                    return
                }
                switch start(waiter) {
                case .done(let item):
                    finish(.success(item.map(ItemPointer.init)))
                case .pending:
                    let cancelled = state.withLock { state -> Bool in
                        state.registered = true
                        if state.ended == nil, let timeout {
                            let timer = DispatchWorkItem { [weak self] in
                                self?.end(SubinterpreterError(.timedOut, "the queue wait ended at its timeout"), withdrawn: withdrawn)
                            }
                            state.timer = timer
                            DispatchQueue.global().asyncAfter(deadline: .now() + timeout.timeInterval, execute: timer)
                        }
                        return state.ended != nil
                    }
                    // A cancellation that came while the waiter was being registered.
                    if cancelled { withdraw(withdrawn) }
                }
            }
        } onCancel: {
            end(SubinterpreterError(.cancelled, "the queue wait was cancelled"), withdrawn: withdrawn)
        }?.pointer
    }

    /// Ends the wait early, unless it completes first.
    private func end(_ error: SubinterpreterError, withdrawn: () -> Void) {
        let registered = state.withLock { state -> Bool in
            if state.ended == nil { state.ended = error }
            return state.registered
        }
        if registered { withdraw(withdrawn) }
    }

    private func withdraw(_ withdrawn: () -> Void) {
        var leftover: OpaquePointer?
        guard cpy_queue_withdraw(queue.handle, waiter, &leftover) == 1 else { return }  // completing now
        withdrawn()
        let error = state.withLock { $0.ended } ?? SubinterpreterError(.cancelled, "the queue wait was cancelled")
        finish(.failure(error))
    }

    private func finish(_ result: Result<ItemPointer?, any Error>) {
        let (continuation, timer) = state.withLock { state in
            defer {
                state.continuation = nil
                state.timer = nil
            }
            return (state.continuation, state.timer)
        }
        timer?.cancel()
        continuation?.resume(with: result)
    }
}

extension Duration {
    /// Seconds, for Dispatch and C.
    package var timeInterval: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
