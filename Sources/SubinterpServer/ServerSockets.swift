import Foundation
import Subinterpreters

/// The listening sockets of `subinterp serve`: one per `--bind`, and the metrics endpoint's.
/// Bound before anything else starts (no Python, no worker), so a port in use is one line at
/// once; then handed to the server, to worker processes, or across an `exec`.
package struct ServerSockets: Sendable {
    let app: [ListeningSocket]
    let metrics: ListeningSocket?

    /// The environment variable naming inherited sockets: `FD=ADDRESS` pairs separated by
    /// commas, app sockets first; the metrics socket's address starts with `metrics=`.
    package static let environmentVariable = "SUBINTERP_LISTEN_FDS"

    /// Parses and binds every address; a problem is a one-line `.invalidArgument` error.
    package static func bind(binds: [String], metricsBind: String?, backlog: Int) throws -> ServerSockets {
        var bound: [ListeningSocket] = []
        do {
            let addresses = try binds.map { try ListenAddress(parsing: $0, flag: "--bind") }
            let metricsAddress = try metricsBind.map { try ListenAddress(parsing: $0, flag: "--metrics-bind") }
            for address in addresses { bound.append(try ListeningSocket.bind(address, backlog: backlog)) }
            let metrics = try metricsAddress.map { try ListeningSocket.bind($0, backlog: 64) }
            return ServerSockets(app: bound, metrics: metrics)
        } catch let error as ServerSetupError {
            for socket in bound { socket.close() }
            throw SubinterpreterError(.invalidArgument, error.description)
        }
    }

    /// The sockets a process inherited, as named by `SUBINTERP_LISTEN_FDS` in `environment`.
    /// Nil when the variable is not set.
    package static func inherited(from environment: [String: String]) throws -> ServerSockets? {
        guard let list = environment[environmentVariable], !list.isEmpty else { return nil }
        var app: [ListeningSocket] = []
        var metrics: ListeningSocket?
        for item in list.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let fd = CInt(parts[0]) else {
                throw SubinterpreterError(.invalidArgument, "\(environmentVariable) is malformed: '\(item)'")
            }
            let isMetrics = parts[1].hasPrefix("metrics=")
            let text = isMetrics ? String(parts[1].dropFirst("metrics=".count)) : parts[1]
            let address = try? ListenAddress(parsing: text, flag: "--bind")
            guard let address, let socket = ListeningSocket.inherited(fd, address: address) else {
                throw SubinterpreterError(
                    .invalidArgument, "descriptor \(fd) named in \(environmentVariable) is not a listening socket for \(text)")
            }
            if isMetrics { metrics = socket } else { app.append(socket) }
        }
        return ServerSockets(app: app, metrics: metrics)
    }

    /// `SUBINTERP_LISTEN_FDS`'s value for these sockets as descriptors `numbers` (one per socket,
    /// app sockets first), in a process that gets them there.
    func environmentValue(numbers: [CInt], includingMetrics: Bool) -> String {
        var items: [String] = []
        for (socket, number) in zip(app, numbers) { items.append("\(number)=\(socket.boundAddress.asGiven)") }
        if includingMetrics, let metrics, numbers.count > app.count {
            items.append("\(numbers[app.count])=metrics=\(metrics.boundAddress.asGiven)")
        }
        return items.joined(separator: ",")
    }

    /// The app sockets, then the metrics socket if any.
    var all: [ListeningSocket] { app + (metrics.map { [$0] } ?? []) }

    /// Closes this process's descriptors.
    package func close() {
        for socket in all { socket.close() }
    }

    /// Keeps every descriptor open across `exec` (clears close-on-exec).
    func inheritAcrossExec() {
        for socket in all { _ = fcntl(socket.descriptor, F_SETFD, 0) }
    }
}

extension ListenAddress {
    /// The address as `--bind` takes it back (`:PORT` for all interfaces).
    var asGiven: String {
        allInterfaces ? ":\(port)" : description
    }
}
