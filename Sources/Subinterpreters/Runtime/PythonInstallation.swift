import Foundation

/// A CPython installation the runtime can load: where its shared libpython is and which
/// executable (possibly a virtual environment's) defines `sys.prefix` and site-packages.
public struct PythonInstallation: Sendable, Hashable, CustomStringConvertible {
    /// The executable as named; for a virtual environment, the environment's `bin/python`.
    public var executable: String
    /// The shared library that is loaded.
    public var library: String
    /// `(major, minor)`, e.g. `(3, 13)`.
    public var major: Int
    public var minor: Int
    /// The virtual environment, if `executable` belongs to one.
    public var virtualEnvironment: String?

    /// The environment variable that points at another Python: an executable or a virtual environment.
    public static let environmentVariable = "SUBINTERP_PYTHON"
    static let supportedMinors = 12...13

    public var version: String { "\(major).\(minor)" }
    public var description: String { "Python \(version) at \(executable) (\(library))" }

    /// Finds the Python to use: `explicit` if given, else `$SUBINTERP_PYTHON`, else the newest
    /// CPython 3.12 or 3.13 with a shared libpython on this machine (pyenv's, then the usual prefixes, then `PATH`).
    public static func find(
        explicit: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> PythonInstallation {
        if let explicit, !explicit.isEmpty {
            return try at(explicit, source: "--python")
        }
        if let named = environment[environmentVariable], !named.isEmpty {
            return try at(named, source: environmentVariable)
        }
        var seen: [String] = []
        var best: PythonInstallation?
        for executable in candidateExecutables(environment: environment) {
            guard let (major, minor) = versionFromName(executable) else { continue }
            let real = resolved(executable)
            guard let library = sharedLibrary(prefix: prefix(ofExecutable: real), major: major, minor: minor) else {
                seen.append("\(executable) (\(major).\(minor), no shared libpython)")
                continue
            }
            guard major == 3, supportedMinors.contains(minor) else {
                seen.append("\(executable) (\(major).\(minor), \(minor < 12 ? "too old" : "not supported yet"))")
                continue
            }
            if best == nil || minor > best!.minor {
                best = PythonInstallation(executable: real, library: library, major: major, minor: minor)
            }
        }
        if let best { return best }
        let found = seen.isEmpty ? "nothing" : seen.joined(separator: ", ")
        throw SubinterpreterError(
            .pythonNotFound,
            "no CPython 3.12 or 3.13 with a shared libpython was found (found: \(found)). "
                + "Install one built with --enable-shared (pyenv does: `pyenv install 3.13`), "
                + "or set \(environmentVariable) (or --python) to its python executable or virtual environment.")
    }

    /// The installation behind `path`: a python executable or a virtual environment directory.
    public static func at(_ path: String, source: String = "--python") throws -> PythonInstallation {
        let fm = FileManager.default
        var executable = (path as NSString).expandingTildeInPath
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: executable, isDirectory: &isDirectory) else {
            throw SubinterpreterError(
                .pythonNotFound, "\(source): \(path) does not exist; name a python executable or a virtual environment")
        }
        if isDirectory.boolValue {
            let inside = ["bin/python3", "bin/python"].map { (executable as NSString).appendingPathComponent($0) }
            guard let found = inside.first(where: { fm.isExecutableFile(atPath: $0) }) else {
                throw SubinterpreterError(
                    .pythonNotFound, "\(source): \(path) is a directory without bin/python3; name a python executable")
            }
            executable = found
        }
        executable = URL(fileURLWithPath: executable).standardizedFileURL.path
        guard fm.isExecutableFile(atPath: executable) else {
            throw SubinterpreterError(
                .pythonNotFound, "\(source): \(path) is not a Python executable; name a python executable or a virtual environment")
        }
        if let venv = virtualEnvironment(of: executable) {
            return try fromVirtualEnvironment(venv, executable: executable, source: source)
        }
        let real = resolved(executable)
        if let (major, minor) = versionFromName(real),
            let library = sharedLibrary(prefix: prefix(ofExecutable: real), major: major, minor: minor)
        {
            return try checked(PythonInstallation(executable: real, library: library, major: major, minor: minor), source)
        }
        return try askPython(executable, source: source)
    }

    // MARK: - Pieces

    private static func checked(_ installation: PythonInstallation, _ source: String) throws -> PythonInstallation {
        guard installation.major == 3, supportedMinors.contains(installation.minor) else {
            throw SubinterpreterError(
                .pythonNotFound,
                "\(source): \(installation.executable) is Python \(installation.version); sub-interpreters with their own GIL "
                    + "need CPython 3.12 or 3.13. Point \(source) at a newer Python.")
        }
        return installation
    }

    private static func fromVirtualEnvironment(_ venv: String, executable: String, source: String) throws -> PythonInstallation {
        let config = (try? String(contentsOfFile: (venv as NSString).appendingPathComponent("pyvenv.cfg"), encoding: .utf8)) ?? ""
        var values: [String: String] = [:]
        for line in config.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        guard let home = values["home"] else {
            throw SubinterpreterError(.pythonNotFound, "\(source): \(venv)/pyvenv.cfg has no 'home'; recreate the virtual environment")
        }
        let versionText = values["version_info"] ?? values["version"] ?? ""
        let numbers = versionText.split(separator: ".").compactMap { Int($0) }
        guard numbers.count >= 2 else {
            throw SubinterpreterError(.pythonNotFound, "\(source): \(venv)/pyvenv.cfg names no version; recreate the virtual environment")
        }
        let base = resolved((home as NSString).appendingPathComponent("python\(numbers[0]).\(numbers[1])"))
        guard let library = sharedLibrary(prefix: prefix(ofExecutable: base), major: numbers[0], minor: numbers[1]) else {
            throw SubinterpreterError(
                .pythonNotFound,
                "\(source): the Python behind \(venv) (\(home)) has no shared libpython; create the environment from a "
                    + "CPython built with --enable-shared")
        }
        return try checked(
            PythonInstallation(executable: executable, library: library, major: numbers[0], minor: numbers[1], virtualEnvironment: venv),
            source)
    }

    /// Asks the executable itself, for wrappers such as pyenv's shims whose name tells nothing.
    private static func askPython(_ executable: String, source: String) throws -> PythonInstallation {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "-c",
            "import sys, sysconfig; print(sys.version_info[0], sys.version_info[1]); print(sys.executable); "
                + "print(sysconfig.get_config_var('LIBDIR') or '')",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw SubinterpreterError(.pythonNotFound, "\(source): cannot run \(executable): \(error.localizedDescription)")
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let numbers = lines.first?.split(separator: " ").compactMap { Int($0) } ?? []
        guard process.terminationStatus == 0, lines.count >= 3, numbers.count == 2 else {
            throw SubinterpreterError(.pythonNotFound, "\(source): \(executable) is not a working python executable")
        }
        let real = lines[1].isEmpty ? executable : lines[1]
        if let venv = virtualEnvironment(of: real) {
            return try fromVirtualEnvironment(venv, executable: real, source: source)
        }
        let libraryDirectories = [lines[2]].filter { !$0.isEmpty }
        guard
            let library = sharedLibrary(prefix: prefix(ofExecutable: resolved(real)), major: numbers[0], minor: numbers[1], extra: libraryDirectories)
        else {
            try _ = checked(PythonInstallation(executable: real, library: "", major: numbers[0], minor: numbers[1]), source)
            throw SubinterpreterError(
                .pythonNotFound,
                "\(source): \(real) (Python \(numbers[0]).\(numbers[1])) has no shared libpython; use a CPython built with --enable-shared")
        }
        return try checked(PythonInstallation(executable: real, library: library, major: numbers[0], minor: numbers[1]), source)
    }

    static func virtualEnvironment(of executable: String) -> String? {
        let bin = (executable as NSString).deletingLastPathComponent
        for directory in [(bin as NSString).deletingLastPathComponent, bin] {
            if FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent("pyvenv.cfg")) {
                return directory
            }
        }
        return nil
    }

    static func candidateExecutables(environment: [String: String]) -> [String] {
        var directories: [String] = []
        let home = environment["HOME"] ?? NSHomeDirectory()
        let pyenvRoot = environment["PYENV_ROOT"] ?? (home as NSString).appendingPathComponent(".pyenv")
        let versions = (pyenvRoot as NSString).appendingPathComponent("versions")
        for version in ((try? FileManager.default.contentsOfDirectory(atPath: versions)) ?? []).sorted() {
            directories.append("\(versions)/\(version)/bin")
        }
        directories += ["/usr/local/bin", "/usr/bin"]
        directories += (environment["PATH"] ?? "").split(separator: ":").map(String.init)
            .filter { !$0.contains("/shims") }
        var result: [String] = []
        var seen = Set<String>()
        for directory in directories where seen.insert(directory).inserted {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            where versionFromName(name) != nil {
                result.append("\(directory)/\(name)")
            }
        }
        return result
    }

    /// `python3.13` → (3, 13); free-threaded `python3.13t` and other names → nil.
    static func versionFromName(_ path: String) -> (Int, Int)? {
        let name = (path as NSString).lastPathComponent
        guard name.hasPrefix("python") else { return nil }
        let parts = name.dropFirst("python".count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
        return (major, minor)
    }

    static func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }

    static func prefix(ofExecutable executable: String) -> String {
        ((executable as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
    }

    static func sharedLibrary(prefix: String, major: Int, minor: Int, extra: [String] = []) -> String? {
        var machine = utsname()
        uname(&machine)
        let arch = withUnsafeBytes(of: &machine.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let directories = extra + ["\(prefix)/lib", "\(prefix)/lib64", "\(prefix)/lib/\(arch)-linux-gnu"]
        let names = ["libpython\(major).\(minor).so.1.0", "libpython\(major).\(minor).so", "libpython\(major).\(minor).dylib"]
        for directory in directories {
            for name in names {
                let path = "\(directory)/\(name)"
                if FileManager.default.fileExists(atPath: path) { return path }
            }
        }
        return nil
    }
}
