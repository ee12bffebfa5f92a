import Testing

@testable import Subinterpreters

@Suite struct ErrorTests {
    @Test func pythonExceptionKeepsTypeMessageAndTraceback() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("def inner():\n    raise ValueError('bad value 42')\ndef outer():\n    inner()", filename: "example.py")
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.call("outer") }
        #expect(error?.code == .pythonException)
        #expect(error?.pythonException?.typeName == "ValueError")
        #expect(error?.pythonException?.message == "bad value 42")
        let traceback = error?.pythonException?.traceback ?? ""
        #expect(traceback.contains("File \"example.py\", line 2, in inner"))
        #expect(traceback.contains("in outer"))
        #expect(traceback.hasSuffix("ValueError: bad value 42\n"))
        #expect(!traceback.contains("subinterp bootstrap"))
        await interpreter.close()
    }

    @Test func qualifiedTypeNameForNonBuiltinExceptions() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.call("json.loads", "{nope") }
        #expect(error?.pythonException?.typeName == "json.decoder.JSONDecodeError")
        await interpreter.close()
    }

    @Test func chainedExceptionsAppearInTraceback() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) {
            try await interpreter.exec("try:\n    {}['k']\nexcept KeyError as e:\n    raise RuntimeError('lookup failed') from e")
        }
        #expect(error?.pythonException?.typeName == "RuntimeError")
        #expect(error?.pythonException?.traceback.contains("KeyError: 'k'") == true)
        #expect(error?.pythonException?.traceback.contains("direct cause") == true)
        await interpreter.close()
    }

    @Test func refusedExtensionModuleIsItsOwnError() async throws {
        let interpreter = try await Interpreter()
        let error = await #expect(throws: SubinterpreterError.self) { try await interpreter.exec("import _testsinglephase") }
        #expect(error?.code == .incompatibleExtensionModule)
        #expect(error?.moduleName == "_testsinglephase")
        #expect(error?.message.contains("subinterp check") == true)
        // The interpreter is still usable afterwards.
        #expect(try await interpreter.eval("1 + 1") == 2)
        await interpreter.close()
    }

    @Test func syntaxErrorAndMissingNames() async throws {
        let interpreter = try await Interpreter()
        let syntax = await #expect(throws: SubinterpreterError.self) { try await interpreter.exec("def broken(:\n  pass") }
        #expect(syntax?.pythonException?.typeName == "SyntaxError")
        let missing = await #expect(throws: SubinterpreterError.self) { try await interpreter.call("no_such_function") }
        #expect(missing?.pythonException?.typeName == "NameError")
        let module = await #expect(throws: SubinterpreterError.self) { try await interpreter.call("no_such_module.f") }
        #expect(module?.pythonException?.typeName == "ModuleNotFoundError")
        let attribute = await #expect(throws: SubinterpreterError.self) { try await interpreter.call("math.no_such_function") }
        #expect(attribute?.pythonException?.typeName == "AttributeError")
        await interpreter.close()
    }
}
