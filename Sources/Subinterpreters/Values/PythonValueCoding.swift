import BigInt
import Foundation

// MARK: - Encoder

/// Encodes `Encodable` values as ``PythonValue``s, in the shapes Python code naturally works with.
///
/// - Keyed containers (structs, classes, enums with associated values) become a `dict` with `str`
///   keys, in the order the values were encoded. Synthesized conformances leave nil optional
///   properties out; a value that encodes nothing inside another becomes an empty `dict`.
/// - Unkeyed containers (arrays, sets) become a `list`; `[UInt8]` is a list of ints too.
/// - `nil` becomes `None`, `Bool` a `bool`, every integer type an `int` (without overflow),
///   `Float` and `Double` a `float`, `String` a `str`.
/// - `Data` becomes `bytes`; `BigInt` and `BigUInt` an `int`; `Date` a `float` of seconds since
///   1970 (as `time.time()` gives); `URL` a `str` of its absolute string; `Decimal` a `str` of its
///   description (pass it to `decimal.Decimal`), so that no digit is lost.
/// - A ``PythonValue`` is stored as it is.
/// - A `Dictionary` becomes a `dict` whose keys are its keys encoded the same way (`str` for
///   `String`, `int` for `Int`, the raw value for a `RawRepresentable` enum, a `tuple` for an
///   array). Keys that are all `str` or all `int` are sorted, so the result is deterministic. A
///   dictionary whose keys encode to something unhashable in Python (a `dict`) falls back to
///   Swift's own form: a `list` alternating keys and values.
public struct PythonValueEncoder: Sendable {
    /// Values handed to `encode(to:)` implementations as `Encoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    /// Makes an encoder with an empty `userInfo`.
    public init() {}

    /// Encodes a value as a ``PythonValue``.
    ///
    /// - Throws: `EncodingError.invalidValue` if the value encodes nothing at all, and any error
    ///   the value's `encode(to:)` throws.
    public func encode(_ value: some Encodable) throws -> PythonValue {
        let node = _PVEncodingNode()
        try _PVEncodingContext(userInfo: userInfo).encode(value, into: node, at: [])
        guard !node.isEmpty else {
            throw EncodingError.invalidValue(
                value, EncodingError.Context(codingPath: [], debugDescription: "\(type(of: value)) did not encode any values."))
        }
        return node.finish()
    }
}

/// A value being encoded: empty, finished, or a keyed or unkeyed container whose children may
/// still change.
private final class _PVEncodingNode {
    private enum Kind { case empty, value, keyed, unkeyed }

    private var kind = Kind.empty
    private var value = PythonValue.none
    private var entries: [(key: String, node: _PVEncodingNode)] = []
    private var entryIndex: [String: Int] = [:]
    private var elements: [_PVEncodingNode] = []

    var isEmpty: Bool { kind == .empty }
    var count: Int { kind == .keyed ? entries.count : elements.count }

    private func become(_ newKind: Kind) {
        guard kind != newKind else { return }
        kind = newKind
        value = .none
        entries = []
        entryIndex = [:]
        elements = []
    }

    func set(_ newValue: PythonValue) {
        become(.value)
        value = newValue
    }

    /// Makes this a keyed container, keeping the entries if it already was one (as a subclass and
    /// its superclass share a container).
    func makeKeyed() { become(.keyed) }

    /// Makes this an unkeyed container, keeping the elements if it already was one.
    func makeUnkeyed() { become(.unkeyed) }

    /// The node for a key: a new one replacing any earlier value, or, when `reuse` is set, the
    /// existing one.
    func child(forKey key: String, reuse: Bool = false) -> _PVEncodingNode {
        makeKeyed()
        if let index = entryIndex[key] {
            if reuse { return entries[index].node }
            let node = _PVEncodingNode()
            entries[index].node = node
            return node
        }
        let node = _PVEncodingNode()
        entryIndex[key] = entries.count
        entries.append((key: key, node: node))
        return node
    }

    func append() -> _PVEncodingNode {
        makeUnkeyed()
        let node = _PVEncodingNode()
        elements.append(node)
        return node
    }

    func finish() -> PythonValue {
        switch kind {
        case .empty: return .dict([])
        case .value: return value
        case .keyed: return .dict(entries.map { (key: .string($0.key), value: $0.node.finish()) })
        case .unkeyed: return .list(elements.map { $0.finish() })
        }
    }
}

private struct _PVEncodingContext {
    let userInfo: [CodingUserInfoKey: Any]

    init(userInfo: [CodingUserInfoKey: any Sendable]) {
        self.userInfo = userInfo
    }

    func encode<T: Encodable>(_ value: T, into node: _PVEncodingNode, at path: [any CodingKey]) throws {
        if let special = value as? any _PVSpecialEncodable, let result = try special.pythonValue(context: self, at: path) {
            node.set(result)
            return
        }
        try value.encode(to: _PVEncoder(node: node, codingPath: path, context: self))
    }

    func value<T: Encodable>(of value: T, at path: [any CodingKey]) throws -> PythonValue {
        let node = _PVEncodingNode()
        try encode(value, into: node, at: path)
        return node.finish()
    }
}

/// A type with its own representation, taken before its `encode(to:)`; nil means "use
/// `encode(to:)` after all".
private protocol _PVSpecialEncodable {
    func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue?
}

extension PythonValue: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? { self }
}

extension Data: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        .bytes([UInt8](self))
    }
}

extension BigInt: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? { .int(self) }
}

extension BigUInt: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        .int(BigInt(self))
    }
}

extension Date: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        .float(timeIntervalSince1970)
    }
}

extension URL: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        .string(absoluteString)
    }
}

extension Decimal: _PVSpecialEncodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        .string(description)
    }
}

extension Dictionary: _PVSpecialEncodable where Key: Encodable, Value: Encodable {
    fileprivate func pythonValue(context: _PVEncodingContext, at path: [any CodingKey]) throws -> PythonValue? {
        var items: [(key: PythonValue, value: PythonValue)] = []
        items.reserveCapacity(count)
        for (key, value) in self {
            guard let pythonKey = try context.value(of: key, at: path).asPythonDictKey else { return nil }
            items.append((key: pythonKey, value: try context.value(of: value, at: path + [_PVKey(pythonKey: pythonKey)])))
        }
        if items.allSatisfy({ $0.key.stringValue != nil }) {
            items.sort { ($0.key.stringValue ?? "") < ($1.key.stringValue ?? "") }
        } else if items.allSatisfy({ $0.key.bigIntValue != nil }) {
            items.sort { ($0.key.bigIntValue ?? 0) < ($1.key.bigIntValue ?? 0) }
        }
        return .dict(items)
    }
}

extension PythonValue {
    /// The value as a key Python can hash: lists become tuples; nil if it holds a `dict`.
    fileprivate var asPythonDictKey: PythonValue? {
        switch self {
        case .none, .bool, .int, .float, .string, .bytes, .pickled, .queue, .buffer:
            return self
        case .list(let items), .tuple(let items):
            var keys: [PythonValue] = []
            keys.reserveCapacity(items.count)
            for item in items {
                guard let key = item.asPythonDictKey else { return nil }
                keys.append(key)
            }
            return .tuple(keys)
        case .dict:
            return nil
        }
    }

    fileprivate var bigIntValue: BigInt? {
        if case .int(let v) = self { return v }
        return nil
    }
}

private struct _PVEncoder: Encoder {
    let node: _PVEncodingNode
    let codingPath: [any CodingKey]
    let context: _PVEncodingContext

    var userInfo: [CodingUserInfoKey: Any] { context.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.makeKeyed()
        return KeyedEncodingContainer(_PVKeyedEncoder<Key>(node: node, codingPath: codingPath, context: context))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.makeUnkeyed()
        return _PVUnkeyedEncoder(node: node, codingPath: codingPath, context: context)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        _PVSingleValueEncoder(node: node, codingPath: codingPath, context: context)
    }
}

private struct _PVKeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: _PVEncodingNode
    let codingPath: [any CodingKey]
    let context: _PVEncodingContext

    private func set(_ value: PythonValue, forKey key: Key) {
        node.child(forKey: key.stringValue).set(value)
    }

    mutating func encodeNil(forKey key: Key) throws { set(.none, forKey: key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { set(.bool(value), forKey: key) }
    mutating func encode(_ value: String, forKey key: Key) throws { set(.string(value), forKey: key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { set(.float(value), forKey: key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { set(.float(Double(value)), forKey: key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: Int128, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }
    mutating func encode(_ value: UInt128, forKey key: Key) throws { set(.int(BigInt(value)), forKey: key) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try context.encode(value, into: node.child(forKey: key.stringValue), at: codingPath + [key])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        let child = node.child(forKey: key.stringValue, reuse: true)
        child.makeKeyed()
        return KeyedEncodingContainer(_PVKeyedEncoder<NestedKey>(node: child, codingPath: codingPath + [key], context: context))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = node.child(forKey: key.stringValue, reuse: true)
        child.makeUnkeyed()
        return _PVUnkeyedEncoder(node: child, codingPath: codingPath + [key], context: context)
    }

    mutating func superEncoder() -> any Encoder {
        _PVEncoder(node: node.child(forKey: _PVKey.super.stringValue), codingPath: codingPath + [_PVKey.super], context: context)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        _PVEncoder(node: node.child(forKey: key.stringValue), codingPath: codingPath + [key], context: context)
    }
}

private struct _PVUnkeyedEncoder: UnkeyedEncodingContainer {
    let node: _PVEncodingNode
    let codingPath: [any CodingKey]
    let context: _PVEncodingContext

    var count: Int { node.count }

    private var nextPath: [any CodingKey] { codingPath + [_PVKey(index: count)] }

    private func append(_ value: PythonValue) { node.append().set(value) }

    mutating func encodeNil() throws { append(.none) }
    mutating func encode(_ value: Bool) throws { append(.bool(value)) }
    mutating func encode(_ value: String) throws { append(.string(value)) }
    mutating func encode(_ value: Double) throws { append(.float(value)) }
    mutating func encode(_ value: Float) throws { append(.float(Double(value))) }
    mutating func encode(_ value: Int) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: Int8) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: Int16) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: Int32) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: Int64) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: Int128) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt8) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt16) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt32) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt64) throws { append(.int(BigInt(value))) }
    mutating func encode(_ value: UInt128) throws { append(.int(BigInt(value))) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let path = nextPath
        try context.encode(value, into: node.append(), at: path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = nextPath
        let child = node.append()
        child.makeKeyed()
        return KeyedEncodingContainer(_PVKeyedEncoder<NestedKey>(node: child, codingPath: path, context: context))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let path = nextPath
        let child = node.append()
        child.makeUnkeyed()
        return _PVUnkeyedEncoder(node: child, codingPath: path, context: context)
    }

    mutating func superEncoder() -> any Encoder {
        let path = nextPath
        return _PVEncoder(node: node.append(), codingPath: path, context: context)
    }
}

private struct _PVSingleValueEncoder: SingleValueEncodingContainer {
    let node: _PVEncodingNode
    let codingPath: [any CodingKey]
    let context: _PVEncodingContext

    mutating func encodeNil() throws { node.set(.none) }
    mutating func encode(_ value: Bool) throws { node.set(.bool(value)) }
    mutating func encode(_ value: String) throws { node.set(.string(value)) }
    mutating func encode(_ value: Double) throws { node.set(.float(value)) }
    mutating func encode(_ value: Float) throws { node.set(.float(Double(value))) }
    mutating func encode(_ value: Int) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: Int8) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: Int16) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: Int32) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: Int64) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: Int128) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt8) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt16) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt32) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt64) throws { node.set(.int(BigInt(value))) }
    mutating func encode(_ value: UInt128) throws { node.set(.int(BigInt(value))) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try context.encode(value, into: node, at: codingPath)
    }
}

// MARK: - Decoder

/// Decodes `Decodable` values from ``PythonValue``s, accepting what Python code naturally returns.
///
/// - A `dict` with `str` keys fills a keyed container (its order does not matter; an `int` key
///   also matches a coding key of the same digits). A missing key or `None` is nil for an
///   optional property.
/// - A `list` or a `tuple` fills an unkeyed container; so does `bytes`, as a sequence of ints.
/// - An `int` fills any integer type whose range holds it, and `Float` or `Double`; a `float`
///   fills `Float` or `Double`. A `bool` fills only `Bool`: Python's `True` is not taken for `1`.
/// - `bytes` (or a list of ints) fills `Data` and `[UInt8]`; an `int` fills `BigInt` and `BigUInt`;
///   a `float` or `int` fills `Date` as seconds since 1970; a `str` fills `URL`; a `str`, `int` or
///   `float` fills `Decimal`. A ``PythonValue`` is taken as it is.
/// - A `dict` fills a `Dictionary`, each key decoded as the dictionary's key type (so an `int`
///   key for `[Int: V]`); a `list` alternating keys and values is accepted too.
///
/// Errors are `DecodingError`s whose coding path leads to the value at fault and whose
/// description names the Python type found and the Swift type expected.
public struct PythonValueDecoder: Sendable {
    /// Values handed to `init(from:)` implementations as `Decoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    /// Makes a decoder with an empty `userInfo`.
    public init() {}

    /// Decodes a value of the given type from a ``PythonValue``.
    ///
    /// - Throws: `DecodingError` if the value does not have the shape the type needs, and any
    ///   error the type's `init(from:)` throws.
    public func decode<T: Decodable>(_ type: T.Type, from value: PythonValue) throws -> T {
        try _PVDecodingContext(userInfo: userInfo).decode(T.self, from: value, at: [])
    }
}

private struct _PVDecodingContext {
    let userInfo: [CodingUserInfoKey: Any]

    init(userInfo: [CodingUserInfoKey: any Sendable]) {
        self.userInfo = userInfo
    }

    func decode<T: Decodable>(_ type: T.Type, from value: PythonValue, at path: [any CodingKey]) throws -> T {
        if let special = T.self as? any _PVSpecialDecodable.Type,
            let result = try special.init(pythonValue: value, context: self, at: path) as? T
        {
            return result
        }
        return try T(from: _PVDecoder(value: value, codingPath: path, context: self, type: T.self))
    }

    /// The error for a value of the wrong Python type: `valueNotFound` for `None`, else
    /// `typeMismatch`.
    func mismatch(expected: String, for type: Any.Type, found value: PythonValue, at path: [any CodingKey]) -> DecodingError {
        mismatch(expected: expected, for: type, named: "\(type)", found: value, at: path)
    }

    func mismatch(
        expected: String, for type: Any.Type, named name: String, found value: PythonValue, at path: [any CodingKey]
    ) -> DecodingError {
        let context = DecodingError.Context(
            codingPath: path, debugDescription: "expected \(expected) for \(name), found \(value.foundDescription)")
        if case .none = value { return .valueNotFound(type, context) }
        return .typeMismatch(type, context)
    }

    func outOfRange(_ value: PythonValue, for type: Any.Type, at path: [any CodingKey]) -> DecodingError {
        .dataCorrupted(.init(codingPath: path, debugDescription: "\(value.foundDescription) is out of range for \(type)"))
    }

    func bool(_ value: PythonValue, at path: [any CodingKey]) throws -> Bool {
        guard case .bool(let v) = value else { throw mismatch(expected: "a bool", for: Bool.self, found: value, at: path) }
        return v
    }

    func string(_ value: PythonValue, at path: [any CodingKey]) throws -> String {
        guard case .string(let v) = value else { throw mismatch(expected: "a str", for: String.self, found: value, at: path) }
        return v
    }

    func integer<I: FixedWidthInteger>(_ value: PythonValue, as type: I.Type, at path: [any CodingKey]) throws -> I {
        guard case .int(let v) = value else { throw mismatch(expected: "an int", for: I.self, found: value, at: path) }
        guard let result = I(exactly: v) else { throw outOfRange(value, for: I.self, at: path) }
        return result
    }

    func floatingPoint<F: BinaryFloatingPoint>(_ value: PythonValue, as type: F.Type, at path: [any CodingKey]) throws -> F {
        let result: F
        switch value {
        case .float(let v):
            result = F(v)
            if v.isFinite && !result.isFinite { throw outOfRange(value, for: F.self, at: path) }
        case .int(let v):
            result = F(v)
            if !result.isFinite { throw outOfRange(value, for: F.self, at: path) }
        default:
            throw mismatch(expected: "a float or int", for: F.self, found: value, at: path)
        }
        return result
    }
}

/// A type decoded from its own representation rather than its `init(from:)`; nil means "use
/// `init(from:)` after all".
private protocol _PVSpecialDecodable {
    init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws
}

extension PythonValue: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        self = value
    }
}

extension Data: _PVSpecialDecodable {
    /// `bytes` directly; a list of ints through `init(from:)`.
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .bytes(let bytes) = value else { return nil }
        self.init(bytes)
    }
}

extension Array: _PVSpecialDecodable where Element == UInt8 {
    /// `bytes` directly; a list of ints through `init(from:)`.
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .bytes(let bytes) = value else { return nil }
        self = bytes
    }
}

extension BigInt: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .int(let v) = value else {
            throw context.mismatch(expected: "an int", for: BigInt.self, found: value, at: path)
        }
        self = v
    }
}

extension BigUInt: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .int(let v) = value else {
            throw context.mismatch(expected: "an int", for: BigUInt.self, found: value, at: path)
        }
        guard let result = BigUInt(exactly: v) else { throw context.outOfRange(value, for: BigUInt.self, at: path) }
        self = result
    }
}

extension Date: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        switch value {
        case .float, .int:
            self.init(timeIntervalSince1970: try context.floatingPoint(value, as: Double.self, at: path))
        default:
            throw context.mismatch(expected: "a float or int of seconds since 1970", for: Date.self, found: value, at: path)
        }
    }
}

extension URL: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .string(let string) = value else {
            throw context.mismatch(expected: "a str", for: URL.self, found: value, at: path)
        }
        guard let url = URL(string: string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "str '\(string)' is not a valid URL"))
        }
        self = url
    }
}

extension Decimal: _PVSpecialDecodable {
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        switch value {
        case .string(let string):
            guard Self.isPlainNumber(string) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: path, debugDescription: "\(value.foundDescription) is not a decimal number for Decimal"))
            }
            guard let decimal = Decimal(string: string, locale: Locale(identifier: "en_US_POSIX")) else {
                throw context.outOfRange(value, for: Decimal.self, at: path)
            }
            self = decimal
        case .int(let v):
            guard let decimal = Decimal(string: v.description, locale: Locale(identifier: "en_US_POSIX")) else {
                throw context.outOfRange(value, for: Decimal.self, at: path)
            }
            self = decimal
        case .float(let v):
            guard v.isFinite else { throw context.outOfRange(value, for: Decimal.self, at: path) }
            self.init(v)
        default:
            throw context.mismatch(expected: "a str, int or float", for: Decimal.self, found: value, at: path)
        }
    }

    /// Whether the whole string is a number in the form `Decimal(string:)` reads: an optional
    /// sign, digits with an optional point, and an optional exponent. (`Decimal(string:)` alone
    /// accepts any string that merely starts with a number.)
    private static func isPlainNumber(_ string: String) -> Bool {
        var rest = string.utf8[...]
        func skipSign() {
            if rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: "-") { rest = rest.dropFirst() }
        }
        func skipDigits() -> Int {
            let count = rest.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }.count
            rest = rest.dropFirst(count)
            return count
        }
        skipSign()
        var digits = skipDigits()
        if rest.first == UInt8(ascii: ".") {
            rest = rest.dropFirst()
            digits += skipDigits()
        }
        guard digits > 0 else { return false }
        if rest.first == UInt8(ascii: "e") || rest.first == UInt8(ascii: "E") {
            rest = rest.dropFirst()
            skipSign()
            guard skipDigits() > 0 else { return false }
        }
        return rest.isEmpty
    }
}

extension Dictionary: _PVSpecialDecodable where Key: Decodable, Value: Decodable {
    /// A `dict` with keys of any type; anything else through `init(from:)`, which takes a list
    /// alternating keys and values.
    fileprivate init?(pythonValue value: PythonValue, context: _PVDecodingContext, at path: [any CodingKey]) throws {
        guard case .dict(let items) = value else { return nil }
        self.init(minimumCapacity: items.count)
        for item in items {
            let itemPath = path + [_PVKey(pythonKey: item.key)]
            let key = try context.decode(Key.self, from: item.key, at: itemPath)
            updateValue(try context.decode(Value.self, from: item.value, at: itemPath), forKey: key)
        }
    }
}

private struct _PVDecoder: Decoder {
    let value: PythonValue
    let codingPath: [any CodingKey]
    let context: _PVDecodingContext
    /// The type being decoded, for error messages.
    let type: Any.Type

    var userInfo: [CodingUserInfoKey: Any] { context.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .dict(let items) = value else {
            throw context.mismatch(expected: "a dict", for: self.type, found: value, at: codingPath)
        }
        return KeyedDecodingContainer(_PVKeyedDecoder<Key>(items: items, codingPath: codingPath, context: context))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard let elements = value.unkeyedElements else {
            throw context.mismatch(expected: "a list or tuple", for: type, found: value, at: codingPath)
        }
        return _PVUnkeyedDecoder(elements: elements, codingPath: codingPath, context: context)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        _PVSingleValueDecoder(value: value, codingPath: codingPath, context: context)
    }
}

extension PythonValue {
    /// The elements of a `list` or `tuple`, or the bytes of `bytes` as ints.
    fileprivate var unkeyedElements: [PythonValue]? {
        switch self {
        case .list(let v), .tuple(let v): return v
        case .bytes(let v): return v.map { .int(BigInt($0)) }
        default: return nil
        }
    }

    /// The Python type and a shortened repr, for error messages: "str 'abc'".
    fileprivate var foundDescription: String {
        let typeName: String
        switch self {
        case .none: return "None"
        case .pickled(let v): return "a pickled object (\(v.count) bytes)"
        case .queue: return "a subinterp.Queue"
        case .buffer: return "a subinterp.SharedBuffer"
        case .bool: typeName = "bool"
        case .int: typeName = "int"
        case .float: typeName = "float"
        case .string: typeName = "str"
        case .bytes: typeName = "bytes"
        case .list: typeName = "list"
        case .tuple: typeName = "tuple"
        case .dict: typeName = "dict"
        }
        let repr = description
        let limit = 60
        return typeName + " " + (repr.count > limit ? repr.prefix(limit) + "…" : repr)
    }
}

private struct _PVKeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let items: [(key: PythonValue, value: PythonValue)]
    let codingPath: [any CodingKey]
    let context: _PVDecodingContext
    /// The values by `str` key, and by the digits of `int` keys that no `str` key shadows.
    private let lookup: [String: PythonValue]

    init(items: [(key: PythonValue, value: PythonValue)], codingPath: [any CodingKey], context: _PVDecodingContext) {
        self.items = items
        self.codingPath = codingPath
        self.context = context
        var lookup: [String: PythonValue] = [:]
        for item in items {
            if case .string(let key) = item.key { lookup[key] = item.value }
        }
        for item in items {
            if case .int(let key) = item.key, lookup[key.description] == nil { lookup[key.description] = item.value }
        }
        self.lookup = lookup
    }

    var allKeys: [Key] {
        items.compactMap { item in
            switch item.key {
            case .string(let key): return Key(stringValue: key)
            case .int(let key): return Int(exactly: key).flatMap { Key(intValue: $0) } ?? Key(stringValue: key.description)
            default: return nil
            }
        }
    }

    func contains(_ key: Key) -> Bool { lookup[key.stringValue] != nil }

    private func value(forKey key: Key) throws -> PythonValue {
        guard let value = lookup[key.stringValue] else {
            let keys = items.prefix(10).map(\.key.description).joined(separator: ", ")
            let more = items.count > 10 ? ", …" : ""
            throw DecodingError.keyNotFound(
                key,
                .init(
                    codingPath: codingPath,
                    debugDescription: "no key '\(key.stringValue)' in dict with keys [\(keys)\(more)]"))
        }
        return value
    }

    private func path(_ key: Key) -> [any CodingKey] { codingPath + [key] }

    func decodeNil(forKey key: Key) throws -> Bool {
        if case .none = try value(forKey: key) { return true }
        return false
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try context.bool(value(forKey: key), at: path(key)) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try context.string(value(forKey: key), at: path(key)) }

    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        try context.floatingPoint(value(forKey: key), as: type, at: path(key))
    }

    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        try context.floatingPoint(value(forKey: key), as: type, at: path(key))
    }

    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 {
        try context.integer(value(forKey: key), as: type, at: path(key))
    }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try context.integer(value(forKey: key), as: type, at: path(key)) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        try context.integer(value(forKey: key), as: type, at: path(key))
    }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        try context.integer(value(forKey: key), as: type, at: path(key))
    }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        try context.integer(value(forKey: key), as: type, at: path(key))
    }
    func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 {
        try context.integer(value(forKey: key), as: type, at: path(key))
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try context.decode(T.self, from: value(forKey: key), at: path(key))
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let value = try value(forKey: key)
        guard case .dict(let items) = value else {
            throw context.mismatch(
                expected: "a dict", for: [String: Any].self, named: "a nested keyed container", found: value, at: path(key))
        }
        return KeyedDecodingContainer(_PVKeyedDecoder<NestedKey>(items: items, codingPath: path(key), context: context))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let value = try value(forKey: key)
        guard let elements = value.unkeyedElements else {
            throw context.mismatch(
                expected: "a list or tuple", for: [Any].self, named: "a nested unkeyed container", found: value, at: path(key))
        }
        return _PVUnkeyedDecoder(elements: elements, codingPath: path(key), context: context)
    }

    func superDecoder() throws -> any Decoder {
        _PVDecoder(
            value: lookup[_PVKey.super.stringValue] ?? .none, codingPath: codingPath + [_PVKey.super], context: context,
            type: Any.self)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        _PVDecoder(value: lookup[key.stringValue] ?? .none, codingPath: path(key), context: context, type: Any.self)
    }
}

private struct _PVUnkeyedDecoder: UnkeyedDecodingContainer {
    let elements: [PythonValue]
    let codingPath: [any CodingKey]
    let context: _PVDecodingContext
    private(set) var currentIndex = 0

    init(elements: [PythonValue], codingPath: [any CodingKey], context: _PVDecodingContext) {
        self.elements = elements
        self.codingPath = codingPath
        self.context = context
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private var currentPath: [any CodingKey] { codingPath + [_PVKey(index: currentIndex)] }

    /// Decodes the current element and moves past it only if that succeeds.
    private mutating func next<T>(_ type: Any.Type, _ body: (PythonValue, [any CodingKey]) throws -> T) throws -> T {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type,
                .init(
                    codingPath: currentPath,
                    debugDescription: "expected a value for \(type) at index \(currentIndex), but the sequence has only \(elements.count) items"))
        }
        let result = try body(elements[currentIndex], currentPath)
        currentIndex += 1
        return result
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                Any?.self, .init(codingPath: currentPath, debugDescription: "the sequence has only \(elements.count) items"))
        }
        guard case .none = elements[currentIndex] else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type) { [context] in try context.bool($0, at: $1) } }
    mutating func decode(_ type: String.Type) throws -> String { try next(type) { [context] in try context.string($0, at: $1) } }

    mutating func decode(_ type: Double.Type) throws -> Double {
        try next(type) { [context] in try context.floatingPoint($0, as: type, at: $1) }
    }

    mutating func decode(_ type: Float.Type) throws -> Float {
        try next(type) { [context] in try context.floatingPoint($0, as: type, at: $1) }
    }

    mutating func decode(_ type: Int.Type) throws -> Int { try nextInteger(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try nextInteger(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try nextInteger(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try nextInteger(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try nextInteger(type) }
    mutating func decode(_ type: Int128.Type) throws -> Int128 { try nextInteger(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try nextInteger(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try nextInteger(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try nextInteger(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try nextInteger(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try nextInteger(type) }
    mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try nextInteger(type) }

    private mutating func nextInteger<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        try next(type) { [context] in try context.integer($0, as: type, at: $1) }
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try next(type) { [context] in try context.decode(T.self, from: $0, at: $1) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next([String: Any].self) { [context] value, path in
            guard case .dict(let items) = value else {
                throw context.mismatch(
                    expected: "a dict", for: [String: Any].self, named: "a nested keyed container", found: value, at: path)
            }
            return KeyedDecodingContainer(_PVKeyedDecoder<NestedKey>(items: items, codingPath: path, context: context))
        }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next([Any].self) { [context] value, path in
            guard let elements = value.unkeyedElements else {
                throw context.mismatch(
                    expected: "a list or tuple", for: [Any].self, named: "a nested unkeyed container", found: value, at: path)
            }
            return _PVUnkeyedDecoder(elements: elements, codingPath: path, context: context)
        }
    }

    mutating func superDecoder() throws -> any Decoder {
        try next(Any.self) { [context] value, path in
            _PVDecoder(value: value, codingPath: path, context: context, type: Any.self)
        }
    }
}

private struct _PVSingleValueDecoder: SingleValueDecodingContainer {
    let value: PythonValue
    let codingPath: [any CodingKey]
    let context: _PVDecodingContext

    func decodeNil() -> Bool {
        if case .none = value { return true }
        return false
    }

    func decode(_ type: Bool.Type) throws -> Bool { try context.bool(value, at: codingPath) }
    func decode(_ type: String.Type) throws -> String { try context.string(value, at: codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try context.floatingPoint(value, as: type, at: codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try context.floatingPoint(value, as: type, at: codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: Int128.Type) throws -> Int128 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try context.integer(value, as: type, at: codingPath) }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try context.integer(value, as: type, at: codingPath) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try context.decode(T.self, from: value, at: codingPath)
    }
}

// MARK: - Shared

/// A coding key for list indexes, dictionary keys and `super`.
private struct _PVKey: CodingKey {
    let stringValue: String
    let intValue: Int?

    init(stringValue: String) {
        self.init(stringValue: stringValue, intValue: nil)
    }

    private init(stringValue: String, intValue: Int?) {
        self.stringValue = stringValue
        self.intValue = intValue
    }

    init(intValue: Int) {
        self.init(stringValue: String(intValue), intValue: intValue)
    }

    init(index: Int) {
        self.init(stringValue: "Index \(index)", intValue: index)
    }

    /// The key of a Python `dict` entry: its text for a `str`, its digits (and value) for an `int`.
    init(pythonKey: PythonValue) {
        switch pythonKey {
        case .string(let s):
            self.init(stringValue: s)
        case .int(let i):
            self.init(stringValue: i.description, intValue: Int(exactly: i))
        default:
            self.init(stringValue: pythonKey.description)
        }
    }

    static let `super` = _PVKey(stringValue: "super")
}

// MARK: - PythonValue as Codable

extension PythonValue: Codable {
    /// Encodes the value.
    ///
    /// ``PythonValueEncoder`` stores it as it is. Other encoders get the nearest plain form:
    /// `None` as nil, a list or tuple as an array, `bytes` as `Data`, an `int` too big for
    /// `Int64` and `UInt64` as a string of its digits, and a `dict` as a keyed container if all its
    /// keys are `str`, else as an array of `[key, value]` pairs.
    ///
    /// - Throws: `EncodingError.invalidValue` for a pickled object with any encoder but
    ///   ``PythonValueEncoder``.
    public func encode(to encoder: any Encoder) throws {
        if let encoder = encoder as? _PVEncoder {
            encoder.node.set(self)
            return
        }
        switch self {
        case .none:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let v):
            var container = encoder.singleValueContainer()
            try container.encode(v)
        case .int(let v):
            var container = encoder.singleValueContainer()
            if let small = Int64(exactly: v) {
                try container.encode(small)
            } else if let unsigned = UInt64(exactly: v) {
                try container.encode(unsigned)
            } else {
                try container.encode(v.description)
            }
        case .float(let v):
            var container = encoder.singleValueContainer()
            try container.encode(v)
        case .string(let v):
            var container = encoder.singleValueContainer()
            try container.encode(v)
        case .bytes(let v):
            var container = encoder.singleValueContainer()
            try container.encode(Data(v))
        case .list(let items), .tuple(let items):
            var container = encoder.unkeyedContainer()
            for item in items { try container.encode(item) }
        case .dict(let items):
            if items.allSatisfy({ $0.key.stringValue != nil }) {
                var container = encoder.container(keyedBy: _PVKey.self)
                for item in items {
                    try container.encode(item.value, forKey: _PVKey(stringValue: item.key.stringValue ?? ""))
                }
            } else {
                var container = encoder.unkeyedContainer()
                for item in items {
                    var pair = container.nestedUnkeyedContainer()
                    try pair.encode(item.key)
                    try pair.encode(item.value)
                }
            }
        case .pickled, .queue, .buffer:
            throw EncodingError.invalidValue(
                self,
                .init(codingPath: encoder.codingPath, debugDescription: "a pickled object, queue or shared buffer can only be encoded by PythonValueEncoder"))
        }
    }

    /// Decodes a value.
    ///
    /// ``PythonValueDecoder`` gives the value as it is. Other decoders are tried for, in order,
    /// nil, a `Bool`, an `Int64`, a `UInt64`, a `Double`, a `String`, a keyed container (a `dict`
    /// with `str` keys) and an unkeyed one (a `list`).
    public init(from decoder: any Decoder) throws {
        if let decoder = decoder as? _PVDecoder {
            self = decoder.value
            return
        }
        if let container = try? decoder.singleValueContainer() {
            if container.decodeNil() {
                self = .none
                return
            }
            if let v = try? container.decode(Bool.self) {
                self = .bool(v)
                return
            }
            if let v = try? container.decode(Int64.self) {
                self = .int(BigInt(v))
                return
            }
            if let v = try? container.decode(UInt64.self) {
                self = .int(BigInt(v))
                return
            }
            if let v = try? container.decode(Double.self) {
                self = .float(v)
                return
            }
            if let v = try? container.decode(String.self) {
                self = .string(v)
                return
            }
        }
        if let container = try? decoder.container(keyedBy: _PVKey.self) {
            self = .dict(
                try container.allKeys.map { key in
                    (key: .string(key.stringValue), value: try container.decode(PythonValue.self, forKey: key))
                })
            return
        }
        if var container = try? decoder.unkeyedContainer() {
            var items: [PythonValue] = []
            while !container.isAtEnd {
                items.append(try container.decode(PythonValue.self))
            }
            self = .list(items)
            return
        }
        throw DecodingError.dataCorrupted(
            .init(codingPath: decoder.codingPath, debugDescription: "no Python value could be decoded here"))
    }
}
