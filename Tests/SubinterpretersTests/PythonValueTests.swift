import BigInt
import Testing

@testable import Subinterpreters

@Suite struct PythonValueTests {
    /// Sends a value in, has Python check its type, and takes it back out.
    private func roundTrip(_ value: PythonValue, pythonType: String, in interpreter: Interpreter) async throws -> PythonValue {
        #expect(try await interpreter.call("_type_name", value) == .string(pythonType))
        return try await interpreter.call("_identity", value)
    }

    @Test func basicValuesRoundTripNatively() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("def _identity(x): return x\ndef _type_name(x): return type(x).__name__")
        let huge = BigInt(2).power(200) + 12345
        let cases: [(PythonValue, String)] = [
            (.none, "NoneType"), (true, "bool"), (false, "bool"), (0, "int"), (-7, "int"),
            (.int(BigInt(Int64.max)), "int"), (.int(BigInt(Int64.min)), "int"),
            (.int(huge), "int"), (.int(-huge), "int"),
            (3.5, "float"), (.float(.infinity), "float"), (.float(-0.0), "float"),
            ("", "str"), ("héllo wörld ✓ 𝄞 🐍", "str"), (.bytes([0, 1, 255, 10]), "bytes"), (.bytes([]), "bytes"),
            ([1, "two", [3.0, .none]], "list"), (.tuple([1, .tuple([])]), "tuple"),
            ([1: "one", "two": [2], .tuple([3, 4]): .none], "dict"),
        ]
        for (value, type) in cases {
            #expect(try await roundTrip(value, pythonType: type, in: interpreter) == value)
        }
        let nan = try await interpreter.call("_identity", .float(.nan))
        #expect(nan.doubleValue?.isNaN == true)
        await interpreter.close()
    }

    @Test func hugeIntsDoNotOverflowSilently() async throws {
        let interpreter = try await Interpreter()
        let value = try await interpreter.eval("3 ** 300 - 1")
        #expect(value == .int(BigInt(3).power(300) - 1))
        #expect(value.intValue == nil)
        #expect(try await interpreter.eval("-(2 ** 64)") == .int(-(BigInt(1) << 64)))
        #expect(try await interpreter.call("str", .int(BigInt(1) << 100)) == .string((BigInt(1) << 100).description))
        await interpreter.close()
    }

    @Test func otherTypesCrossPickledAndArriveAsThemselves() async throws {
        let source = try await Interpreter()
        let target = try await Interpreter()
        let values = try await source.eval("[__import__('decimal').Decimal('1.10'), {1, 2}, __import__('datetime').date(2024, 2, 29), bytearray(b'ab')]")
        guard case .list(let items) = values else {
            Issue.record("expected a list, got \(values)")
            return
        }
        for item in items {
            guard case .pickled = item else {
                Issue.record("expected a pickled value, got \(item)")
                continue
            }
        }
        try await target.prepareMain(["received": values])
        #expect(try await target.eval("[type(v).__name__ for v in received]") == ["Decimal", "set", "date", "bytearray"])
        #expect(try await target.eval("str(received[0] + 1)") == "2.10")
        await source.close()
        await target.close()
    }

    @Test func subclassesOfBasicTypesKeepTheirType() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("import enum, collections\nclass Color(enum.IntEnum):\n    RED = 1")
        let value = try await interpreter.eval("collections.OrderedDict(a=1)")
        guard case .pickled = value else {
            Issue.record("OrderedDict should cross pickled, got \(value)")
            return
        }
        #expect(try await interpreter.call("builtins:repr", value) == "OrderedDict({'a': 1})")
        await interpreter.close()
    }

    @Test func unpicklableObjectIsAnErrorNamingItsType() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.eval("__import__('threading').Lock()") }
        #expect(error?.pythonException?.typeName == "TypeError")
        #expect(error?.message.contains("_thread.lock") == true)
        let generator = await #expect(throws: SubinterpreterError.self) { try await interpreter.eval("(i for i in range(3))") }
        #expect(generator?.message.contains("generator") == true)
        await interpreter.close()
    }

    @Test func selfReferentialContainerIsAnError() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.exec("loop = []\nloop.append(loop)\n") ; _ = try await interpreter.eval("loop") }
        #expect(error?.code == .invalidArgument)
        #expect(try await interpreter.eval("len(loop)") == 1)
        await interpreter.close()
    }

    @Test func valuesReadNaturallyInSwift() {
        let value: PythonValue = ["name": "ada", "scores": [1, 2.5]]
        #expect(value["name"]?.stringValue == "ada")
        #expect(value["scores"]?.arrayValue?.compactMap(\.doubleValue) == [1, 2.5])
        #expect(value.description == "{'name': 'ada', 'scores': [1, 2.5]}")
    }
}
