import Foundation
import Testing

@testable import Subinterpreters

/// Tests that load the CPUs or measure memory; serialized so they do not disturb each other.
@Suite(.serialized) struct HeavyTests {
    /// Two interpreters take turns through one byte of shared memory, each spinning on pure
    /// Python until its turn comes, with a switch interval of an hour. Each holds its GIL
    /// throughout, so the other can take its turn only if it has a GIL of its own: with one GIL
    /// for both, the spinning side would never hand it over and the turns would stop. This asks
    /// for no share of the CPU, so tests loading the machine at the same time cannot make it
    /// fail. (Two workers of kind `.main`, which share the main interpreter's GIL, stall after
    /// the first turn here; that control is not a test, since it would hold the main
    /// interpreter's GIL from tests running beside it.)
    @Test func cpuBoundCodeRunsInParallel() async throws {
        let interpreters = [try await Interpreter(), try await Interpreter()]
        let done = try await takeTurns(interpreters, turns: 200, failAfter: 60)
        #expect(done == [200, 200], "the interpreters stopped taking turns: their Python code does not run at the same time")
        for interpreter in interpreters { await interpreter.close() }
    }

    /// Runs `turns` alternating turns per side in `interpreters[0]` and `[1]` at once and returns
    /// how many each took; a side gives up `failAfter` seconds after its start (a bound for
    /// failing, not a measurement).
    private func takeTurns(_ interpreters: [Interpreter], turns: Int, failAfter: Int) async throws -> [Int] {
        let buffer = try await interpreters[0].eval("__import__('subinterp').SharedBuffer(1)")
        let code = """
            import sys, time

            def take_turns(me, turns, fail_after):
                view = memoryview(buf)
                interval = sys.getswitchinterval()
                sys.setswitchinterval(3600)
                try:
                    deadline = time.monotonic() + fail_after
                    done = 0
                    while done < turns:
                        if view[0] % 2 == me:
                            view[0] = (view[0] + 1) % 256
                            done += 1
                        elif time.monotonic() > deadline:
                            break
                    return done
                finally:
                    sys.setswitchinterval(interval)
            """
        for interpreter in interpreters {
            try await interpreter.prepareMain(["buf": buffer])
            try await interpreter.exec(code)
        }
        async let first = interpreters[0].call("take_turns", 0, PythonValue(turns), PythonValue(failAfter))
        async let second = interpreters[1].call("take_turns", 1, PythonValue(turns), PythonValue(failAfter))
        return try await [first, second].map { $0.intValue ?? -1 }
    }

    /// `--interface auto` imports the app once to tell WSGI from ASGI. CPython keeps most of an
    /// ended isolated interpreter's memory, so doing that in a throwaway interpreter would leave
    /// the server a worker's worth of memory bigger than naming the interface does.
    @Test func tellingTheInterfaceCostsTheServerNoMemory() throws {
        func rss(_ arguments: [String]) throws -> Int {
            let server = try LiveServer(["--workers", "1"] + arguments, app: "liveasgi:app")
            defer { server.stop() }
            // The app imports enough that a leaked copy would show.
            #expect(try RawHTTP.get(server.port, "/")?.status == 200)
            let status = try String(contentsOfFile: "/proc/\(server.process.processIdentifier)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) << 10
        }
        let named = try rss(["--interface", "asgi"])
        let detected = try rss([])
        #expect(detected < named + (3 << 20), "auto: \(detected >> 20) MiB, --interface asgi: \(named >> 20) MiB")
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
