// Temporary: replaced by the real encoder/decoder.
public struct PythonValueEncoder { public init() {}; public func encode(_ v: some Encodable) throws -> PythonValue { .none } }
public struct PythonValueDecoder { public init() {}; public func decode<T: Decodable>(_ t: T.Type, from: PythonValue) throws -> T { fatalError() } }
