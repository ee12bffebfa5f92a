import Foundation
import Subinterpreters

/// Starting worker processes: `posix_spawn` of this executable, never `fork()` of a process
/// that runs threads. Each child gets exactly the descriptors it is given, at the numbers it is
/// given (everything else this process holds is close-on-exec), an empty signal mask, and the
/// default action for the signals a supervisor traps.
enum ProcessSpawner {
    /// Starts `executable` with `arguments` (the first is `argv[0]`) and `environment`; each
    /// `(from, to)` in `descriptors` is this process's `from` as the child's `to`.
    static func spawn(
        executable: String, arguments: [String], environment: [String: String], descriptors: [(from: CInt, to: CInt)]
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Each descriptor goes through a number above every source and target first, so that
        // placing one never overwrites another still to be placed.
        let spare = (descriptors.flatMap { [$0.from, $0.to] }.max() ?? 2) + 1
        for (index, pair) in descriptors.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, pair.from, spare + CInt(index))
        }
        for (index, pair) in descriptors.enumerated() {
            // dup2 to another number clears close-on-exec on the copy.
            posix_spawn_file_actions_adddup2(&actions, spare + CInt(index), pair.to)
            posix_spawn_file_actions_addclose(&actions, spare + CInt(index))
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw SubinterpreterError(.runtimeFailed, "cannot start a worker process (\(executable)): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// A connected pair of `AF_UNIX` stream sockets, both close-on-exec.
    static func socketPair() throws -> (CInt, CInt) {
        var pair: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw SubinterpreterError(.runtimeFailed, "cannot create a control channel: \(String(cString: strerror(errno)))")
        }
        return (pair[0], pair[1])
    }

    /// Waits for `pid` to end on a thread of its own (blocked in `waitpid`, no polling) and
    /// then calls `exited` with how it ended.
    static func watch(_ pid: pid_t, exited: @escaping @Sendable (ExitStatus) -> Void) {
        let thread = Thread {
            var status: CInt = 0
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else {
                    exited(.unknown)
                    return
                }
            }
            exited(ExitStatus(waitStatus: status))
        }
        thread.name = "process-waiter"
        thread.stackSize = 256 << 10
        thread.start()
    }
}

/// How a process ended.
enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(CInt)
    case signalled(CInt)
    case unknown

    init(waitStatus status: CInt) {
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import (they are macros).
        let signal = status & 0x7F
        if signal == 0 {
            self = .exited((status >> 8) & 0xFF)
        } else if signal != 0x7F {
            self = .signalled(signal)
        } else {
            self = .unknown
        }
    }

    var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signalled(let signal): "was killed by \(Self.name(of: signal))"
        case .unknown: "ended"
        }
    }

    static func name(of signal: CInt) -> String {
        switch signal {
        case SIGSEGV: "SIGSEGV (a crash: segmentation fault)"
        case SIGBUS: "SIGBUS (a crash: bus error)"
        case SIGABRT: "SIGABRT (aborted)"
        case SIGFPE: "SIGFPE (a crash: arithmetic error)"
        case SIGILL: "SIGILL (a crash: illegal instruction)"
        case SIGKILL: "SIGKILL (killed; out of memory, or by hand)"
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        default: "signal \(signal)"
        }
    }
}
