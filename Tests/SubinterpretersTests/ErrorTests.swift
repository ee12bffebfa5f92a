import Foundation
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

/// The one-line account of a load failure that `map` prints and `serve` uses.
@Suite struct LoadFailureTests {
    /// A pool whose setup imports `module` from a fresh directory holding `source`.
    private func loadError(_ source: String, setup: (String) -> String = { "import \($0)" }) async throws -> SubinterpreterError? {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("load")).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let module = "loadme_" + UUID().uuidString.prefix(8).lowercased()
        try source.write(toFile: "\(directory)/\(module).py", atomically: true, encoding: .utf8)
        return await #expect(throws: SubinterpreterError.self) {
            _ = try await InterpreterPool(configuration: .init(workers: 1, setup: setup(module), path: [directory]))
        }
    }

    @Test func namesTheExceptionAndTheUsersInnermostFrame() async throws {
        let error = try #require(try await loadError("import json\n\ndef helper():\n    return {}['key']\n\nhelper()\n"))
        #expect(error.pythonException?.frames.map(\.function) == ["<module>", "<module>", "helper"])
        #expect(!(error.pythonException?.traceback.contains("importlib") ?? true))
        let failure = LoadFailure(error, loading: "app:main")
        #expect(failure.summary.hasPrefix("cannot load app:main: KeyError: 'key' ("))
        #expect(failure.summary.hasSuffix(".py, line 4, in helper)"))
        #expect(!failure.traceback.contains("<setup>"))  // the tool's own setup code is hidden
        #expect(failure.traceback.contains("line 4, in helper"))
    }

    @Test func keepsTheFirstLineOfALongMessage() async throws {
        let error = try #require(try await loadError("raise ImportError('first line\\n\\nplease read this long text')\n"))
        let failure = LoadFailure(error, loading: "app:main")
        #expect(failure.summary.hasPrefix("cannot load app:main: ImportError: first line ("))
        #expect(!failure.summary.contains("please read"))
    }

    @Test func blamesTheUsersSetupOption() async throws {
        let error = try #require(try await loadError("", setup: { _ in "x = 1\ny = undefined_name" }))
        #expect(LoadFailure(error, loading: "m:f", setup: .option("--setup")).summary
            == "the --setup code failed: NameError: name 'undefined_name' is not defined (line 2 of --setup)")
    }

    @Test func namesAnExtensionModuleThatRefusesSubinterpreters() async throws {
        let error = try #require(try await loadError("import _testsinglephase\n"))
        let summary = LoadFailure(error, loading: "app:main").summary
        #expect(summary.hasPrefix("cannot load app:main: extension module '_testsinglephase' does not support loading in sub-interpreters"))
        #expect(summary.contains("subinterp check"))
    }
}
