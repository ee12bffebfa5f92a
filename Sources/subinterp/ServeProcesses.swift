import ArgumentParser
import Foundation
import Logging
import Subinterpreters
import SubinterpServer
import UnixSignals

/// `subinterp serve-worker`: one worker process of a supervisor, which starts it with its
/// settings, listening sockets and control channel in the environment. Not for users.
struct ServeWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve-worker", abstract: "A worker process of `subinterp serve` (started by it).", shouldDisplay: false)

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let settings = try failing({ try ServeSettings.from(environment: environment) }),
            let sockets = try failing({ try ServerSockets.inherited(from: environment) }),
            let control = environment[WorkerProcess.controlVariable].flatMap(CInt.init)
        else {
            printError("serve-worker is started by `subinterp serve --processes N`; run that instead")
            throw ExitCode(2)
        }
        let index = environment[WorkerProcess.indexVariable] ?? "0"
        // The app's own subprocesses are not worker processes.
        for name in [ServeSettings.environmentVariable, ServerSockets.environmentVariable, WorkerProcess.controlVariable, WorkerProcess.indexVariable] {
            unsetenv(name)
        }
        bootstrapLogging(settings.logLevel, metadata: ["process": "\(index)"])
        let logger = Logger(label: "subinterp.serve")
        let runtime = try failing { try PythonRuntime.start(PythonInstallation.find(explicit: settings.python)) }
        if let directory = settings.server.directory { _ = FileManager.default.changeCurrentDirectoryPath(directory) }
        // SIGHUP is the supervisor's: it replaces worker processes. Here it changes nothing.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let accessLog: (@Sendable (String) -> Void)? = settings.accessLog ? { @Sendable line in writeAccessLine(line) } : nil
        guard
            let worker = try await failing({
                try await WorkerProcess.start(
                    settings: settings, sockets: sockets, control: control, runtime: runtime, logger: logger, accessLog: accessLog)
            })
        else { throw ExitCode(1) }
        sockets.close()  // the server's listeners hold their own duplicates
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { for await _ in hangups {} }
            try await worker.run()
            tasks.cancelAll()
        }
        _ = runtime.finalize()
    }
}

/// `subinterp serve-supervisor`: a supervisor of worker processes that a one-process server
/// `exec`s when `--isolation auto` falls back to processes, with the sockets it had bound.
/// Not for users.
struct ServeSupervisor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve-supervisor", abstract: "The supervisor `subinterp serve` becomes (started by it).", shouldDisplay: false)

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let settings = try failing({ try ServeSettings.from(environment: environment) }),
            let sockets = try failing({ try ServerSockets.inherited(from: environment) })
        else {
            printError("serve-supervisor is started by `subinterp serve`; run that instead")
            throw ExitCode(2)
        }
        for name in [ServeSettings.environmentVariable, ServerSockets.environmentVariable] { unsetenv(name) }
        bootstrapLogging(settings.logLevel)
        if let directory = settings.server.directory { _ = FileManager.default.changeCurrentDirectoryPath(directory) }
        try await supervise(settings, sockets)
    }
}
