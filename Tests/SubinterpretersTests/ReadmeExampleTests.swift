import Testing

import Subinterpreters

/// The README's Swift example, kept compiling and true.
@Test func readmeExampleWorks() async throws {
    let interpreter = try await Interpreter()
    try await interpreter.exec("""
        def stats(xs):
            return {"n": len(xs), "mean": sum(xs) / len(xs)}
        """)
    let result = try await interpreter.call("stats", [1, 2, 3, 4])
    #expect(result.description == "{'n': 4, 'mean': 2.5}")
    #expect(result["mean"]?.doubleValue == 2.5)

    #expect(try await interpreter.call("os.path.join", "a", "b") == "a/b")
    struct Stats: Codable, Equatable { var n: Int; var mean: Double }
    let typed: Stats = try await interpreter.call("stats", arguments: [[1.0, 2.0]])
    #expect(typed == Stats(n: 2, mean: 1.5))

    try await interpreter.prepareMain(["config": ["debug": true]])
    #expect(try await interpreter.eval("config['debug']") == true)
    let top = try await interpreter.withPython { python in
        try python.import("collections").attribute("Counter").call("abracadabra")
            .attribute("most_common").call(1).value
    }
    #expect(top == [.tuple(["a", 5])])
    await interpreter.close()
}
