import BigInt
import Foundation

/// A Python value that can leave its interpreter: the basic types natively, anything else as
/// pickled bytes that are unpickled in the interpreter that receives them.
///
/// Conversion is exact-type: an `int` subclass such as an `IntEnum`, a `defaultdict` or a
/// `bytearray` crosses pickled, so it arrives as the same type.
public enum PythonValue: Sendable, Hashable {
    case none
    case bool(Bool)
    /// An `int` of any size.
    case int(BigInt)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PythonValue])
    case tuple([PythonValue])
    /// A `dict`, in insertion order. Keys may be any value that is hashable in Python.
    case dict([(key: PythonValue, value: PythonValue)])
    /// An object of another type, as `pickle.dumps` wrote it.
    case pickled([UInt8])
    /// A `subinterp.Queue`: the same queue on both sides.
    case queue(PythonQueue)
    /// A `subinterp.SharedBuffer`: the same memory on both sides, nothing copied.
    case buffer(SharedBuffer)

    public static func == (lhs: PythonValue, rhs: PythonValue) -> Bool {
        switch (lhs, rhs) {
        case (.none, .none): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.float(let a), .float(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.string(let a), .string(let b)): return a == b
        case (.bytes(let a), .bytes(let b)): return a == b
        case (.list(let a), .list(let b)): return a == b
        case (.tuple(let a), .tuple(let b)): return a == b
        case (.dict(let a), .dict(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.pickled(let a), .pickled(let b)): return a == b
        case (.queue(let a), .queue(let b)): return a == b
        case (.buffer(let a), .buffer(let b)): return a == b
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .none: hasher.combine(0)
        case .bool(let v): hasher.combine(1); hasher.combine(v)
        case .int(let v): hasher.combine(2); hasher.combine(v)
        case .float(let v): hasher.combine(3); hasher.combine(v.isNaN ? .nan : v)
        case .string(let v): hasher.combine(4); hasher.combine(v)
        case .bytes(let v): hasher.combine(5); hasher.combine(v)
        case .list(let v): hasher.combine(6); hasher.combine(v)
        case .tuple(let v): hasher.combine(7); hasher.combine(v)
        case .dict(let v):
            hasher.combine(8)
            for (key, value) in v {
                hasher.combine(key)
                hasher.combine(value)
            }
        case .pickled(let v): hasher.combine(9); hasher.combine(v)
        case .queue(let v): hasher.combine(10); hasher.combine(v)
        case .buffer(let v): hasher.combine(11); hasher.combine(v)
        }
    }
}

extension PythonValue {
    /// An `int`.
    public init(_ value: some BinaryInteger) { self = .int(BigInt(value)) }
    /// A `float`.
    public init(_ value: Double) { self = .float(value) }
    /// A `str`.
    public init(_ value: String) { self = .string(value) }

    /// The value of an `int` that fits in `Int`, else nil.
    public var intValue: Int? {
        if case .int(let v) = self { return Int(exactly: v) }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case .float(let v): return v
        case .int(let v): return Double(v)
        default: return nil
        }
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The items of a `list` or `tuple`, else nil.
    public var arrayValue: [PythonValue]? {
        switch self {
        case .list(let v), .tuple(let v): return v
        default: return nil
        }
    }

    /// Looks a key up in a `dict` (linear in its size), else nil.
    public subscript(key: PythonValue) -> PythonValue? {
        guard case .dict(let items) = self else { return nil }
        return items.first { $0.key == key }?.value
    }

    /// Builds a `dict` from string keys, in the order given.
    public static func dict(_ items: KeyValuePairs<String, PythonValue>) -> PythonValue {
        .dict(items.map { (key: .string($0.key), value: $0.value) })
    }
}

extension PythonValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .none }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(BigInt(value)) }
    public init(floatLiteral value: Double) { self = .float(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: PythonValue...) { self = .list(elements) }
    public init(dictionaryLiteral elements: (PythonValue, PythonValue)...) {
        self = .dict(elements.map { (key: $0.0, value: $0.1) })
    }
}

extension PythonValue: CustomStringConvertible {
    /// Roughly what Python's `repr` prints.
    public var description: String {
        switch self {
        case .none: return "None"
        case .bool(let v): return v ? "True" : "False"
        case .int(let v): return v.description
        case .float(let v):
            if v.isNaN { return "nan" }
            if v.isInfinite { return v < 0 ? "-inf" : "inf" }
            return v == v.rounded() && abs(v) < 1e16 ? String(format: "%.1f", v) : "\(v)"
        case .string(let v): return "'\(v)'"
        case .bytes(let v):
            return "b'" + v.map { (32..<127).contains($0) && $0 != 39 && $0 != 92
                ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined() + "'"
        case .list(let v): return "[" + v.map(\.description).joined(separator: ", ") + "]"
        case .tuple(let v):
            return v.count == 1 ? "(\(v[0]),)" : "(" + v.map(\.description).joined(separator: ", ") + ")"
        case .dict(let v): return "{" + v.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .pickled(let v): return "<pickled, \(v.count) bytes>"
        case .queue(let q): return "subinterp.Queue(id=\(q.id), maxsize=\(q.maxsize))"
        case .buffer(let b): return "subinterp.SharedBuffer(id=\(b.id), size=\(b.count))"
        }
    }
}

// MARK: - Arguments from ordinary Swift values

extension PythonValue {
    /// The value for an `Encodable` Swift value: itself if it is a `PythonValue`, else what
    /// `PythonValueEncoder` makes of it (an array a `list`, a dictionary a `dict`, a struct a
    /// `dict` of its fields). The common scalar types skip the encoder.
    static func converting(_ value: any Encodable) throws -> PythonValue {
        switch value {
        case let value as PythonValue: return value
        case let value as String: return .string(value)
        case let value as Int: return .int(BigInt(value))
        case let value as Double: return .float(value)
        case let value as Bool: return .bool(value)
        default: return try PythonValueEncoder().encode(value)
        }
    }

    /// Positional arguments from a parameter pack of `Encodable` values.
    static func arguments<each Argument: Encodable>(_ values: repeat each Argument) throws -> [PythonValue] {
        var result: [PythonValue] = []
        for value in repeat each values { result.append(try converting(value)) }
        return result
    }

    /// Keyword arguments from `Encodable` values, in the order given.
    static func keywords(_ pairs: KeyValuePairs<String, any Encodable>) throws -> [(String, PythonValue)] {
        try pairs.map { ($0.key, try converting($0.value)) }
    }
}
