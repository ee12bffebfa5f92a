import Foundation
import NIOCore

/// A listening TCP socket held as a plain descriptor: bound by this process, or inherited from
/// the process that bound it. Held this way (rather than only inside a NIO channel) so it can
/// be handed to NIO (`HTTPServer.adopt`), to worker processes, and across an `exec`: the port
/// stays bound the whole time, and connections wait in its backlog meanwhile.
///
/// The descriptor is close-on-exec; spawning a worker dups it to a fixed number in the child.
struct ListeningSocket: Sendable {
    /// The address as it was asked for (`--bind`).
    let address: ListenAddress
    let descriptor: CInt
    /// The address the socket is bound to (the port chosen, for port 0).
    let local: SocketAddress

    /// Resolves `address`, binds a socket to it (`SO_REUSEADDR`) and listens. Every failure is a
    /// `ServerSetupError` a user can act on.
    static func bind(_ address: ListenAddress, backlog: Int) throws -> ListeningSocket {
        let resolved: SocketAddress
        do {
            resolved = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
        } catch {
            throw ServerSetupError("cannot listen on \(address): unknown host \(address.host)")
        }
        let fd = socket(CInt(resolved.protocol.rawValue), CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerSetupError("cannot listen on \(address): \(Self.describe(errno))") }
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        let bound = resolved.withSockAddr { pointer, size in Glibc.bind(fd, pointer, socklen_t(size)) }
        guard bound == 0, listen(fd, CInt(clamping: backlog)) == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw ServerSetupError("cannot listen on \(address): \(Self.describe(code))")
        }
        return ListeningSocket(address: address, descriptor: fd, local: localAddress(of: fd) ?? resolved)
    }

    /// A listening socket this process inherited as `descriptor` (from a supervisor, or from
    /// the process it was `exec`ed from). Nil if the descriptor is not a listening TCP socket.
    static func inherited(_ descriptor: CInt, address: ListenAddress) -> ListeningSocket? {
        var listening: CInt = 0
        var size = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0, listening == 1,
            let local = localAddress(of: descriptor)
        else { return nil }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        return ListeningSocket(address: address, descriptor: descriptor, local: local)
    }

    /// `address` with the port the socket got (the same unless port 0 was asked for).
    var boundAddress: ListenAddress {
        var bound = address
        bound.port = local.port ?? address.port
        return bound
    }

    /// Closes this process's descriptor (the socket itself stays open while another process,
    /// or a NIO channel holding a dup of it, still has it).
    func close() {
        _ = Glibc.close(descriptor)
    }

    private static func localAddress(of fd: CInt) -> SocketAddress? {
        var storage = sockaddr_storage()
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let got = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) }
        }
        guard got == 0 else { return nil }
        switch CInt(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in.self)) }
        case AF_INET6:
            return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in6.self)) }
        default:
            return nil
        }
    }

    static func describe(_ code: CInt) -> String {
        switch code {
        case EADDRINUSE: "address already in use (another server is listening there; pick another port)"
        case EACCES: "permission denied (ports below 1024 need privileges)"
        case EADDRNOTAVAIL: "address not available (no interface of this machine has it)"
        default: String(cString: strerror(code)).lowercased()
        }
    }
}
