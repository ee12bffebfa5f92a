import NIOCore
import Synchronization

/// Sends gathered on one thread and carried to their connections' event loops together: one hop
/// per event loop for the lot, rather than one per send. `HTTPExchange.send(…, batch:)` adds to
/// it, and its owner calls `flush()`: an ASGI worker does once per turn of its event loop, so the
/// responses one turn made cost one wake-up of each NIO loop.
final class HTTPSendBatch: Sendable {
    private let pending = Mutex<[(loop: any EventLoop, work: [@Sendable () -> Void])]>([])

    func add(on loop: any EventLoop, _ work: @escaping @Sendable () -> Void) {
        pending.withLock { pending in
            if let index = pending.firstIndex(where: { $0.loop === loop }) {
                pending[index].work.append(work)
            } else {
                pending.append((loop, [work]))
            }
        }
    }

    /// Hands everything gathered to its event loops, in the order it was added.
    func flush() {
        let taken = pending.withLock { pending -> [(loop: any EventLoop, work: [@Sendable () -> Void])] in
            guard !pending.isEmpty else { return [] }
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        for (loop, work) in taken {
            if work.count == 1 {
                loop.execute(work[0])
            } else {
                loop.execute { for item in work { item() } }
            }
        }
    }
}
