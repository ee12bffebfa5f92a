import Foundation
import Subinterpreters

/// `--isolation`: where `subinterp serve` runs the app.
public enum Isolation: String, Sendable, Codable, CaseIterable {
    /// Isolated sub-interpreters with their own GIL, `--workers` of them in each process.
    case interpreters
    /// The main interpreter of each worker process, one request at a time per process (what
    /// gunicorn's sync workers do), so every extension module loads.
    case processes
    /// `interpreters` if the app loads in one; if an extension module refuses, `processes`
    /// with as many processes as workers were asked for (and one warning line).
    case auto
}

extension AppInterface: Codable {}
extension ASGILifespanMode: Codable {}

/// Everything `subinterp serve` resolved from its flags and environment. A supervisor hands it
/// to each worker process (JSON in `SUBINTERP_SERVE_SETTINGS`); a server that falls back to
/// processes `exec`s a supervisor with it.
package struct ServeSettings: Codable, Sendable {
    /// The server as one process runs it; `workers` counts the interpreters of one process.
    package var server: AppServer.Configuration
    package var isolation: Isolation
    /// Worker processes (`--processes`); in processes isolation, every worker is a process.
    package var processes: Int
    /// The Python executable (or virtual environment's) every process uses.
    package var python: String?
    package var logLevel: String
    package var accessLog: Bool
    /// A worker process whose resident memory passes this is replaced (`--max-memory`).
    package var maxMemory: Int?

    package static let environmentVariable = "SUBINTERP_SERVE_SETTINGS"

    package init(
        server: AppServer.Configuration, isolation: Isolation, processes: Int, python: String?, logLevel: String,
        accessLog: Bool, maxMemory: Int?
    ) {
        self.server = server
        self.isolation = isolation
        self.processes = processes
        self.python = python
        self.logLevel = logLevel
        self.accessLog = accessLog
        self.maxMemory = maxMemory
    }

    /// Whether a supervisor runs the app in worker processes, rather than this process itself:
    /// several processes, processes isolation, or `--max-memory` (only a supervisor can
    /// replace a process that grew).
    package var supervised: Bool { processes > 1 || isolation == .processes || maxMemory != nil }

    /// Every worker, whichever isolation: processes × interpreters.
    package var totalWorkers: Int { processes * server.workers }

    /// The same app in processes isolation, with as many processes as workers were asked for:
    /// what `--isolation auto` serves when an extension module refuses sub-interpreters.
    package func fallingBackToProcesses() -> ServeSettings {
        var settings = self
        settings.processes = totalWorkers
        settings.server.workers = 1
        settings.isolation = .processes
        return settings
    }

    /// What one worker process runs: in processes isolation, one worker in the main
    /// interpreter, recycled as a process rather than as an interpreter; no metrics endpoint
    /// (the supervisor serves it).
    var workerConfiguration: AppServer.Configuration {
        var configuration = server
        configuration.metricsBind = nil
        configuration.processes = processes
        if isolation == .processes {
            configuration.workers = 1
            configuration.interpreterKind = .main
            configuration.maxRequests = nil
        }
        return configuration
    }

    /// `--max-requests` replaces the whole process in processes isolation (its one worker is the
    /// main interpreter), and an interpreter otherwise.
    var processMaxRequests: Int? { isolation == .processes ? server.maxRequests : nil }

    package func encoded() -> String {
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
    }

    /// The settings in `environment`, if `SUBINTERP_SERVE_SETTINGS` is there.
    package static func from(environment: [String: String]) throws -> ServeSettings? {
        guard let text = environment[environmentVariable] else { return nil }
        do {
            return try JSONDecoder().decode(ServeSettings.self, from: Data(text.utf8))
        } catch {
            throw SubinterpreterError(.invalidArgument, "\(environmentVariable) is not valid: \(error)")
        }
    }

    /// How the readiness line describes the workers.
    func describeWorkers(interface: String) -> String {
        let kind = interface.uppercased()
        if isolation == .processes {
            let each = interface == AppInterface.wsgi.rawValue ? "one request at a time each" : "one event loop each"
            return "\(processes) worker process\(processes == 1 ? "" : "es") (\(kind), \(each))"
        }
        let interpreters = "\(server.workers) worker interpreter\(server.workers == 1 ? "" : "s")"
        return processes == 1
            ? "\(interpreters) in 1 worker process (\(kind))"
            : "\(processes) processes × \(interpreters) (\(kind))"
    }
}
