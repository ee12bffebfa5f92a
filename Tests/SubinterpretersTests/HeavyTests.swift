import Foundation
import Testing

@testable import Subinterpreters

/// Tests that load the CPUs or measure memory; serialized so they do not disturb each other.
@Suite(.serialized) struct HeavyTests {
    /// Two interpreters run pure Python at the same moment, not taking turns. Each counts up in
    /// its own slot of a shared buffer and counts how often it sees the other's slot change
    /// between two of its own steps. Taking turns under one GIL (a switch every 5 ms) would give
    /// one such observation per switch: 20,000 would take 100 s. Running in parallel gives one
    /// on almost every step. No timing is asserted; a busy machine only makes it take longer.
    @Test func cpuBoundCodeRunsInParallel() async throws {
        let interpreters = [try await Interpreter(), try await Interpreter()]
        let spin = """
            import time
            def spin(buffer, me, other, target, limit):
                slots = buffer.view.cast("Q")        # counts of both, then a done flag of each
                seen, last, steps = 0, slots[other], 0
                deadline = time.monotonic() + limit
                while not (seen >= target and slots[2 + other]):
                    slots[me] += 1
                    now = slots[other]
                    if now != last:
                        seen += 1
                        last = now
                    if seen >= target:
                        slots[2 + me] = 1
                    steps += 1
                    if steps % 4096 == 0 and time.monotonic() > deadline:
                        break                        # a failure bound, not part of the measure
                slots[2 + me] = 1
                return seen
            """
        for interpreter in interpreters { try await interpreter.exec(spin) }
        let buffer = SharedBuffer(size: 32)
        let target = 20_000
        async let a = interpreters[0].call("spin", .buffer(buffer), 0, 1, PythonValue(target), 60)
        async let b = interpreters[1].call("spin", .buffer(buffer), 1, 0, PythonValue(target), 60)
        let seen = try await [a, b].map { $0.intValue ?? 0 }
        #expect(seen.allSatisfy { $0 >= target }, "each saw the other move \(seen) times; taking turns cannot reach \(target)")
        for interpreter in interpreters { await interpreter.close() }
    }

    /// 1,000 create/use/close cycles without a crash, and the host adds no leak of its own.
    /// CPython 3.12/3.13 itself keeps ~1.7 MiB per ended isolated interpreter (its obmalloc arenas
    /// are not freed while any block is left), so the growth is compared with CPython's own:
    /// the same cycle through `_interpreters` running the same bootstrap, in this process.
    @Test func createCloseChurnAddsNoLeakOfItsOwn() async throws {
        var baseline = 0
        for cycle in 1...1000 {
            let interpreter = try await Interpreter()
            #expect(try await interpreter.call("len", "abc") == 3)
            await interpreter.close()
            if cycle == 100 { baseline = SystemInfo.residentBytes() ?? 0 }
        }
        let ours = Double((SystemInfo.residentBytes() ?? 0) - baseline) / 900

        let helper = try await Interpreter()
        try await helper.prepareMain(["bootstrap": .string(Bootstrap.source)])
        try await helper.exec("""
            try:
                import _interpreters                      # 3.13
                create = lambda: _interpreters.create("isolated")
            except ImportError:
                import _xxsubinterpreters as _interpreters  # 3.12
                create = lambda: _interpreters.create(isolated=True)
            def rss():
                with open("/proc/self/statm") as f:
                    return int(f.read().split()[1]) * 4096
            def cycle():
                i = create()
                _interpreters.run_string(i, "\\n".join([bootstrap, "subinterp._install_line_writers()", "len('abc')", "subinterp._before_end()"]))
                _interpreters.destroy(i)
            def churn(count):
                for _ in range(20):
                    cycle()
                start = rss()
                for _ in range(count):
                    cycle()
                return (rss() - start) / count
            """)
        let cpython = try #require(try await helper.call("churn", 300).doubleValue)
        await helper.close()
        #expect(ours <= cpython * 1.25 + 64 * 1024,
                "host keeps \(Int(ours) >> 10) KiB per interpreter; CPython alone keeps \(Int(cpython) >> 10) KiB")
    }
}
