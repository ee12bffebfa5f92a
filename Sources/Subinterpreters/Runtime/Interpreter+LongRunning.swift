import Synchronization

/// Work that holds an interpreter's thread for a long time (an event loop serving requests),
/// and a way to interrupt the Python code it is running without ending that work.
extension Interpreter {
    private static let nextJob = Atomic<UInt64>(1)

    /// Runs `body` on the interpreter's thread like `withPython`, as a job that
    /// `interruptRunningCode(when:)` can reach while it runs.
    package func withInterruptiblePython<T: Sendable>(_ body: @escaping @Sendable (PythonContext) throws -> T) async throws -> T {
        // Ids with the top bit set never meet a pool's job ids (pools count from 1).
        let job = Self.nextJob.add(1, ordering: .relaxed).oldValue | (1 << 63)
        let thread = self.thread
        return try await withPython { context in
            thread.currentJob.store(job, ordering: .releasing)
            defer { thread.endJob() }
            return try body(context)
        }
    }

    /// Raises `subinterp.CancelledError` in the Python code that a `withInterruptiblePython`
    /// job is running now, if `condition` holds once the calling thread holds the interpreter's
    /// GIL (the interpreter's thread is then paused between two bytecodes). It lands wherever
    /// that code is, and is an ordinary exception there: the job goes on if something catches
    /// it. Waits for the GIL (about one switch interval while Python runs), so call it from a
    /// thread that may block, never from an event loop. Returns whether the exception was set.
    package func interruptRunningCode(when condition: () -> Bool) -> Bool {
        let job = thread.currentJob.load(ordering: .acquiring)
        guard job & (1 << 63) != 0 else { return false }
        return thread.interrupt(job: job, when: condition)
    }
}
