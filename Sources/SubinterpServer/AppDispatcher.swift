import NIOCore
import Synchronization

/// An app loaded in its workers, as `AppServer` runs it: a WSGI app on a pool
/// (`WSGIApplication`), an ASGI app on event loops (`ASGIBridge`). Both sit on the same HTTP
/// layer; this is all the server needs of either.
protocol LoadedApp: AnyObject, Sendable {
    /// How the body of this request reaches the app (`HTTPApplication.bodyDelivery(for:)`).
    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery
    /// Runs the request (or WebSocket connection) and answers through `exchange`. `finished`
    /// runs once the app is done with it, whatever the outcome.
    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange, finished: @escaping @Sendable () -> Void)
    /// Workers running a request now, and requests waiting for one (for the metrics endpoint).
    var activity: (busy: Int, queued: Int) { get }
    /// Ends the workers. With `cancelPending`, whatever still runs is cut off (the server's
    /// grace period is over); otherwise nothing runs any more (a retired load).
    func shutdown(cancelPending: Bool) async
}

/// One load of the app (at start, and again at each reload) and how many requests hold it.
///
/// A request takes its generation when it is dispatched and gives it back when its worker is
/// done with it, so a reload retires the old generation and ends its workers only when the
/// last request that picked it is done: none of them can find those workers gone.
final class AppGeneration: Sendable {
    let application: any LoadedApp
    private struct State {
        var inFlight = 0
        var retired = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    init(_ application: any LoadedApp) {
        self.application = application
    }

    var inFlight: Int { state.withLock { $0.inFlight } }

    fileprivate func acquire() {
        state.withLock { $0.inFlight += 1 }
    }

    /// Gives back what `AppDispatcher.pick()` took.
    func release() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight -= 1
            guard state.inFlight == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    fileprivate func retire() {
        state.withLock { $0.retired = true }
    }

    /// Returns once no request holds this generation, or when `giveUp()` is called.
    func idle() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                guard state.inFlight > 0 else { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Releases everyone waiting in `idle()` (shutdown's grace period is over).
    func giveUp() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The `HTTPApplication` of `subinterp serve`: runs each request on the current generation of
/// the app, counting it in.
final class AppDispatcher: HTTPApplication {
    private struct State {
        var current: AppGeneration?
        /// Replaced generations whose requests have not all finished.
        var retiring: [AppGeneration] = []
    }
    private let state = Mutex(State())
    /// Told when a request starts and when its worker is done with it (a worker process
    /// counts both: the free-worker limit of its accepts, and recycling). Held in a class:
    /// a closure read and written back through `Mutex.withLock`'s `inout` gains a layer of
    /// reabstraction thunks each time, and a per-request read would make every call slower.
    private let observer = Mutex<RequestObserver?>(nil)

    private final class RequestObserver: Sendable {
        let started: @Sendable () -> Void
        let finished: @Sendable () -> Void

        init(started: @escaping @Sendable () -> Void, finished: @escaping @Sendable () -> Void) {
            self.started = started
            self.finished = finished
        }
    }

    var current: AppGeneration? { state.withLock { $0.current } }

    /// Sets what is told of each request's start and end (once, before requests arrive).
    func observe(started: @escaping @Sendable () -> Void, finished: @escaping @Sendable () -> Void) {
        let observer = RequestObserver(started: started, finished: finished)
        self.observer.withLock { $0 = observer }
    }

    /// Every generation still alive: the current one and those retiring.
    var all: [AppGeneration] {
        state.withLock { state in (state.current.map { [$0] } ?? []) + state.retiring }
    }

    /// Makes `application` current; returns the generation it replaces (now retiring).
    @discardableResult
    func install(_ application: any LoadedApp) -> AppGeneration? {
        let fresh = AppGeneration(application)
        return state.withLock { state in
            let old = state.current
            if let old {
                old.retire()
                state.retiring.append(old)
            }
            state.current = fresh
            return old
        }
    }

    /// The retired generation is closed: forget it.
    func forget(_ generation: AppGeneration) {
        state.withLock { state in state.retiring.removeAll { $0 === generation } }
    }

    /// The current generation, counted in until `release()`. Taken under the same lock that
    /// switches generations: once `install` returns, nothing can pick the old one any more.
    func pick() -> AppGeneration? {
        state.withLock { state in
            state.current?.acquire()
            return state.current
        }
    }

    func bodyDelivery(for head: HTTPRequestHead) -> HTTPBodyDelivery {
        current?.application.bodyDelivery(for: head) ?? .collect
    }

    func handle(_ request: HTTPRequest, _ exchange: HTTPExchange) {
        guard let generation = pick() else {
            exchange.fail(status: 503, reason: "Service Unavailable")
            return
        }
        guard let observer = observer.withLock({ $0 }) else {
            generation.application.handle(request, exchange) { generation.release() }
            return
        }
        observer.started()
        generation.application.handle(request, exchange) {
            generation.release()
            observer.finished()
        }
    }
}
