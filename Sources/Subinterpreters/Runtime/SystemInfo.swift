import Foundation

/// Facts about this process and machine.
public enum SystemInfo {
    /// This library's version.
    public static let version = "0.1.0"

    /// CPUs this process may run on.
    public static var cpuCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Resident set size of this process in bytes, from /proc/self/statm; nil where unavailable.
    public static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
