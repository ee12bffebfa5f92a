import Foundation
import Testing

import Subinterpreters

/// The README's Swift examples, kept compiling and true. Each test holds one README block, line
/// for line (a `{ … }` there is a real body here), and `readmeBlocksAreTheseTests` checks that
/// every line of every Swift block in the README still appears in this file.
@Suite struct ReadmeExampleTests {
    @Test func theSwiftAPIExampleWorks() async throws {
        let interpreter = try await Interpreter()            // starts Python on first use
        try await interpreter.exec("""
            def stats(xs, weights=None):
                weights = weights or [1] * len(xs)
                return {"n": len(xs), "mean": sum(w * x for w, x in zip(weights, xs)) / sum(weights)}
            """)
        let xs = [1, 2, 3, 4]
        let result = try await interpreter.call("stats", xs)             // PythonValue: {'n': 4, 'mean': 2.5}
        let mean = result["mean"]?.doubleValue                            // 2.5
        #expect(result.description == "{'n': 4, 'mean': 2.5}")
        #expect(mean == 2.5)

        // Functions in modules, keyword arguments, Codable in and out.
        let joined = try await interpreter.call("os.path.join", "a", "b")
        let weighted = try await interpreter.call("stats", xs, keywords: ["weights": [1, 1, 1, 5]])   // mean 3.25
        struct Stats: Codable { var n: Int; var mean: Double }
        let typed: Stats = try await interpreter.call("stats", arguments: [[1.0, 2.0]])
        #expect(joined == "a/b")
        #expect(weighted["mean"] == 3.25)
        #expect(typed.n == 2 && typed.mean == 1.5)

        // Seed __main__, or work with Python objects on the interpreter's own thread.
        try await interpreter.prepareMain(["config": ["debug": true]])
        let top = try await interpreter.withPython { python in
            try python.import("collections").attribute("Counter").call("abracadabra")
                .attribute("most_common").call(1).value
        }
        #expect(try await interpreter.eval("config['debug']") == true)
        #expect(top == [.tuple(["a", 5])])
        await interpreter.close()   // waits for work already given, then ends the interpreter
    }

    @Test func thePoolExampleWorks() async throws {
        // The README's project: myapp/tasks.py with a `score` function.
        let projectDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("project")).path
        try FileManager.default.createDirectory(atPath: projectDirectory + "/myapp", withIntermediateDirectories: true)
        try "".write(toFile: projectDirectory + "/myapp/__init__.py", atomically: true, encoding: .utf8)
        try "def score(text):\n    return len(text)\n".write(toFile: projectDirectory + "/myapp/tasks.py", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: projectDirectory) }
        let inputs: [PythonValue] = ["a", "bb", "ccc"]

        let pool = try await InterpreterPool(configuration: .init(
            workers: 4,                                  // default: CPU count
            setup: "from myapp.tasks import score",      // the initializer, run once in each worker
            path: [projectDirectory],                    // where myapp/ is: the library adds nothing to sys.path
            maxTasksPerWorker: 10_000,                   // then the worker is replaced by a fresh interpreter
            timeout: .seconds(30)))                      // default deadline of every call

        let one = try await pool.call("score", "some input")                    // on the first free worker
        let handle = try pool.submit("score", arguments: ["other"])             // await handle.value, or handle.cancel()
        var mapped: [PythonValue] = []
        for try await result in pool.map("score", inputs) { mapped.append(result) }
        var items: [PoolMapItem] = []
        for try await item in pool.mapResults("score", inputs, ordered: false) { items.append(item) }
        await pool.shutdown(cancelPending: false)                               // finish queued work, or drop it with true
        #expect(one == 10)
        #expect(try await handle.value == 5)
        #expect(mapped == [1, 2, 3])
        #expect(Set(items.compactMap { try? $0.result.get() }) == [1, 2, 3])
    }

    @Test func theChannelsExampleWorks() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec("""
            import subinterp
            def serve():
                n = subinterp.queue("jobs").get()["n"]
                for value in (n, n + 1):
                    subinterp.queue("results").put(value)
            """)
        let served = Task { try await interpreter.call("serve") }

        let jobs = PythonQueue.named("jobs")                       // Python: subinterp.queue("jobs")
        try await jobs.put(["n": 1])                               // waits while full; cancellable
        let next = try await PythonQueue.named("results").get(timeout: .seconds(5))
        let stream = Task {
            for try await value in PythonQueue.named("results").values { return value }   // ends when the task is cancelled
            return nil
        }
        let buffer = SharedBuffer(size: 1 << 20)
        try await interpreter.prepareMain(["buf": .buffer(buffer)])        // the same memory, not a copy
        buffer.withUnsafeMutableBytes { $0[0] = 1 }

        #expect(next == 1)
        #expect(try await stream.value == 2)
        _ = try await served.value
        #expect(try await interpreter.eval("buf.view[0]") == 1)
        await interpreter.close()
    }

    /// Every line of every Swift block in the README appears in this file, so the README shows
    /// only code these tests compile and run.
    @Test func readmeBlocksAreTheseTests() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let tests = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let testLines = Set(tests.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
        var inSwift = false
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                inSwift = line == "```swift"
                continue
            }
            let code = line.trimmingCharacters(in: .whitespaces)
            guard inSwift, !code.isEmpty, !code.contains("…"), !code.hasPrefix(".package("), code != "import Subinterpreters"
            else { continue }
            #expect(testLines.contains(code), "README line not in ReadmeExampleTests: \(code)")
        }
    }
}
