import BigInt
import Foundation
import Testing
@testable import Subinterpreters

private let encoder = PythonValueEncoder()
private let decoder = PythonValueDecoder()

private enum Color: String, Codable, Equatable {
    case red, green, blue
}

private enum Level: Int, Codable, Equatable {
    case low = 1, high = 2
}

private struct Address: Codable, Equatable {
    var street: String
    var zip: String?
}

private struct Person: Codable, Equatable {
    var name: String
    var age: Int
    var nickname: String?
    var height: Double?
    var scores: [Double]
    var favorite: Color
    var level: Level
    var address: Address?
    var friends: [Address]
    var metadata: [String: [String: Int]]
    var matrix: [[Int]]
    var flags: [Bool?]
}

private struct Point: Codable, Equatable {
    var x: Int
    var y: Int
}

private enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case rect(width: Double, height: Double)
    case labeled(String, Int)
    case empty
}

private struct Envelope: Codable, Equatable {
    var id: Int
    var payload: PythonValue
    var extra: PythonValue?
}

private func decodingError(_ body: () throws -> Void) -> DecodingError? {
    do {
        try body()
        return nil
    } catch let error as DecodingError {
        return error
    } catch {
        return nil
    }
}

private func errorContext(_ error: DecodingError?) -> DecodingError.Context? {
    switch error {
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
        .dataCorrupted(let context):
        return context
    default:
        return nil
    }
}

private func pathString(_ error: DecodingError?) -> [String]? {
    errorContext(error)?.codingPath.map(\.stringValue)
}

@Suite struct PythonValueCodingTests {
    @Test func nestedStructRoundTrip() throws {
        let person = Person(
            name: "Ada", age: 36, nickname: nil, height: 1.65, scores: [1.5, 2, -3.25], favorite: .green, level: .high,
            address: Address(street: "1 Analytical Way", zip: nil),
            friends: [Address(street: "a", zip: "123"), Address(street: "b", zip: nil)],
            metadata: ["outer": ["b": 2, "a": 1], "empty": [:]], matrix: [[1, 2], [], [3]], flags: [true, nil, false])
        let encoded = try encoder.encode(person)

        #expect(encoded["name"] == "Ada")
        #expect(encoded["age"] == 36)
        #expect(encoded["nickname"] == nil, "nil optionals are left out")
        #expect(encoded["favorite"] == "green")
        #expect(encoded["level"] == 2)
        #expect(encoded["address"] == ["street": "1 Analytical Way"])
        #expect(encoded["metadata"] == ["empty": [:], "outer": ["a": 1, "b": 2]])
        #expect(encoded["matrix"] == [[1, 2], [], [3]])
        #expect(encoded["flags"] == [true, nil, false])
        if case .dict(let items) = encoded {
            #expect(items.map(\.key) == ["name", "age", "height", "scores", "favorite", "level", "address", "friends", "metadata", "matrix", "flags"])
        } else {
            Issue.record("expected a dict, got \(encoded)")
        }

        #expect(try decoder.decode(Person.self, from: encoded) == person)
    }

    @Test func exactShapes() throws {
        #expect(try encoder.encode(Point(x: 1, y: -2)) == ["x": 1, "y": -2])
        #expect(try encoder.encode([1, 2, 3]) == [1, 2, 3])
        #expect(try encoder.encode(Optional<Int>.none) == nil)
        #expect(try encoder.encode(true) == true)
        #expect(try encoder.encode(1.5) == 1.5)
        #expect(try encoder.encode(Float(0.5)) == 0.5)
        #expect(try encoder.encode("é") == "é")
        #expect(try encoder.encode([UInt8]([1, 2])) == [1, 2], "[UInt8] stays a list")
        #expect(try encoder.encode(Set([7])) == [7])
    }

    @Test func integersDoNotOverflow() throws {
        let max = try encoder.encode(UInt64.max)
        #expect(max == .int(BigInt(UInt64.max)))
        #expect(max.description == "18446744073709551615")
        #expect(try decoder.decode(UInt64.self, from: max) == .max)
        #expect(try encoder.encode(Int64.min).description == "-9223372036854775808")
        #expect(try decoder.decode(Int64.self, from: encoder.encode(Int64.min)) == .min)
        #expect(try encoder.encode(UInt128.max).description == "340282366920938463463374607431768211455")
        #expect(try decoder.decode(UInt128.self, from: encoder.encode(UInt128.max)) == .max)
        #expect(try decoder.decode([Int8].self, from: [-128, 127]) == [-128, 127])
    }

    @Test func integerOverflowThrows() throws {
        let error = decodingError { _ = try decoder.decode(Int8.self, from: 300) }
        guard case .dataCorrupted(let context) = error else {
            Issue.record("expected dataCorrupted, got \(String(describing: error))")
            return
        }
        #expect(context.debugDescription.contains("300"))
        #expect(context.debugDescription.contains("Int8"))

        let nested = decodingError { _ = try decoder.decode([String: UInt8].self, from: ["a": 1, "b": -1]) }
        #expect(pathString(nested) == ["b"])
        #expect(throws: DecodingError.self) { try decoder.decode(Int.self, from: .int(BigInt(1) << 64)) }
        #expect(throws: DecodingError.self) { try decoder.decode(UInt.self, from: -1) }
        #expect(throws: DecodingError.self) { try decoder.decode(BigUInt.self, from: -1) }
    }

    @Test func tupleAndBytesDecodeAsArrays() throws {
        #expect(try decoder.decode([Int].self, from: .tuple([1, 2, 3])) == [1, 2, 3])
        #expect(try decoder.decode([String].self, from: .tuple([])) == [])
        #expect(try decoder.decode([[Int]].self, from: .list([.tuple([1]), [2]])) == [[1], [2]])
        #expect(try decoder.decode([Int].self, from: .bytes([9, 8])) == [9, 8])
    }

    @Test func intKeyedDictionary() throws {
        let value = [3: "c", 1: "a", 2: "b"]
        let encoded = try encoder.encode(value)
        #expect(encoded == [1: "a", 2: "b", 3: "c"])
        #expect(try decoder.decode([Int: String].self, from: encoded) == value)
        #expect(try decoder.decode([Int: String].self, from: [10: "x", -4: "y"]) == [10: "x", -4: "y"])

        let error = decodingError { _ = try decoder.decode([Int: String].self, from: ["1": "a"]) }
        #expect(errorContext(error)?.debugDescription == "expected an int for Int, found str '1'")
    }

    @Test func otherDictionaryKeys() throws {
        let byColor: [Color: Int] = [.red: 1, .blue: 3]
        let encoded = try encoder.encode(byColor)
        #expect(encoded == ["blue": 3, "red": 1])
        #expect(try decoder.decode([Color: Int].self, from: encoded) == byColor)

        let byPair: [[Int]: String] = [[1, 2]: "x"]
        let pairs = try encoder.encode(byPair)
        #expect(pairs == .dict([(key: .tuple([1, 2]), value: "x")]))
        #expect(try decoder.decode([[Int]: String].self, from: pairs) == byPair)

        let unhashable: [[String: Int]: Int] = [["a": 1]: 2]
        let alternating = try encoder.encode(unhashable)
        #expect(alternating == [["a": 1], 2], "a dict cannot be a Python key: Swift's alternating list")
        #expect(try decoder.decode([[String: Int]: Int].self, from: alternating) == unhashable)

        let optionalValues: [String: Int?] = ["a": nil, "b": 2]
        let optionals = try encoder.encode(optionalValues)
        #expect(optionals == ["a": nil, "b": 2])
        #expect(try decoder.decode([String: Int?].self, from: optionals) == optionalValues)
    }

    @Test func dataAndBytes() throws {
        let data = Data([0, 1, 2, 255])
        #expect(try encoder.encode(data) == .bytes([0, 1, 2, 255]))
        #expect(try decoder.decode(Data.self, from: .bytes([0, 1, 2, 255])) == data)
        #expect(try decoder.decode(Data.self, from: [0, 1, 2, 255]) == data)
        #expect(try decoder.decode([UInt8].self, from: .bytes([4, 5])) == [4, 5])
        #expect(try decoder.decode([UInt8].self, from: [4, 5]) == [4, 5])
        #expect(try decoder.decode(Data?.self, from: nil) == nil)

        struct Blob: Codable, Equatable { var data: Data; var more: Data? }
        let blob = Blob(data: Data("hi".utf8), more: Data())
        let encoded = try encoder.encode(blob)
        #expect(encoded == ["data": .bytes([104, 105]), "more": .bytes([])])
        #expect(try decoder.decode(Blob.self, from: encoded) == blob)
        #expect(throws: DecodingError.self) { try decoder.decode(Data.self, from: "hi") }
    }

    @Test func keysInAnyOrder() throws {
        #expect(try decoder.decode(Point.self, from: ["y": 2, "x": 1]) == Point(x: 1, y: 2))
        #expect(try decoder.decode(Point.self, from: ["z": 0, "y": 2, "x": 1]) == Point(x: 1, y: 2), "extra keys are ignored")
    }

    @Test func errorsCarryPathAndTypes() throws {
        let value: PythonValue = [
            "name": "Ada", "age": 36, "scores": [], "favorite": "red", "level": 1,
            "friends": [["street": "a"], ["street": 5]], "metadata": [:], "matrix": [], "flags": [],
        ]
        let mismatch = decodingError { _ = try decoder.decode(Person.self, from: value) }
        guard case .typeMismatch(let type, let context) = mismatch else {
            Issue.record("expected typeMismatch, got \(String(describing: mismatch))")
            return
        }
        #expect(ObjectIdentifier(type) == ObjectIdentifier(String.self))
        #expect(context.codingPath.map(\.stringValue) == ["friends", "Index 1", "street"])
        #expect(context.codingPath.map(\.intValue) == [nil, 1, nil])
        #expect(context.debugDescription == "expected a str for String, found int 5")

        let string = decodingError { _ = try decoder.decode(Point.self, from: ["x": "abc", "y": 1]) }
        #expect(pathString(string) == ["x"])
        #expect(errorContext(string)?.debugDescription == "expected an int for Int, found str 'abc'")

        let missing = decodingError { _ = try decoder.decode(Point.self, from: ["x": 1]) }
        guard case .keyNotFound(let key, let missingContext) = missing else {
            Issue.record("expected keyNotFound, got \(String(describing: missing))")
            return
        }
        #expect(key.stringValue == "y")
        #expect(missingContext.codingPath.isEmpty)
        #expect(missingContext.debugDescription.contains("'x'"))

        let notDict = decodingError { _ = try decoder.decode([Point].self, from: [[1, 2]]) }
        #expect(pathString(notDict) == ["Index 0"])
        #expect(errorContext(notDict)?.debugDescription == "expected a dict for Point, found list [1, 2]")

        let none = decodingError { _ = try decoder.decode(Point.self, from: ["x": nil, "y": 1]) }
        guard case .valueNotFound = none else {
            Issue.record("expected valueNotFound, got \(String(describing: none))")
            return
        }
        #expect(pathString(none) == ["x"])

        let short = decodingError { _ = try decoder.decode(Shape.self, from: ["labeled": ["_0": "a"]]) }
        #expect(pathString(short) == ["labeled"])
    }

    @Test func boolIsNotAnInt() throws {
        #expect(throws: DecodingError.self) { try decoder.decode(Int.self, from: true) }
        #expect(throws: DecodingError.self) { try decoder.decode(Bool.self, from: 1) }
        #expect(throws: DecodingError.self) { try decoder.decode(Double.self, from: false) }
        #expect(try decoder.decode(Bool.self, from: false) == false)
    }

    @Test func floatsAcceptInts() throws {
        #expect(try decoder.decode(Double.self, from: 3) == 3.0)
        #expect(try decoder.decode(Float.self, from: 2.5) == 2.5)
        #expect(try decoder.decode([Double].self, from: [1, 2.5]) == [1, 2.5])
        #expect(try decoder.decode(Double.self, from: .float(.infinity)) == .infinity)
        #expect(throws: DecodingError.self) { try decoder.decode(Float.self, from: 1e300) }
        #expect(throws: DecodingError.self) { try decoder.decode(Double.self, from: .int(BigInt(10).power(400))) }
        #expect(throws: DecodingError.self) { try decoder.decode(Int.self, from: 1.0) }
    }

    @Test func optionalsFromNone() throws {
        #expect(try decoder.decode(Address.self, from: ["street": "x", "zip": nil]) == Address(street: "x", zip: nil))
        #expect(try decoder.decode(Address.self, from: ["street": "x"]) == Address(street: "x", zip: nil))
        #expect(try decoder.decode(Int?.self, from: nil) == nil)
        #expect(try decoder.decode([Int?].self, from: [1, nil]) == [1, nil])
    }

    @Test func pythonValuePassesThrough() throws {
        let payload: PythonValue = .tuple([.pickled([1, 2, 3]), .bytes([0]), .dict([(key: 1, value: .tuple([]))]), .float(.nan)])
        let envelope = Envelope(id: 7, payload: payload, extra: nil)
        let encoded = try encoder.encode(envelope)
        #expect(encoded == ["id": 7, "payload": payload])
        #expect(try decoder.decode(Envelope.self, from: encoded) == envelope)

        let withNone = try decoder.decode(Envelope.self, from: ["id": 1, "payload": nil, "extra": [1]])
        #expect(withNone.payload == nil)
        #expect(withNone.extra == [1])

        #expect(try encoder.encode(payload) == payload)
        #expect(try decoder.decode(PythonValue.self, from: payload) == payload)
        #expect(try encoder.encode(["k": payload]) == ["k": payload])
        #expect(try decoder.decode([String: PythonValue].self, from: ["k": payload]) == ["k": payload])
    }

    @Test func enumWithAssociatedValues() throws {
        let shapes: [Shape] = [.circle(radius: 1.5), .rect(width: 2, height: 3), .labeled("a", 1), .empty]
        let encoded = try encoder.encode(shapes)
        #expect(encoded == [
            ["circle": ["radius": 1.5]],
            ["rect": ["width": 2.0, "height": 3.0]],
            ["labeled": ["_0": "a", "_1": 1]],
            ["empty": [:]],
        ])
        #expect(try decoder.decode([Shape].self, from: encoded) == shapes)
        #expect(try decoder.decode(Shape.self, from: ["rect": ["height": 3, "width": 2]]) == .rect(width: 2, height: 3))
    }

    @Test func foundationTypes() throws {
        let date = Date(timeIntervalSince1970: 1_700_000_000.5)
        #expect(try encoder.encode(date) == 1_700_000_000.5)
        #expect(try decoder.decode(Date.self, from: 1_700_000_000.5) == date)
        #expect(try decoder.decode(Date.self, from: 86_400) == Date(timeIntervalSince1970: 86_400))

        let url = try #require(URL(string: "https://example.com/a?b=c"))
        #expect(try encoder.encode(url) == "https://example.com/a?b=c")
        #expect(try decoder.decode(URL.self, from: "https://example.com/a?b=c") == url)

        let decimal = try #require(Decimal(string: "12345678901234567890.125"))
        #expect(try encoder.encode(decimal) == "12345678901234567890.125")
        #expect(try decoder.decode(Decimal.self, from: "12345678901234567890.125") == decimal)
        #expect(try decoder.decode(Decimal.self, from: 42) == Decimal(42))
        #expect(try decoder.decode(Decimal.self, from: "-1.5E+3") == Decimal(-1500))
        #expect(throws: DecodingError.self) { try decoder.decode(Decimal.self, from: "twelve") }
        #expect(throws: DecodingError.self) { try decoder.decode(Decimal.self, from: "12abc") }
    }

    @Test func bigIntegers() throws {
        let big = BigInt(10).power(40) + 1
        #expect(try encoder.encode(big) == .int(big))
        #expect(try encoder.encode(BigUInt(5)) == 5)
        #expect(try decoder.decode(BigInt.self, from: .int(-big)) == -big)
        #expect(try decoder.decode(BigUInt.self, from: .int(big)) == BigUInt(big))
        #expect(throws: DecodingError.self) { try decoder.decode(BigInt.self, from: 1.0) }
    }

    @Test func classHierarchyAndSuperEncoder() throws {
        let value = Derived(id: 3, name: "x")
        let encoded = try encoder.encode(value)
        #expect(encoded == ["name": "x", "super": ["id": 3]])
        let decoded = try decoder.decode(Derived.self, from: encoded)
        #expect(decoded.id == 3)
        #expect(decoded.name == "x")
    }

    @Test func userInfoReachesTheValue() throws {
        var encoder = PythonValueEncoder()
        encoder.userInfo[UserInfoProbe.key] = "hello"
        #expect(try encoder.encode(UserInfoProbe()) == "hello")

        var decoder = PythonValueDecoder()
        decoder.userInfo[UserInfoProbe.key] = "world"
        #expect(try decoder.decode(UserInfoProbe.self, from: nil).seen == "world")
    }

    @Test func emptyValueThrowsAtTopLevel() throws {
        #expect(throws: EncodingError.self) { try encoder.encode(Silent()) }
        #expect(try encoder.encode([Silent()]) == [[:]])
    }

    @Test func pythonValueWithOtherCoders() throws {
        // One key per dict: JSONEncoder does not keep the order of keys.
        let value: PythonValue = ["a": [1, 2.5, "s", nil, true, ["c": "d"], .int(BigInt(UInt64.max))]]
        let json = try JSONEncoder().encode(value)
        let decoded = try JSONDecoder().decode(PythonValue.self, from: json)
        #expect(decoded == value, "\(String(decoding: json, as: UTF8.self)) -> \(decoded)")
        #expect(throws: EncodingError.self) { try JSONEncoder().encode(PythonValue.pickled([1])) }
    }
}

private class Base: Codable {
    var id: Int
    init(id: Int) { self.id = id }
}

private final class Derived: Base {
    var name: String

    init(id: Int, name: String) {
        self.name = name
        super.init(id: id)
    }

    private enum CodingKeys: String, CodingKey { case name }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        try super.init(from: container.superDecoder())
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try super.encode(to: container.superEncoder())
    }
}

private struct UserInfoProbe: Codable {
    static let key = CodingUserInfoKey(rawValue: "probe")!
    var seen = ""

    init() {}

    init(from decoder: any Decoder) throws {
        seen = decoder.userInfo[Self.key] as? String ?? ""
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(encoder.userInfo[Self.key] as? String ?? "")
    }
}

private struct Silent: Encodable {
    func encode(to encoder: any Encoder) throws {}
}
