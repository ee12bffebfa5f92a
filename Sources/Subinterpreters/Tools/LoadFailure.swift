import Foundation

/// A failure to load the user's code (a `subinterp map` function, a `subinterp serve` app) or to
/// run its setup, told as one clear line, with the traceback filtered to the user's own frames
/// for when more is asked for (`--log-level debug`).
///
/// The line names what was loaded, the exception's type and the first line of its message, and
/// the innermost frame in a file of the user's: `cannot load work:square: ZeroDivisionError:
/// division by zero (work.py, line 3, in <module>)`. Frames of this library's Python, of the
/// import machinery and of the tools' own setup code never appear.
package struct LoadFailure: Sendable, Equatable {
    /// Whose code runs under the file name `<setup>`.
    package enum Setup: Sendable, Equatable {
        /// The tool's own (the WSGI adapter): its frames are hidden like this library's.
        case tool
        /// The user's, given with this option (`--setup`): a failure in it is blamed on it.
        case option(String)
    }

    /// One line, without the program's name in front.
    package var summary: String
    /// The exception and the user's innermost frame, without what was loaded: `ZeroDivisionError:
    /// division by zero (work.py, line 3, in <module>)`, for callers that phrase their own line.
    package var detail: String
    /// The traceback, only the user's frames; empty if Python gave none.
    package var traceback: String

    package init(_ error: SubinterpreterError, loading target: String, setup: Setup = .tool) {
        guard let exception = error.pythonException else {
            summary = "cannot load \(target): \(error.message)"
            detail = error.message
            traceback = ""
            return
        }
        let user = exception.frames.filter { !$0.filename.hasPrefix("<") }
        let setupFrames = exception.frames.filter { $0.filename == "<setup>" }
        var place = user.last.map { " (\(Self.shortPath($0.filename)), line \($0.line), in \($0.function))" } ?? ""
        let what: String
        if error.code == .incompatibleExtensionModule, let module = error.moduleName {
            what = "extension module '\(module)' does not support loading in sub-interpreters "
                + "(it needs multi-phase init and per-interpreter GIL support); check your imports with `subinterp check`"
            place = ""
        } else {
            let message = exception.message.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
            what = message.isEmpty ? exception.typeName : "\(exception.typeName): \(message)"
        }
        detail = "\(what)\(place)"
        if case .option(let option) = setup, let line = setupFrames.last?.line {
            if place.isEmpty { place = " (line \(line) of \(option))" }
            summary = "the \(option) code failed: \(what)\(place)"
        } else {
            summary = "cannot load \(target): \(what)\(place)"
        }
        var lines = exception.traceback.split(separator: "\n", omittingEmptySubsequences: false)
        if setup == .tool {
            lines.removeAll { $0.trimmingCharacters(in: .whitespaces).hasPrefix("File \"<setup>\"") }
        }
        traceback = lines.joined(separator: "\n").trimmingSuffixNewlines()
    }

    /// A path relative to the current directory when it is under it.
    static func shortPath(_ path: String) -> String {
        let directory = FileManager.default.currentDirectoryPath
        guard path.hasPrefix(directory + "/") else { return path }
        return String(path.dropFirst(directory.count + 1))
    }
}
