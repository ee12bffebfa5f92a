import BigInt

import CPython

/// The item encoding (Sources/CPython/ENCODING.md), for values made in Swift.
enum ItemCoding {
    static func encode(_ value: PythonValue) throws -> OpaquePointer {
        var bytes: [UInt8] = []
        var retained: [() -> Void]? = []
        do {
            try write(value, into: &bytes, retained: &retained, depth: 0)
        } catch {
            for undo in retained ?? [] { undo() }
            throw error
        }
        guard let item = bytes.withUnsafeBufferPointer({ cpy_item_create($0.baseAddress, $0.count) }) else {
            for undo in retained ?? [] { undo() }
            throw SubinterpreterError(.runtimeFailed, "out of memory encoding a value")
        }
        return item
    }

    /// The item's bytes, for a value that leaves this process (to a pool's worker process):
    /// queues and shared buffers live in this process's memory and cannot go with it.
    static func encodeBytes(_ value: PythonValue) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var noHandles: [() -> Void]? = nil
        try write(value, into: &bytes, retained: &noHandles, depth: 0)
        return bytes
    }

    /// The value of an item's bytes from another process (which never holds queues or buffers).
    static func decodeBytes(_ bytes: UnsafeBufferPointer<UInt8>) throws -> PythonValue {
        var offset = 0
        let value = try read(bytes, &offset, handles: false)
        guard offset == bytes.count else {
            throw SubinterpreterError(.runtimeFailed, "corrupt item from a worker process (bytes after the value)")
        }
        return value
    }

    /// `retained` collects how to undo each handle's reference; nil refuses handles.
    private static func write(_ value: PythonValue, into bytes: inout [UInt8], retained: inout [() -> Void]?, depth: Int) throws {
        guard depth < 512 else {
            throw SubinterpreterError(.invalidArgument, "value nested more than 512 levels deep; flatten it or pass it pickled")
        }
        func tag(_ t: Character) { bytes.append(t.asciiValue!) }
        func length(_ n: Int) { withUnsafeBytes(of: UInt64(n).littleEndian) { bytes.append(contentsOf: $0) } }
        func blob(_ t: Character, _ data: some Collection<UInt8>) {
            tag(t)
            length(data.count)
            bytes.append(contentsOf: data)
        }
        switch value {
        case .none: tag("N")
        case .bool(let b): tag(b ? "T" : "F")
        case .int(let n):
            if let small = Int64(exactly: n) {
                tag("i")
                withUnsafeBytes(of: small.littleEndian) { bytes.append(contentsOf: $0) }
            } else {
                blob("I", Array((n < 0 ? "-0x" + String(n.magnitude, radix: 16) : "0x" + String(n, radix: 16)).utf8))
            }
        case .float(let d):
            tag("f")
            withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        case .string(let s): blob("s", Array(s.utf8))
        case .bytes(let b): blob("b", b)
        case .pickled(let p): blob("p", p)
        case .list(let items), .tuple(let items):
            if case .list = value { tag("l") } else { tag("t") }
            length(items.count)
            for item in items { try write(item, into: &bytes, retained: &retained, depth: depth + 1) }
        case .dict(let items):
            tag("d")
            length(items.count)
            for (key, item) in items {
                try write(key, into: &bytes, retained: &retained, depth: depth + 1)
                try write(item, into: &bytes, retained: &retained, depth: depth + 1)
            }
        case .queue where retained == nil, .buffer where retained == nil:
            throw SubinterpreterError(
                .invalidArgument, "a subinterp.Queue or SharedBuffer cannot go to a worker process; it lives in this process's memory")
        case .queue(let queue):
            tag("Q")
            cpy_queue_retain(queue.handle)
            retained?.append { cpy_queue_release(queue.handle) }
            withUnsafeBytes(of: UInt(bitPattern: UnsafeRawPointer(queue.handle))) { bytes.append(contentsOf: $0) }
        case .buffer(let buffer):
            tag("B")
            cpy_buffer_retain(buffer.handle)
            retained?.append { cpy_buffer_release(buffer.handle) }
            withUnsafeBytes(of: UInt(bitPattern: UnsafeRawPointer(buffer.handle))) { bytes.append(contentsOf: $0) }
        }
    }

    /// Decodes and frees an item. Queues and buffers in it get references of their own, so the
    /// item is freed the same way whether decoding succeeds or not.
    static func decode(_ item: OpaquePointer) throws -> PythonValue {
        let data = UnsafeBufferPointer(start: cpy_item_data(item), count: cpy_item_size(item))
        var offset = 0
        defer { cpy_item_free(item) }
        let value = try read(data, &offset, handles: true)
        guard offset == data.count else {
            throw SubinterpreterError(.runtimeFailed, "corrupt item in a queue (bytes after the value)")
        }
        return value
    }

    private static func read(_ data: UnsafeBufferPointer<UInt8>, _ offset: inout Int, handles: Bool) throws -> PythonValue {
        func corrupt() -> SubinterpreterError { SubinterpreterError(.runtimeFailed, "corrupt item in a queue") }
        func word() throws -> UInt64 {
            guard offset + 8 <= data.count else { throw corrupt() }
            var value: UInt64 = 0
            for i in (0..<8).reversed() { value = value << 8 | UInt64(data[offset + i]) }
            offset += 8
            return value
        }
        func blob() throws -> ArraySlice<UInt8> {
            let n = try word()
            guard n <= UInt64(data.count - offset) else { throw corrupt() }
            defer { offset += Int(n) }
            return ArraySlice(data[offset..<offset + Int(n)])
        }
        /// A count of values, each at least `minimum` bytes: one past the end is corrupt.
        func count(_ minimum: UInt64) throws -> Int {
            let n = try word()
            guard n <= UInt64(data.count - offset) / minimum else { throw corrupt() }
            return Int(n)
        }
        guard offset < data.count else { throw corrupt() }
        let tag = Character(UnicodeScalar(data[offset]))
        offset += 1
        switch tag {
        case "N": return .none
        case "T": return .bool(true)
        case "F": return .bool(false)
        case "i": return .int(BigInt(Int64(bitPattern: try word())))
        case "f": return .float(Double(bitPattern: try word()))
        case "I":
            let text = String(decoding: try blob(), as: UTF8.self)
            let negative = text.hasPrefix("-")
            guard text.dropFirst(negative ? 1 : 0).hasPrefix("0x"),
                let magnitude = BigInt(text.dropFirst(negative ? 3 : 2), radix: 16)
            else { throw corrupt() }
            return .int(negative ? -magnitude : magnitude)
        case "s": return .string(String(decoding: try blob(), as: UTF8.self))
        case "b": return .bytes(Array(try blob()))
        case "p": return .pickled(Array(try blob()))
        case "l", "t":
            let count = try count(1)
            var items: [PythonValue] = []
            items.reserveCapacity(count)
            for _ in 0..<count { items.append(try read(data, &offset, handles: handles)) }
            return tag == "l" ? .list(items) : .tuple(items)
        case "d":
            let count = try count(2)
            var items: [(key: PythonValue, value: PythonValue)] = []
            items.reserveCapacity(count)
            for _ in 0..<count { items.append((try read(data, &offset, handles: handles), try read(data, &offset, handles: handles))) }
            return .dict(items)
        case "Q", "B":
            guard handles else { throw corrupt() }
            guard let pointer = OpaquePointer(bitPattern: UInt(truncatingIfNeeded: try word())) else { throw corrupt() }
            // A reference of the value's own; the item's is dropped when the item is freed.
            if tag == "Q" {
                cpy_queue_retain(pointer)
                return .queue(PythonQueue(owning: pointer))
            }
            cpy_buffer_retain(pointer)
            return .buffer(SharedBuffer(owning: pointer))
        default:
            throw corrupt()
        }
    }
}
