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
/// The thread asks the registry before each accept. While the process has a free worker it
/// accepts at once. While every worker is busy it leaves a waiting connection in the shared
/// backlog, where a process with a free worker takes it; only when the connection is still
/// waiting after `busyPatience` (every process is busy, or the others keep their workers busy
/// with their keep-alive clients) does it take it itself, so no connection waits forever. It
/// sleeps in `poll` on the socket and a wake-up pipe that `stop()` and the registry's resume
/// write to: no polling loop.
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

    /// How long a connection may wait in the backlog, while every worker of this process is
    /// busy, before this process takes it anyway.
    static let busyPatience: Duration = .milliseconds(50)

    private func run() {
        var failures = 0
        /// When the socket was first seen with a connection waiting while no worker was free.
        var waitingSince: ContinuousClock.Instant?
        let resumePending = Atomic<Bool>(false)
        while !stopped.load(ordering: .acquiring) {
            let resume: @Sendable () -> Void = { [weak self] in
                resumePending.store(false, ordering: .relaxed)
                self?.wake()
            }
            // One resume registered at a time: a busy process can loop here many times.
            let admission: ConnectionRegistry.Admission
            if resumePending.load(ordering: .relaxed) {
                admission = registry.admissionNow
            } else {
                admission = registry.admission(orResume: resume)
                if admission != .open { resumePending.store(true, ordering: .relaxed) }
            }
            var watchSocket = admission == .open
            // After a failed accept (out of descriptors, say), retry in a moment rather than spin.
            var timeout: CInt = failures > 0 ? 100 : -1
            if admission == .workersBusy {
                if let since = waitingSince {
                    let left = Self.busyPatience - (ContinuousClock.now - since)
                    let milliseconds = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
                    timeout = left > .zero ? CInt(clamping: max(1, milliseconds)) : 0
                } else {
                    watchSocket = true  // to notice a connection waiting
                }
            } else {
                waitingSince = nil
            }
            var descriptors = [pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0)]
            if watchSocket { descriptors.append(pollfd(fd: socket.descriptor, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready < 0 && errno != EINTR {
                logger.error("accepting on \(socket.address) failed: \(String(cString: strerror(errno)))")
                return
            }
            if descriptors[0].revents != 0 {
                var bytes = [UInt8](repeating: 0, count: 64)
                while read(wakeup, &bytes, bytes.count) > 0 {}
            }
            if stopped.load(ordering: .acquiring) { return }
            let waiting = watchSocket && descriptors[1].revents != 0
            switch admission {
            case .closed:
                continue
            case .workersBusy:
                if waitingSince == nil {
                    if waiting { waitingSince = .now }
                    continue
                }
                // Patience over: take the connection if no other process has.
                guard ready == 0, Self.hasWaitingConnection(socket.descriptor) else {
                    if ready == 0 { waitingSince = nil }
                    continue
                }
                waitingSince = nil
            case .open:
                // A request may have taken the last free worker while this thread slept in `poll`.
                guard waiting || failures > 0, registry.admissionNow == .open else { continue }
            }
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

    /// Whether a connection waits in the socket's backlog now.
    private static func hasWaitingConnection(_ descriptor: CInt) -> Bool {
        var check = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&check, 1, 0) == 1
    }
}
