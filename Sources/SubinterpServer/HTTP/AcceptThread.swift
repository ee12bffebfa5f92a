import Foundation
import Logging
import NIOCore
import Synchronization

/// Accepts connections on a listening socket that several worker processes share, on a thread
/// of its own, and hands each to NIO.
///
/// Why not a NIO server channel: every process polls the same socket, so each new connection
/// wakes all of them and all but one find nothing to accept. NIO treats a readable listening
/// socket that yields nothing as a broken invariant (an assertion in debug builds), and it
/// gives no way to poll the socket exclusively. Here that case is ordinary: the thread goes
/// back to `poll`.
///
/// The thread asks the registry before each accept (the connection limit, and the free-worker
/// limit of a worker process); while it may not accept, it does not poll the socket at all, so
/// connections stay in the shared backlog for a process that has room. It sleeps in `poll` on
/// the socket and a wake-up pipe that `stop()` and the registry's resume write to: no polling
/// loop.
/// `socket` is the thread's own descriptor (a duplicate); it closes it when it ends.
final class AcceptThread: Sendable {
    private let socket: ListeningSocket
    /// The wake-up pipe: the thread reads `wakeup`, others write `wakeupWriter`.
    private let wakeup: CInt
    private let wakeupWriter: CInt
    private let registry: ConnectionRegistry
    private let logger: Logger
    /// Hands an accepted descriptor to NIO; returns once its channel is registered.
    private let connect: @Sendable (CInt) throws -> Void
    private let stopped = Atomic<Bool>(false)
    private let exited = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(socket: ListeningSocket, registry: ConnectionRegistry, logger: Logger, connect: @escaping @Sendable (CInt) throws -> Void) throws {
        var pipe: [CInt] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else {
            throw ServerSetupError("cannot listen on \(socket.address): \(ListeningSocket.describe(errno))")
        }
        for end in pipe {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, O_NONBLOCK)
        }
        // The socket's open file description is shared with the other processes; they all
        // accept this way, so non-blocking suits every one of them.
        _ = fcntl(socket.descriptor, F_SETFL, fcntl(socket.descriptor, F_GETFL) | O_NONBLOCK)
        self.socket = socket
        self.wakeup = pipe[0]
        self.wakeupWriter = pipe[1]
        self.registry = registry
        self.logger = logger
        self.connect = connect
    }

    func start() {
        let thread = Thread { [self] in
            run()
            let waiters = exited.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.done = true
                defer { state.waiters = [] }
                return state.waiters
            }
            close(wakeup)
            close(wakeupWriter)
            socket.close()
            for waiter in waiters { waiter.resume() }
        }
        thread.name = "accept"
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Stops accepting and returns once the thread has ended (no connection is accepted after).
    func stop() async {
        stopped.store(true, ordering: .releasing)
        wake()
        await withCheckedContinuation { continuation in
            let done = exited.withLock { state -> Bool in
                if !state.done { state.waiters.append(continuation) }
                return state.done
            }
            if done { continuation.resume() }
        }
    }

    /// A byte in the pipe wakes the thread; a full pipe already will.
    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeupWriter, &byte, 1)
    }

    private func run() {
        var failures = 0
        while !stopped.load(ordering: .acquiring) {
            let allowed = registry.mayAccept { [weak self] in self?.wake() }
            var descriptors = [pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0)]
            if allowed { descriptors.append(pollfd(fd: socket.descriptor, events: Int16(POLLIN), revents: 0)) }
            // After a failed accept (out of descriptors, say), retry in a moment rather than spin.
            let ready = poll(&descriptors, nfds_t(descriptors.count), failures > 0 ? 100 : -1)
            if ready < 0 && errno != EINTR {
                logger.error("accepting on \(socket.address) failed: \(String(cString: strerror(errno)))")
                return
            }
            if descriptors[0].revents != 0 {
                var bytes = [UInt8](repeating: 0, count: 64)
                while read(wakeup, &bytes, bytes.count) > 0 {}
            }
            // A request may have taken the last free worker while this thread slept in `poll`.
            guard allowed, ready > 0 || failures > 0, !stopped.load(ordering: .acquiring), registry.mayAcceptNow else { continue }
            let connection = accept(socket.descriptor, nil, nil)
            if connection < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO:
                    // Another process took it, or the client gave up first.
                    failures = 0
                default:
                    if failures == 0 { logger.error("cannot accept on \(socket.address): \(String(cString: strerror(errno)))") }
                    failures += 1
                }
                continue
            }
            failures = 0
            _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
            do {
                try connect(connection)
            } catch {
                logger.error("cannot serve a connection on \(socket.address): \(error)")
            }
        }
    }
}
