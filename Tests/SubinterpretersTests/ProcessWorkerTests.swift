import BigInt
import Foundation
import Logging
import Testing

@testable import Subinterpreters

/// The repository's python/subinterp/_process_worker.py, the codec's Python side.
private var processWorkerSource: String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("python/subinterp/_process_worker.py").path
}

/// Runs `script` with the test runtime's python (no shell), its arguments after it; returns stdout.
private func runPython(_ script: String, _ arguments: [String]) async throws -> String {
    let python = try await PythonRuntime.start().installation.executable
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", script] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.standardError
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0, "the python side of the test failed")
    return String(decoding: data, as: UTF8.self)
}

/// Frames as the worker protocol writes them: a little-endian u64 length, then the item.
private func frames(_ items: [[UInt8]]) -> Data {
    var data = Data()
    for item in items {
        withUnsafeBytes(of: UInt64(item.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: item)
    }
    return data
}

private func unframe(_ data: Data) -> [[UInt8]] {
    let bytes = [UInt8](data)
    var items: [[UInt8]] = [], offset = 0
    while offset + 8 <= bytes.count {
        let size = (0..<8).reversed().reduce(0) { $0 << 8 | Int(bytes[offset + $1]) }
        items.append(Array(bytes[offset + 8..<offset + 8 + size]))
        offset += 8 + size
    }
    return items
}

/// The value without queues and buffers, which stay in their process.
private func withoutHandles(_ value: PythonValue) -> PythonValue {
    switch value {
    case .queue, .buffer: .none
    case .list(let items): .list(items.map(withoutHandles))
    case .tuple(let items): .tuple(items.map(withoutHandles))
    case .dict(let items): .dict(items.map { ($0.key, withoutHandles($0.value)) })
    default: value
    }
}

/// Loads the worker's codec from the repository, decodes every frame of argv[2], writes each
/// value encoded again to argv[3], then values of its own (argv[4] of them, seeded) to argv[5].
private let pythonCodecScript = #"""
import fractions, collections, enum, importlib.util, math, random, struct, sys
spec = importlib.util.spec_from_file_location("process_worker", sys.argv[1])
codec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(codec)

def read(path):
    data, items, offset = open(path, "rb").read(), [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<Q", data, offset)
        items.append(data[offset + 8:offset + 8 + size])
        offset += 8 + size
    return items

def write(path, items):
    with open(path, "wb") as out:
        for item in items:
            out.write(struct.pack("<Q", len(item)) + item)

received = read(sys.argv[2])
# The first value Swift sent is a known one: Python must read it as that, not only round-trip it.
expected = [2**100, -(2**70), -2.5, "é€", b"\x00\xff", (None, True, False), {"k": [1]}]
if codec.decode(received[0]) != expected or type(codec.decode(received[0])[5]) is not tuple:
    sys.exit(f"Swift's known value decoded as {codec.decode(received[0])!r}")
write(sys.argv[3], [codec.encode(codec.decode(item)) for item in received])

class Colour(enum.IntEnum):
    RED = 1

rng = random.Random(20261127)
def value(depth=0):
    choice = rng.randrange(15 if depth < 4 else 11)
    if choice == 0: return None
    if choice == 1: return rng.random() < 0.5
    if choice == 2: return rng.randrange(-2**63, 2**63)
    if choice == 3: return rng.choice([1, -1]) * rng.randrange(2**63, 2**300)
    if choice == 4: return rng.choice([math.inf, -math.inf, -0.0, 5e-324, rng.random() * 1e300, struct.unpack("<d", rng.randbytes(8))[0]])
    if choice == 5: return "".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0x4e00, 0x4e80), rng.randrange(0x1f300, 0x1f64f)])) for _ in range(rng.randrange(10)))
    if choice == 6: return rng.randbytes(rng.randrange(20))
    # The pickled fallback: types without a tag of their own.
    if choice == 7: return fractions.Fraction(rng.randrange(1, 100), rng.randrange(1, 100))
    if choice == 8: return {rng.randrange(100) for _ in range(3)}
    if choice == 9: return Colour.RED
    if choice == 10: return collections.OrderedDict(a=1)
    if choice == 11: return [value(depth + 1) for _ in range(rng.randrange(5))]
    if choice == 12: return tuple(value(depth + 1) for _ in range(rng.randrange(5)))
    return {f"k{i}" if i % 2 else i * 7: value(depth + 1) for i in range(rng.randrange(5))}

known = [2**100, -2**70, b"\x00\xff", {"a": (1, 2.5)}, fractions.Fraction(1, 3), "\udc80"]
write(sys.argv[5], [codec.encode(known)] + [codec.encode(value()) for _ in range(int(sys.argv[4]))])
print(codec.encode(fractions.Fraction(1, 3))[9:].hex())
"""#

@Suite struct ProcessCodecTests {
    /// ENCODING.md in Swift (`ItemCoding`) and in Python (the worker's codec) agree byte for
    /// byte: random values Swift encodes come back from Python's decode + encode unchanged, and
    /// random values Python encodes (big ints, bytes, nested containers, pickled fallbacks)
    /// survive Swift's decode + encode unchanged.
    @Test func swiftAndPythonCodecsAgreeByteForByte() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-codec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pickles = try await runPython(
            "import pickle, fractions, collections; print(*(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL).hex() for v in "
                + "(fractions.Fraction(2, 7), {1, 2}, collections.OrderedDict(z=0), complex(1, 2))))", [])
        let pickled = pickles.split(whereSeparator: \.isWhitespace).map { hex in
            stride(from: 0, to: hex.count, by: 2).map { UInt8(hex.dropFirst($0).prefix(2), radix: 16)! }
        }
        var generator = ValueGenerator(random: SeededRandom(seed: 20_261_127), pickled: pickled, queue: PythonQueue(), buffer: SharedBuffer(size: 8))
        let known = PythonValue.list([
            .int(BigInt(1) << 100), .int(-(BigInt(1) << 70)), .float(-2.5), .string("é€"), .bytes([0, 255]), .tuple([.none, .bool(true), .bool(false)]),
            .dict([(key: .string("k"), value: .list([.int(1)]))]),
        ])
        let values = [known] + (0..<300).map { _ in withoutHandles(generator.value()) }
        let items = try values.map { try ItemCoding.encodeBytes($0) }
        let (swiftOut, pythonBack, pythonOwn) = (
            directory.appendingPathComponent("swift"), directory.appendingPathComponent("back"), directory.appendingPathComponent("own")
        )
        try frames(items).write(to: swiftOut)
        let fractionPickle = try await runPython(
            pythonCodecScript, [processWorkerSource, swiftOut.path, pythonBack.path, "300", pythonOwn.path])
            .trimmingCharacters(in: .whitespacesAndNewlines)

        let back = unframe(try Data(contentsOf: pythonBack))
        #expect(back.count == items.count)
        for (index, (sent, returned)) in zip(items, back).enumerated() {
            #expect(sent == returned, "value \(index): Python wrote other bytes for \(values[index])")
        }

        let own = unframe(try Data(contentsOf: pythonOwn))
        #expect(own.count == 301)
        for (index, item) in own.enumerated() {
            let value = try item.withUnsafeBufferPointer { try ItemCoding.decodeBytes($0) }
            #expect(try ItemCoding.encodeBytes(value) == item, "Python's value \(index) changed on its way through Swift: \(value)")
        }
        let theirs = try own[0].withUnsafeBufferPointer { try ItemCoding.decodeBytes($0) }
        guard case .list(let parts) = theirs, parts.count == 6 else {
            Issue.record("the known values decoded as \(theirs)")
            return
        }
        #expect(parts[0] == .int(BigInt(1) << 100))
        #expect(parts[1] == .int(-(BigInt(1) << 70)))
        #expect(parts[2] == .bytes([0, 255]))
        #expect(parts[3] == .dict([(key: .string("a"), value: .tuple([.int(1), .float(2.5)]))]))
        #expect(parts[4] == .pickled(stride(from: 0, to: fractionPickle.count, by: 2).map {
            UInt8(fractionPickle.dropFirst($0).prefix(2), radix: 16)!
        }))
        guard case .pickled = parts[5] else {
            Issue.record("a str with a lone surrogate must cross pickled, got \(parts[5])")
            return
        }
    }

    @Test func queuesCannotGoToAWorkerProcess() {
        #expect(throws: SubinterpreterError.self) { try ItemCoding.encodeBytes(.list([.queue(PythonQueue())])) }
    }
}

@Suite struct ProcessPoolTests {
    private func pool(_ configure: (inout InterpreterPool.Configuration) -> Void = { _ in }, logger: Logger? = nil) async throws
        -> InterpreterPool
    {
        var configuration = InterpreterPool.Configuration(workers: 2)
        configuration.isolation = .processes
        configure(&configuration)
        return try await InterpreterPool(configuration: configuration, logger: logger)
    }

    @Test func runsCallsByNameInWorkerProcesses() async throws {
        let pool = try await pool()
        #expect(pool.isolation == .processes)
        let factorial = try await pool.submit("math.factorial", arguments: [.int(30)]).value
        #expect(factorial == .int(BigInt("265252859812191058636308480000000")))
        #expect(try await pool.call("divmod", 17, 5) == .tuple([.int(3), .int(2)]))
        #expect(try await pool.call("dict", keywords: ["a": 1, "b": "x"]) == .dict([(.string("a"), .int(1)), (.string("b"), .string("x"))]))
        // Worker processes, not this one.
        let pids = Set(try await (0..<6).asyncMap { _ in try await pool.call("os.getpid") })
        #expect(!pids.contains(.int(BigInt(getpid()))))
        do {
            _ = try await pool.call("math.sqrt", -1.0)
            Issue.record("math.sqrt(-1) returned")
        } catch let error as SubinterpreterError {
            #expect(error.pythonException?.typeName == "ValueError")
        }
        let statistics = pool.statistics
        #expect(statistics.completed == 9 && statistics.failed == 1, "\(statistics)")
        await pool.shutdown()
    }

    @Test func refusesAClosureWithOneClearError() async throws {
        let pool = try await pool()
        do {
            _ = try pool.submit { _ in 1 }
            Issue.record("a closure was accepted by a pool of processes")
        } catch let error as SubinterpreterError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("a Swift closure cannot run in another process"), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
        await pool.shutdown()
    }

    @Test func aDeadWorkerFailsItsCallWithTheSignalAndIsReplaced() async throws {
        let pool = try await pool { $0.workers = 1 }
        let before = try await pool.call("os.getpid")
        do {
            _ = try await pool.call("os.kill", before, .int(BigInt(SIGSEGV)))
            Issue.record("os.kill(SIGSEGV) returned")
        } catch let error as SubinterpreterError {
            #expect(error.code == .workerProcessDied)
            #expect(error.pythonException?.typeName == "SIGSEGV")
            #expect(error.message.contains("died of SIGSEGV") && error.message.contains("a fresh process replaces it"), "\(error.message)")
        }
        do {
            _ = try await pool.call("os._exit", 3)
            Issue.record("os._exit returned")
        } catch let error as SubinterpreterError {
            #expect(error.pythonException?.typeName == "WorkerExited")
            #expect(error.message.contains("exited with status 3"), "\(error.message)")
        }
        let after = try await pool.call("os.getpid")
        #expect(after != before)
        await pool.shutdown()
    }

    /// A child killed while it waits for work (the OOM killer, an operator) is replaced at
    /// once, not when the next call finds it gone, and that call never sees the death.
    @Test func aChildKilledWhileIdleIsReplacedAtOnce() async throws {
        let log = CollectedLog()
        let pool = try await pool({ $0.workers = 1 }, logger: log.logger)
        guard case .int(let pid) = try await pool.call("os.getpid") else {
            Issue.record("os.getpid gave no int")
            return
        }
        #expect(kill(pid_t(pid), SIGKILL) == 0)
        await waitUntil("the idle worker's replacement") {
            log.all.contains { $0.contains("a worker process died of SIGKILL (signal 9) while idle; starting a fresh one") }
        }
        let next = try await pool.call("os.getpid")
        #expect(next != .int(pid))
        #expect(pool.statistics.failed == 0)
        await pool.shutdown()
    }

    @Test func aTimeoutInterruptsThePythonInTheChildAndItsFinallyRuns() async throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-finally-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: marker) }
        // The loop's body calls a function: CPython 3.13.0 can skip a frame's handlers when the
        // exception lands on a bare `while True: pass` back-edge (python/cpython#130279).
        let pool = try await pool {
            $0.workers = 1
            $0.setup = """
                import time
                def spin(marker):
                    try:
                        while True:
                            time.monotonic()
                    finally:
                        open(marker, "w").write("finally ran")
                """
        }
        do {
            _ = try await pool.call("spin", arguments: [.string(marker)], timeout: .milliseconds(300))
            Issue.record("spin returned")
        } catch let error as SubinterpreterError {
            #expect(error.code == .timedOut)
        }
        // The worker is free again once its call ended: the next call runs after the finally.
        #expect(try await pool.call("len", "abc") == .int(3))
        #expect((try? String(contentsOfFile: marker, encoding: .utf8)) == "finally ran")
        #expect(pool.statistics.timedOut == 1 && pool.statistics.abandoned == 0)
        await pool.shutdown()
    }

    /// An interrupt meant for one call that the child could not take before that call returned
    /// (here SIGUSR1 is blocked, so it stays pending) must not cancel the next call on that
    /// worker: the child raises only for the call the host named.
    @Test func aLateInterruptNeverReachesTheNextCall() async throws {
        let pool = try await pool {
            $0.workers = 1
            $0.setup = """
                import os, signal
                def hold():
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
                    signal.sigtimedwait({signal.SIGUSR1}, 60)  # the host's interrupt; 60 s is a failure bound only
                    os.kill(os.getpid(), signal.SIGUSR1)  # pending again, and still blocked
                    return "held"
                def release():
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
                    for _ in range(1000):
                        pass
                    return "released"
                """
        }
        do {
            _ = try await pool.call("hold", timeout: .milliseconds(200))
            Issue.record("hold returned before its timeout")
        } catch let error as SubinterpreterError {
            #expect(error.code == .timedOut)
        }
        // Runs once `hold` returned, on the same process, with the old interrupt still pending.
        #expect(try await pool.call("release") == .string("released"))
        #expect(pool.statistics.abandoned == 0)
        await pool.shutdown()
    }

    /// The job options hold for processes: a queue timeout fails a call that waited too long
    /// without running it, and is counted as such; the label and the start-counted timeout too.
    @Test func jobOptionsHoldForProcesses() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-fifo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("gate").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let pool = try await pool {
            $0.workers = 1
            $0.setup = "def wait_for(path):\n    with open(path) as gate:\n        return gate.read()\n"
        }
        // Holds the only worker until the test writes to the FIFO.
        let holder = try pool.submit("wait_for", arguments: [.string(fifo)], options: .init(label: "holder"))
        let starved = try pool.submit(
            "len", arguments: [.string("never")], options: .init(timeout: .milliseconds(100), timeoutStart: .start, queueTimeout: .milliseconds(200)))
        do {
            _ = try await starved.value
            Issue.record("a call ran although it waited past its queue timeout")
        } catch let error as SubinterpreterError {
            #expect(error.code == .queueTimedOut)
        }
        let writer = open(fifo, O_WRONLY)
        #expect(writer >= 0)
        _ = "open".withCString { write(writer, $0, 4) }
        close(writer)
        #expect(try await holder.value == .string("open"))
        let statistics = pool.statistics
        #expect(statistics.queueTimedOut == 1 && statistics.completed == 1 && statistics.timedOut == 0, "\(statistics)")
        await pool.shutdown()
    }

    @Test func maxMemoryPerWorkerRecyclesTheProcessByItsOwnMemory() async throws {
        let pool = try await pool {
            $0.workers = 1
            $0.maxMemoryPerWorker = 32 << 20
            $0.setup = "kept = []\ndef grow(mib):\n    kept.append(b\"\\x01\" * (mib << 20))\n    import os\n    return os.getpid()\n"
        }
        let first = try await pool.call("grow", 1)
        #expect(try await pool.call("grow", 1) == first)  // 1 MiB more is under the limit
        let big = try await pool.call("grow", 64)
        #expect(big == first)
        #expect(try await pool.call("grow", 1) != first)  // the 64 MiB one was recycled
        #expect(pool.statistics.recycled == 1)
        await pool.shutdown()
    }

    @Test func maxTasksPerWorkerRecyclesTheProcess() async throws {
        let pool = try await pool {
            $0.workers = 1
            $0.maxTasksPerWorker = 1
        }
        let first = try await pool.call("os.getpid")
        let second = try await pool.call("os.getpid")
        #expect(first != second)
        #expect(pool.statistics.recycled >= 1)
        await pool.shutdown()
    }

    /// `.auto` starts interpreters, and when the setup imports a module that refuses them
    /// (CPython's own single-phase test module), logs exactly one warning and uses processes.
    @Test func autoFallsBackToProcessesWithOneWarning() async throws {
        let log = CollectedLog()
        var configuration = InterpreterPool.Configuration(workers: 2, setup: "import _testsinglephase")
        configuration.isolation = .auto
        let pool = try await InterpreterPool(configuration: configuration, logger: log.logger)
        #expect(pool.isolation == .processes)
        #expect(try await pool.call("_testsinglephase.sum", 2, 3) == .int(5))
        let warnings = log.all.filter { $0.hasPrefix("warning:") }
        #expect(warnings.count == 1, "\(warnings)")
        #expect(warnings.first?.contains("extension module '_testsinglephase' does not support sub-interpreters: runs in 2 worker processes") == true)
        await pool.shutdown()

        // Any other load error still fails.
        configuration.setup = "raise ValueError('bad setup')"
        await #expect(throws: SubinterpreterError.self) { try await InterpreterPool(configuration: configuration) }
    }
}

extension Sequence {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// `subinterp map --isolation`, run as a user runs it.
@Suite struct MapIsolationTests {
    static let module = """
        import os, signal, time
        def crash(x):
            if x == 2:
                os.kill(os.getpid(), signal.SIGSEGV)
            return x * 10
        def spin(x):
            # The body calls a function: CPython 3.13.0 can skip a frame's handlers when the
            # interrupt lands on a bare loop's back-edge (python/cpython#130279).
            try:
                if x == 1:
                    while True:
                        time.monotonic()
                return x
            finally:
                if x == 1:
                    open(os.environ["MARKER"], "w").write("finally ran")
        def stuck(x):
            if x == 1:
                # The interrupt's signal cannot be handled: only SIGKILL ends this.
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
                while True:
                    time.monotonic()
            return os.getpid()
        """

    private func directory(_ extra: [String: String] = [:]) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subinterp-mapiso-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.module.write(to: directory.appendingPathComponent("isomod.py"), atomically: true, encoding: .utf8)
        for (name, source) in extra { try source.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return directory.path
    }

    private func records(_ stdout: String) -> [Any] {
        stdout.split(separator: "\n").map { (try? JSONSerialization.jsonObject(with: Data($0.utf8), options: .fragmentsAllowed)) ?? "?" }
    }

    private func errorType(_ record: Any) -> String? {
        ((record as? [String: Any])?["error"] as? [String: Any])?["type"] as? String
    }

    @Test func aCrashedChildGivesItsLineASignalRecordAndTheMapGoesOn() throws {
        let directory = try directory()
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "1\n2\n3\n4\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(
            ["map", "isomod:crash", "--isolation", "processes", "-j", "1", "--input", input], environment: ["PYTHONPATH": directory])
        #expect(result.status == 1)
        let lines = records(result.stdout)
        #expect(lines.count == 4, "\(result.stdout)")
        #expect(lines.first as? Int == 10)
        #expect(errorType(lines[1]) == "SIGSEGV", "\(result.stdout)")
        #expect(lines.dropFirst(2).map { $0 as? Int } == [30, 40])
        #expect(result.stderr.contains("1 of 4 lines failed"))
    }

    @Test func timeoutInterruptsThePythonInAChildAndItsFinallyRuns() throws {
        let directory = try directory()
        let marker = (directory as NSString).appendingPathComponent("marker")
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "0\n1\n2\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(
            ["map", "isomod:spin", "--isolation", "processes", "-j", "1", "--timeout", "0.5", "--input", input],
            environment: ["PYTHONPATH": directory, "MARKER": marker])
        let lines = records(result.stdout)
        #expect(lines.count == 3, "\(result.stdout)")
        #expect(lines.first as? Int == 0 && lines.last as? Int == 2)
        #expect(errorType(lines[1]) == "TimeoutError")
        #expect((try? String(contentsOfFile: marker, encoding: .utf8)) == "finally ran")
        #expect(!result.stderr.contains("abandoned"), "\(result.stderr)")
    }

    @Test func aChildBlockingTheInterruptIsKilledAfterTheGraceAndReplaced() throws {
        let directory = try directory()
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "0\n1\n2\n".write(toFile: input, atomically: true, encoding: .utf8)
        let result = try CLI.run(
            ["map", "isomod:stuck", "--isolation", "processes", "-j", "1", "--timeout", "0.5", "--input", input],
            environment: ["PYTHONPATH": directory])
        let lines = records(result.stdout)
        #expect(lines.count == 3, "\(result.stdout)")
        #expect(errorType(lines[1]) == "TimeoutError")
        // Lines 0 and 2 ran in different processes: the stuck one was killed and replaced.
        let (first, last) = (lines[0] as? Int, lines[2] as? Int)
        #expect(first != nil && last != nil && first != last, "\(result.stdout)")
        #expect(result.stderr.contains("it was killed and a fresh process replaces it"), "\(result.stderr)")
    }

    /// numpy refuses sub-interpreters: `auto` and `processes` run it, `interpreters` says in one
    /// line that numpy cannot load.
    @Test func numpyRunsUnderAutoAndProcessesAndInterpretersSaysWhyNot() throws {
        let python = try ServedApp.venvPython()
        let directory = try directory(["npmod.py": "import numpy\ndef norm(xs):\n    return float(numpy.linalg.norm(numpy.asarray(xs)))\n"])
        let input = (directory as NSString).appendingPathComponent("in.jsonl")
        try "[3, 4]\n[6, 8]\n[5, 12]\n".write(toFile: input, atomically: true, encoding: .utf8)
        for isolation in ["auto", "processes"] {
            let result = try CLI.run(
                ["map", "--python", python, "npmod:norm", "--isolation", isolation, "-j", "2", "--input", input],
                environment: ["PYTHONPATH": directory])
            #expect(result.status == 0, "\(isolation): \(result.stderr)")
            #expect(result.stdout == "5.0\n10.0\n13.0\n", "\(isolation)")
            let stderr = result.stderr.split(separator: "\n")
            if isolation == "auto" {
                #expect(stderr.count == 1, "\(result.stderr)")
                #expect(stderr.first?.contains("extension module 'numpy._core._multiarray_umath' does not support sub-interpreters") == true)
                #expect(stderr.first?.contains("runs in 2 worker processes, one call at a time each; values are copied through pipes") == true)
            } else {
                #expect(stderr.isEmpty, "\(result.stderr)")
            }
        }
        let refused = try CLI.run(
            ["map", "--python", python, "npmod:norm", "--isolation", "interpreters", "--input", input], environment: ["PYTHONPATH": directory])
        #expect(refused.status == 1)
        #expect(refused.stdout.isEmpty)
        let stderr = refused.stderr.split(separator: "\n")
        #expect(stderr.count == 1, "\(refused.stderr)")
        #expect(stderr.first?.contains("cannot load npmod:norm: extension module 'numpy._core._multiarray_umath'") == true)
    }

    @Test func isolationMustBeOneOfThree() throws {
        let result = try CLI.run(["map", "m:f", "--isolation", "threads"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--isolation must be interpreters, processes or auto"))
    }
}
