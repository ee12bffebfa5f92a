import BigInt
import CPython
import Foundation
import Testing

@testable import Subinterpreters

/// A small seeded generator (SplitMix64): the same seed gives the same values on every run, so a
/// failure names the seed that reproduces it.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random nested `PythonValue`s covering every case of the item encoding (ENCODING.md).
struct ValueGenerator {
    var random: SeededRandom
    /// Pickled leaves, made by the Python under test so their bytes are what it writes itself.
    let pickled: [[UInt8]]
    let queue: PythonQueue
    let buffer: SharedBuffer

    mutating func value(depth: Int = 0) -> PythonValue {
        let containers = depth < 4 ? 3 : 0
        switch Int.random(in: 0..<(11 + containers), using: &random) {
        case 0: return .none
        case 1: return .bool(Bool.random(using: &random))
        case 2: return .int(BigInt(Int64.random(in: .min ... .max, using: &random)))
        case 3: return .int(bigInt())
        case 4: return .float(float())
        case 5: return .string(string())
        case 6: return .bytes((0..<Int.random(in: 0..<24, using: &random)).map { _ in UInt8.random(in: 0 ... 255, using: &random) })
        case 7: return .pickled(pickled.randomElement(using: &random)!)
        case 8: return .queue(queue)
        case 9: return .buffer(buffer)
        case 10: return .int(BigInt([0, 1, -1, Int.max, Int.min].randomElement(using: &random)!))
        case 11: return .list((0..<Int.random(in: 0..<6, using: &random)).map { _ in value(depth: depth + 1) })
        case 12: return .tuple((0..<Int.random(in: 0..<6, using: &random)).map { _ in value(depth: depth + 1) })
        default:
            // Keys that are distinct in Python too (1 and True, or 1 and 1.0, would collide).
            let count = Int.random(in: 0..<6, using: &random)
            return .dict((0..<count).map { i in (key: key(i), value: value(depth: depth + 1)) })
        }
    }

    mutating func key(_ i: Int) -> PythonValue {
        switch Int.random(in: 0..<4, using: &random) {
        case 0: return .string("k\(i)-" + string())
        case 1: return .int(BigInt(1000 + i) * (Bool.random(using: &random) ? 1 : -1) << Int.random(in: 0..<100, using: &random))
        case 2: return .tuple([.string("t\(i)"), .bytes([UInt8(i)])])
        default: return i == 0 ? .none : .string("s\(i)")
        }
    }

    mutating func bigInt() -> BigInt {
        let bits = Int.random(in: 64..<300, using: &random)
        var magnitude = BigInt(1) << bits
        magnitude += BigInt(UInt64.random(in: 0 ... .max, using: &random))
        return Bool.random(using: &random) ? magnitude : -magnitude
    }

    mutating func float() -> Double {
        switch Int.random(in: 0..<6, using: &random) {
        case 0: return [.infinity, -.infinity, .nan, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude].randomElement(using: &random)!
        default: return Double(bitPattern: UInt64.random(in: 0 ... .max, using: &random))
        }
    }

    mutating func string() -> String {
        let ranges: [ClosedRange<UInt32>] = [0x00...0x7F, 0xA0...0x2FF, 0x4E00...0x4E80, 0x1F300...0x1F64F, 0x0300...0x036F]
        var text = ""
        for _ in 0..<Int.random(in: 0..<12, using: &random) {
            let range = ranges.randomElement(using: &random)!
            text.unicodeScalars.append(Unicode.Scalar(UInt32.random(in: range, using: &random))!)
        }
        return text
    }
}

/// Python helpers for the round trips: an exact comparison and the hostile objects.
private let roundTripHelpers = #"""
import math, pickle, random, subinterp

def same(a, b):
    """Equal and of exactly the same types, all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b

def relay(incoming, outgoing, expected):
    """Takes what Swift put (the C decoder), checks it against the same value passed as an
    argument (Swift's conversion), and puts it back (the C encoder)."""
    received = incoming.get(timeout=10)
    if not same(received, expected):
        raise AssertionError(f"queue gave {received!r}, the call gave {expected!r}")
    outgoing.put(received)

PICKLED = [pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for v in (
    __import__("decimal").Decimal("1.10"), __import__("fractions").Fraction(1, 3), range(3, 9, 2),
    complex(1, -2), frozenset(), bytearray(b"ab"), __import__("collections").OrderedDict(a=1))]

class Hostile:
    """Changes the container that holds it while it is pickled, and pickles as 7."""
    def __init__(self, parent, action):
        self.parent = parent
        self.action = action

    def __reduce__(self):
        parent, action = self.parent, self.action
        self.parent = None  # the container may now be freed, and this object with it
        if type(parent) is list:
            if action == 0: parent.append("added")
            elif action == 1 and parent: parent.pop()
            elif action == 2: parent.clear()
            else: parent.insert(0, "front")
        else:
            if action == 0: parent[f"added{len(parent)}"] = 2
            elif action == 1 and parent: del parent[next(iter(parent))]
            elif action == 2: parent.clear()
            else: parent.update({f"more{i}": i for i in range(20)})
        return (int, (7,))

def build(seed):
    """A random nested value with hostile objects in it, and what it must arrive as: each
    container as it was when the encoder reached it (before its own elements ran any code)."""
    rng = random.Random(seed)
    def make(depth):
        kind = rng.randrange(6 if depth < 4 else 3)
        if kind == 0:
            value = rng.choice([None, True, -5, 2 ** 70, 1.5, "text", b"raw"])
            return value, value
        if kind in (1, 2):
            return "leaf", "leaf"
        if kind in (3, 4):
            items, expected = [], []
            for _ in range(rng.randrange(6)):
                if rng.random() < 0.3:
                    items.append(Hostile(items, rng.randrange(4)))
                    expected.append(7)
                else:
                    value, wanted = make(depth + 1)
                    items.append(value)
                    expected.append(wanted)
            if kind == 4 and rng.random() < 0.5:
                return tuple(items), tuple(expected)
            return items, expected
        mapping, expected = {}, {}
        for i in range(rng.randrange(6)):
            if rng.random() < 0.3:
                mapping[f"h{i}"] = Hostile(mapping, rng.randrange(4))
                expected[f"h{i}"] = 7
            else:
                mapping[f"k{i}"], expected[f"k{i}"] = make(depth + 1)
        return mapping, expected
    value, expected = make(0)
    holder = [value]
    return holder, [expected]

def hostile_through_queue(seed):
    """Python → C encoder → C decoder → Python."""
    value, expected = build(seed)
    q = subinterp.Queue()
    q.put(value)
    del value
    got = q.get(timeout=10)
    if not same(got, expected):
        raise AssertionError(f"seed {seed}: the queue gave {got!r}, expected {expected!r}")

def hostile_value(seed):
    return build(seed)[0]

def hostile_expected(seed):
    return build(seed)[1]

def hostile_put(seed, queue):
    value, _ = build(seed)
    queue.put(value)

def echo(value):
    return value

def check_from(seed, queue):
    check(seed, queue.get(timeout=10))

def check(seed, got):
    expected = build(seed)[1]
    if not same(got, expected):
        raise AssertionError(f"seed {seed}: got {got!r}, expected {expected!r}")
"""#

@Suite struct PythonValueRoundTripTests {
    /// Random values cross every path of the three codecs and arrive as they left: Swift's
    /// conversion (`PythonValue` → Python → `PythonValue`), and Swift's `ItemCoding` → the C
    /// decoder → the C encoder → `ItemCoding`, checked in Python against the converted value.
    @Test func randomValuesSurviveEveryCodec() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec(roundTripHelpers, filename: "roundtrip.py")
        guard case .list(let blobs) = try await interpreter.eval("PICKLED") else {
            Issue.record("PICKLED is not a list")
            return
        }
        let pickled = blobs.compactMap { value -> [UInt8]? in
            if case .bytes(let bytes) = value { return bytes }
            return nil
        }
        var generator = ValueGenerator(random: SeededRandom(seed: 20_260_127), pickled: pickled, queue: PythonQueue(), buffer: SharedBuffer(size: 16))
        let incoming = PythonQueue(), outgoing = PythonQueue()
        for round in 0..<300 {
            let value = generator.value()
            #expect(try await interpreter.call("same", value, value) == true, "round \(round): \(value)")
            let echoed = try await interpreter.call("echo", value)
            #expect(echoed == value, "round \(round): the conversion gave \(echoed) for \(value)")
            try await incoming.put(value)
            _ = try await interpreter.call("relay", arguments: [.queue(incoming), .queue(outgoing), value])
            let back = try await outgoing.get(timeout: .seconds(10))
            #expect(back == value, "round \(round): the queues gave \(back) for \(value)")
        }
        await interpreter.close()
    }

    /// `__reduce__` methods that grow, shrink, clear or free the container being encoded cannot
    /// corrupt what arrives through a queue, or read freed memory: the C encoder writes a
    /// snapshot. (Before, a dict that grew while encoded delivered shifted values.)
    @Test func hostileReduceCannotCorruptWhatAQueueDelivers() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec(roundTripHelpers, filename: "roundtrip.py")
        // The issue's case: a value whose pickling adds a key to its own dict.
        try await interpreter.exec("""
            d = {"a": None}
            d["a"] = Hostile(d, 0)
            q = subinterp.Queue()
            q.put([d, "next"])
            assert same(q.get(), [{"a": 7}, "next"]), "a dict that grew while encoded"
            """)
        for seed in 0..<150 {
            _ = try await interpreter.call("hostile_through_queue", PythonValue(seed))
        }
        await interpreter.close()
    }

    /// The same for Swift's conversion out of Python, and for Swift's item codec between two C
    /// ones. (Before, a list that shrank while converted trapped the whole process.)
    @Test func hostileReduceCannotCrashOrCorruptSwiftsConversion() async throws {
        let interpreter = try await Interpreter()
        try await interpreter.exec(roundTripHelpers, filename: "roundtrip.py")
        try await interpreter.exec("""
            shrinking = []
            shrinking.extend([Hostile(shrinking, 2), 1, 2, 3])
            """)
        // The hostile object crosses pickled, as 7.
        let shrunk = try await interpreter.eval("shrinking")
        #expect(try await interpreter.call("same", shrunk, [7, 1, 2, 3]) == true, "\(shrunk)")
        let relay = PythonQueue()
        for seed in 0..<150 {
            // Swift's conversion out of Python, and back in.
            let converted = try await interpreter.call("hostile_value", PythonValue(seed))
            _ = try await interpreter.call("check", PythonValue(seed), converted)
            // C encoder → Swift's decoder → Swift's encoder → C decoder.
            _ = try await interpreter.call("hostile_put", PythonValue(seed), .queue(relay))
            let relayed = try await relay.get(timeout: .seconds(10))
            #expect(relayed == converted, "seed \(seed)")
            try await relay.put(relayed)
            _ = try await interpreter.call("check_from", PythonValue(seed), .queue(relay))
        }
        await interpreter.close()
    }

    /// An item with bytes after its value is corrupt for both decoders, and the queue handle in
    /// those bytes is released with the item instead of leaking.
    @Test func decodersConsumeTheWholeItem() async throws {
        /// `None` followed by a queue handle no decoder reaches; only the item holds the queue.
        func itemWithTrailingHandle() -> (item: OpaquePointer, queueID: Int64) {
            let queue = PythonQueue()
            var bytes: [UInt8] = [UInt8(ascii: "N"), UInt8(ascii: "Q")]
            cpy_queue_retain(queue.handle)
            withUnsafeBytes(of: UInt(bitPattern: UnsafeRawPointer(queue.handle))) { bytes.append(contentsOf: $0) }
            return (bytes.withUnsafeBufferPointer { cpy_item_create($0.baseAddress, $0.count) }!, queue.id)
        }
        func queueExists(_ id: Int64) -> Bool {
            guard let found = cpy_queue_find(id) else { return false }
            cpy_queue_release(found)
            return true
        }

        let (swiftItem, swiftQueue) = itemWithTrailingHandle()
        #expect(queueExists(swiftQueue))
        let swiftError = #expect(throws: SubinterpreterError.self) { try ItemCoding.decode(swiftItem) }
        #expect(swiftError?.message.contains("corrupt") == true)
        #expect(!queueExists(swiftQueue), "the handle after the value leaked")

        let interpreter = try await Interpreter()
        let carrier = PythonQueue()
        let (pythonItem, pythonQueue) = itemWithTrailingHandle()
        #expect(cpy_queue_put(carrier.handle, pythonItem, 0, 0, 0) == 0)
        try await interpreter.prepareMain(["carrier": .queue(carrier)])
        let pythonError = await #expect(throws: SubinterpreterError.self) { try await interpreter.eval("carrier.get(timeout=5)") }
        #expect(pythonError?.pythonException?.message.contains("corrupt") == true)
        await interpreter.close()
        #expect(!queueExists(pythonQueue), "the handle after the value leaked")
    }
}
