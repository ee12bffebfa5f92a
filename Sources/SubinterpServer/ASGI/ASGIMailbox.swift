import CPython

/// One ASGI worker's mailbox (asgi.c): any thread posts events, the worker's loop takes them
/// in batches and is woken only when it sleeps.
final class ASGIMailbox: @unchecked Sendable {
    // Safe: `pointer` never changes; every C function used on it takes the mailbox's own lock,
    // except `cpy_asgi_worker_destroy`, which runs in deinit, when nothing else can post.
    let pointer: OpaquePointer

    /// nil if the process is out of file descriptors or memory.
    init?(context: UnsafeMutableRawPointer) {
        guard let pointer = cpy_asgi_worker_create(context) else { return nil }
        self.pointer = pointer
    }

    deinit { cpy_asgi_worker_destroy(pointer) }

    /// Posts an event. `exchange`, if given, is a retained reference the worker takes over;
    /// if the event cannot be posted it is released here. Returns whether it was posted.
    @discardableResult
    func post(
        _ kind: Int32, flags: Int32 = 0, number: Int64 = 0, stream: OpaquePointer?, exchange: UnsafeMutableRawPointer? = nil,
        head: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
        payload: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) -> Bool {
        guard let event = cpy_asgi_event_create(kind, flags, number, stream, exchange, head.baseAddress, head.count, payload.baseAddress, payload.count)
        else {
            if let exchange { Unmanaged<ASGIExchange>.fromOpaque(exchange).release() }
            return false
        }
        if cpy_asgi_post(pointer, event) != 0 {
            cpy_asgi_event_free(event)
            return false
        }
        return true
    }

    /// Refuses further events; those already posted stay until the worker ends.
    func close() { cpy_asgi_worker_close(pointer) }

    /// Loop iterations so far.
    var progress: UInt64 { cpy_asgi_worker_progress(pointer) }

    /// Whether the loop waits in `select` rather than running Python.
    var isIdle: Bool { cpy_asgi_worker_idle(pointer) != 0 }

    /// Whether events wait for the loop to take them.
    var hasWaitingEvents: Bool { cpy_asgi_worker_waiting(pointer) != 0 }
}
