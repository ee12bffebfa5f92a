import Synchronization

/// One result of `InterpreterPool.mapResults`: the input's position and what its call gave.
public struct PoolMapItem: Sendable {
    /// The input's position in the input sequence, from 0.
    public var index: Int
    public var result: Result<PythonValue, SubinterpreterError>
}

/// How `map` groups inputs into tasks.
public enum ChunkSize: Sendable, Hashable {
    /// Chunks grow while they finish quickly and shrink when they run long, so trivial calls are
    /// batched and slow ones are spread over the workers.
    case automatic
    /// Exactly this many inputs per task.
    case fixed(Int)
}

extension InterpreterPool {
    /// Calls `function` with each input on the workers and yields the results, in input order
    /// unless `ordered` is false. At most `maxInFlight` chunks are queued or running at once, and
    /// inputs are read only as results are taken, so a huge input never sits whole in memory.
    /// With `star`, a list or tuple input is spread as positional arguments. The sequence throws
    /// the first failure; use `mapResults` to get every failure in its place instead.
    public func map<Inputs: AsyncSequence>(
        _ function: String, _ inputs: Inputs, ordered: Bool = true, star: Bool = false, chunkSize: ChunkSize = .automatic,
        maxInFlight: Int? = nil, timeout: Duration? = nil
    ) -> PoolMapValues<Inputs> where Inputs.Element == PythonValue {
        PoolMapValues(results: mapResults(
            function, inputs, ordered: ordered, star: star, chunkSize: chunkSize, maxInFlight: maxInFlight, timeout: timeout))
    }

    /// `map` over an ordinary sequence.
    public func map<Inputs: Sequence & Sendable>(
        _ function: String, _ inputs: Inputs, ordered: Bool = true, star: Bool = false, chunkSize: ChunkSize = .automatic,
        maxInFlight: Int? = nil, timeout: Duration? = nil
    ) -> PoolMapValues<SequenceOfValues<Inputs>> where Inputs.Element == PythonValue {
        map(function, SequenceOfValues(base: inputs), ordered: ordered, star: star, chunkSize: chunkSize,
            maxInFlight: maxInFlight, timeout: timeout)
    }

    /// Like `map`, but yields every input's result, failures included, with its index.
    /// A `timeout` applies to each call; with a timeout and `.automatic` chunks, each call is its
    /// own task, so one slow input cannot make its neighbours time out.
    public func mapResults<Inputs: AsyncSequence>(
        _ function: String, _ inputs: Inputs, ordered: Bool = true, star: Bool = false, chunkSize: ChunkSize = .automatic,
        maxInFlight: Int? = nil, timeout: Duration? = nil
    ) -> PoolMapResults<Inputs> where Inputs.Element == PythonValue {
        let size: ChunkSize = (timeout ?? configuration.timeout) != nil && chunkSize == .automatic ? .fixed(1) : chunkSize
        return PoolMapResults(
            pool: self, function: function, inputs: inputs, ordered: ordered, star: star, chunkSize: size,
            maxInFlight: max(1, maxInFlight ?? configuration.workers * 2), timeout: timeout ?? configuration.timeout)
    }

    /// `mapResults` over an ordinary sequence.
    public func mapResults<Inputs: Sequence & Sendable>(
        _ function: String, _ inputs: Inputs, ordered: Bool = true, star: Bool = false, chunkSize: ChunkSize = .automatic,
        maxInFlight: Int? = nil, timeout: Duration? = nil
    ) -> PoolMapResults<SequenceOfValues<Inputs>> where Inputs.Element == PythonValue {
        mapResults(function, SequenceOfValues(base: inputs), ordered: ordered, star: star, chunkSize: chunkSize,
                   maxInFlight: maxInFlight, timeout: timeout)
    }

    /// Runs one chunk on a worker: resolves the function once, calls it for each input.
    static func runChunk(_ context: PythonContext, function: String, inputs: [PythonValue], star: Bool)
        -> (results: [Result<PythonValue, SubinterpreterError>], elapsed: Duration)
    {
        let clock = ContinuousClock()
        let start = clock.now
        let resolved: OpaquePointer
        do {
            resolved = try context.resolveRaw(function)
        } catch {
            let failure = error as? SubinterpreterError ?? SubinterpreterError(.invalidArgument, "\(error)")
            return (inputs.map { _ in .failure(failure) }, clock.now - start)
        }
        defer { context.release(resolved) }
        var results: [Result<PythonValue, SubinterpreterError>] = []
        results.reserveCapacity(inputs.count)
        for input in inputs {
            let arguments: [PythonValue]
            if star, let items = input.arrayValue { arguments = items } else { arguments = [input] }
            do {
                results.append(.success(try context.call(resolved, arguments)))
            } catch {
                results.append(.failure(error as? SubinterpreterError ?? SubinterpreterError(.runtimeFailed, "\(error)")))
            }
        }
        return (results, clock.now - start)
    }
}

/// An ordinary sequence seen as an `AsyncSequence`.
public struct SequenceOfValues<Base: Sequence & Sendable>: AsyncSequence, Sendable {
    public typealias Element = Base.Element
    let base: Base

    public struct AsyncIterator: AsyncIteratorProtocol {
        var iterator: Base.Iterator
        public mutating func next() async -> Base.Element? { iterator.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(iterator: base.makeIterator()) }
}

/// The values of a map; throws the first failure.
public struct PoolMapValues<Inputs: AsyncSequence>: AsyncSequence where Inputs.Element == PythonValue {
    public typealias Element = PythonValue
    let results: PoolMapResults<Inputs>

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: PoolMapResults<Inputs>.AsyncIterator
        public mutating func next() async throws -> PythonValue? {
            guard let item = try await base.next() else { return nil }
            return try item.result.get()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: results.makeAsyncIterator()) }
}

/// The results of a map, failures included.
public struct PoolMapResults<Inputs: AsyncSequence>: AsyncSequence where Inputs.Element == PythonValue {
    public typealias Element = PoolMapItem
    let pool: InterpreterPool
    let function: String
    let inputs: Inputs
    let ordered: Bool
    let star: Bool
    let chunkSize: ChunkSize
    let maxInFlight: Int
    let timeout: Duration?

    public struct AsyncIterator: AsyncIteratorProtocol {
        let driver: MapDriver<Inputs>
        public mutating func next() async throws -> PoolMapItem? { try await driver.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(driver: MapDriver(
            pool: pool, function: function, inputs: inputs.makeAsyncIterator(), ordered: ordered, star: star,
            chunkSize: chunkSize, maxInFlight: maxInFlight, timeout: timeout))
    }
}

/// Completed chunks, handed from the workers to the iterating task.
final class MapMailbox: Sendable {
    typealias Delivery = (chunk: Int, results: [Result<PythonValue, SubinterpreterError>], elapsed: Duration)
    private let state = Mutex<(ready: [Delivery], waiter: CheckedContinuation<Delivery, Never>?)>(([], nil))

    func post(_ delivery: Delivery) {
        let waiter = state.withLock { state -> CheckedContinuation<Delivery, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.ready.append(delivery)
            return nil
        }
        waiter?.resume(returning: delivery)
    }

    func take() async -> Delivery {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Delivery? in
                if !state.ready.isEmpty { return state.ready.removeFirst() }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// The moving parts of one map, driven by the task that iterates it. Not `Sendable`: only that
/// task uses it; workers reach it only through the mailbox.
final class MapDriver<Inputs: AsyncSequence> where Inputs.Element == PythonValue {
    private let pool: InterpreterPool
    private let function: String
    private var inputs: Inputs.AsyncIterator
    private let ordered: Bool
    private let star: Bool
    private let maxInFlight: Int
    private let timeout: Duration?
    private var size: Int
    private let adaptive: Bool
    private var exhausted = false
    private var nextIndex = 0
    private var nextChunk = 0
    private var nextToEmit = 0
    private var inFlight: [Int: (first: Int, job: PoolJob)] = [:]
    private var reorder: [Int: (first: Int, results: [Result<PythonValue, SubinterpreterError>])] = [:]
    private var output: [PoolMapItem] = []
    private var outputHead = 0
    private let mailbox = MapMailbox()

    init(
        pool: InterpreterPool, function: String, inputs: Inputs.AsyncIterator, ordered: Bool, star: Bool, chunkSize: ChunkSize,
        maxInFlight: Int, timeout: Duration?
    ) {
        self.pool = pool
        self.function = function
        self.inputs = inputs
        self.ordered = ordered
        self.star = star
        self.maxInFlight = maxInFlight
        self.timeout = timeout
        switch chunkSize {
        case .automatic: (size, adaptive) = (1, true)
        case .fixed(let n): (size, adaptive) = (max(1, n), false)
        }
    }

    deinit {
        // The consumer stopped early: drop or interrupt what is still in flight.
        cancelInFlight()
    }

    private func cancelInFlight() {
        for (_, entry) in inFlight {
            pool.core.cancel(entry.job) { _ in SubinterpreterError(.cancelled, "the map was abandoned before this call finished") }
        }
    }

    func next() async throws -> PoolMapItem? {
        while true {
            if outputHead < output.count {
                defer {
                    outputHead += 1
                    if outputHead == output.count {
                        output.removeAll(keepingCapacity: true)
                        outputHead = 0
                    }
                }
                return output[outputHead]
            }
            try await fill()
            if inFlight.isEmpty { return nil }
            let delivery = await withTaskCancellationHandler {
                await mailbox.take()
            } onCancel: { [inFlight, pool] in
                for (_, entry) in inFlight {
                    pool.core.cancel(entry.job) { _ in SubinterpreterError(.cancelled, "the map was cancelled") }
                }
            }
            try Task.checkCancellation()
            guard let entry = inFlight.removeValue(forKey: delivery.chunk) else { continue }
            adapt(delivery.elapsed)
            if ordered {
                reorder[delivery.chunk] = (entry.first, delivery.results)
                while let ready = reorder.removeValue(forKey: nextToEmit) {
                    emit(first: ready.first, ready.results)
                    nextToEmit += 1
                }
            } else {
                emit(first: entry.first, delivery.results)
            }
        }
    }

    private func emit(first: Int, _ results: [Result<PythonValue, SubinterpreterError>]) {
        for (offset, result) in results.enumerated() {
            output.append(PoolMapItem(index: first + offset, result: result))
        }
    }

    private func adapt(_ elapsed: Duration) {
        guard adaptive else { return }
        if elapsed < .milliseconds(2) {
            size = min(size * 2, 4096)
        } else if elapsed > .milliseconds(50) {
            size = max(size / 2, 1)
        }
    }

    /// Reads inputs and submits chunks until `maxInFlight` chunks are out or the inputs end.
    private func fill() async throws {
        // Chunks done but waiting for an earlier one still count: the bound is on unconsumed work.
        while !exhausted && inFlight.count + reorder.count < maxInFlight {
            var chunk: [PythonValue] = []
            chunk.reserveCapacity(size)
            while chunk.count < size, let input = try await inputs.next() {
                chunk.append(input)
            }
            if chunk.count < size { exhausted = true }
            guard !chunk.isEmpty else { return }
            let id = nextChunk
            let first = nextIndex
            nextChunk += 1
            nextIndex += chunk.count
            let (function, star, mailbox, count) = (self.function, self.star, self.mailbox, chunk.count)
            let items = chunk
            let job = try pool.core.submit(
                options: InterpreterPool.JobOptions(timeout: timeout, timeoutStart: .start), calls: count,
                failures: { done in done.results.count { if case .failure = $0 { true } else { false } } },
                body: { context in InterpreterPool.runChunk(context, function: function, inputs: items, star: star) },
                remote: { channel, job in channel.chunk(function, items, star: star, job: job) },
                completion: { result in
                    switch result {
                    case .success(let done):
                        mailbox.post((id, done.results, done.elapsed))
                    case .failure(let error):
                        let failure = error as? SubinterpreterError ?? SubinterpreterError(.runtimeFailed, "\(error)")
                        mailbox.post((id, Array(repeating: .failure(failure), count: count), .zero))
                    }
                })
            inFlight[id] = (first, job)
        }
    }
}
