#!/usr/bin/env python3
"""Measure Python's own ways of passing data between two parties, side by side.

Runners (the two parties are the main thread of a fresh child process of this
script and one other party, started before anything is timed):

  interpreters.queues (backport)  two queues of the PyPI backport ``interpreters-pep-734``
                                  (``interpreters_backport.interpreters.queues.create(syncobj=True)``);
                                  the other party is a sub-interpreter
                                  (``interpreters_backport.interpreters.create()``) running
                                  ``Interpreter.exec()`` in a thread of the same process
  multiprocessing.Queue           two ``multiprocessing.Queue``s; the other party is a process
                                  (fork start method)
  queue.Queue (threads)           two ``queue.Queue``s; the other party is a thread of the
                                  same interpreter (one GIL)

Workloads (see Benchmarks/README.md for the exact definitions):

  roundtrip      main puts a small int on queue A, the other party gets it and puts it on
                 queue B, main gets it; us per round trip
  throughput     200,000 small ints one way, from main's first put until the consumer has
                 received the last one; messages per second (higher is better)
  handoff-100MB  hand a 100 MB (100,000,000-byte) buffer to the other party, until it has
                 read the buffer's last byte; ms. multiprocessing gives two rows, pickled
                 bytes through the Queue ("multiprocessing.Queue (bytes)") and the name of a
                 SharedMemory block through the Queue ("multiprocessing shared_memory"); the
                 backport shares a memoryview (zero copy); threads pass a bytearray reference

Times that cross the parties are taken with time.perf_counter(), which on Linux
is CLOCK_MONOTONIC and so is comparable between processes.

Each runner is measured in a fresh child process of this script, so that one
runner's leftovers or crash cannot touch another's numbers; a runner that fails
gives rows with an "error" field instead of stopping the run.

Output: ``--json PATH`` writes a list of rows
  {"suite": "channels", "workload": ..., "runner": ..., "value": float|null,
   "unit": "us"|"msg/s"|"ms", "speedup": null, "note": str}
(plus "error": str on a failed row).
"""

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.splitext(os.path.basename(os.path.abspath(__file__)))[0]  # "channel_peers"

SUITE = "channels"
BACKPORT_IMPORT = "interpreters_backport.interpreters"
BACKPORT_QUEUES = "interpreters_backport.interpreters.queues"

INTERP = "interpreters.queues (backport)"
MPQ = "multiprocessing.Queue"
MP_BYTES = "multiprocessing.Queue (bytes)"
MP_SHM = "multiprocessing shared_memory"
THREADS = "queue.Queue (threads)"
RUNNERS = [INTERP, MPQ, MP_BYTES, MP_SHM, THREADS]  # row order
RUNNER_KEYS = {"interp": INTERP, "mp": MPQ, "threads": THREADS}  # --runners

UNITS = {"roundtrip": "us", "throughput": "msg/s", "handoff-100MB": "ms"}
WORKLOADS = list(UNITS)

HANDOFF_BYTES = 100_000_000
CONTROL_TIMEOUT = 60  # seconds for a reply that is not part of a timed loop (an int: the backport truncates)


def log(msg):
    print(f"[channel_peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the other party
#
# The same function runs in the other process, the other thread, or the
# sub-interpreter (which imports this file as a module). It reads commands
# from queue A and answers on queue B:
#   ("echo", spin)  reply "ready", then put back every item until None (put back too)
#   ("sink", spin)  reply "ready", then take items until None; reply (end time, count, last)
#   ("take", spin)  reply "ready", then take one buffer (or a SharedMemory block name),
#                   read its last byte; reply (time after the read, that byte)
#   "stop"          return
# `spin` asks for `get_spin` (a busy loop on get_nowait()) instead of `get`.

def serve(get, put, get_spin=None):
    while True:
        cmd = get()
        if cmd == "stop":
            return
        kind, spin = cmd
        g = get_spin if (spin and get_spin is not None) else get
        if kind == "echo":
            put("ready")
            while True:
                x = g()
                put(x)
                if x is None:
                    break
        elif kind == "sink":
            put("ready")
            n = 0
            last = None
            while True:
                x = g()
                if x is None:
                    break
                n += 1
                last = x
            put((time.perf_counter(), n, last))
        elif kind == "take":
            put("ready")
            x = g()
            if isinstance(x, str):  # the name of a multiprocessing SharedMemory block
                from multiprocessing.shared_memory import SharedMemory
                shm = SharedMemory(name=x, track=False)
                b = shm.buf[-1]
                t = time.perf_counter()
                shm.close()
            else:
                b = x[-1]
                t = time.perf_counter()
            x = None
            put((t, b))
        else:
            raise ValueError(f"unknown command {cmd!r}")


def spin_getter(q, empty):
    get_nowait = q.get_nowait

    def get():
        while True:
            try:
                return get_nowait()
            except empty:
                pass
    return get


def serve_guarded(get, put, get_spin=None):
    """serve(), telling the main party about a failure instead of leaving it waiting."""
    try:
        serve(get, put, get_spin)
    except BaseException as e:
        try:
            put(("error", f"other party: {type(e).__name__}: {e}"))
        except BaseException:
            pass
        raise


def backport_party():
    """Runs inside the sub-interpreter; qa and qb were bound into its __main__."""
    import __main__
    from interpreters_backport.interpreters import queues
    qa, qb = __main__.qa, __main__.qb
    serve_guarded(qa.get, qb.put, spin_getter(qa, queues.QueueEmpty))


def mp_party(qa, qb):
    import multiprocessing.shared_memory  # noqa: F401  (not part of any timed hand-off)
    serve_guarded(qa.get, qb.put)


# --------------------------------------------------------------------------- links (main side)

class PartyError(RuntimeError):
    pass


def check(reply):
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "error":
        raise PartyError(reply[1])
    return reply


class Link:
    """Main's side of two queues to the other party.

    send/recv are the timed operations; recv_control waits with a time-out.
    """
    name = ""

    def control(self, cmd):
        self.send(cmd)
        if check(self.recv_control()) != "ready":
            raise PartyError(f"other party did not answer 'ready' to {cmd!r}")

    def recv_spin(self):
        return self.recv()

    def close(self):
        pass


class ThreadLink(Link):
    name = THREADS

    def __init__(self):
        self.qa, self.qb = queue.Queue(), queue.Queue()
        self.send, self.recv = self.qa.put, self.qb.get
        self.thread = threading.Thread(target=serve_guarded, args=(self.qa.get, self.qb.put),
                                       daemon=True)
        self.thread.start()

    def recv_control(self):
        try:
            return self.qb.get(timeout=CONTROL_TIMEOUT)
        except queue.Empty:
            raise PartyError(f"no reply from the other thread in {CONTROL_TIMEOUT} s") from None

    def close(self):
        self.qa.put("stop")
        self.thread.join(10)


class MpLink(Link):
    name = MPQ

    def __init__(self):
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        self.qa, self.qb = ctx.Queue(), ctx.Queue()
        self.send, self.recv = self.qa.put, self.qb.get
        self.proc = ctx.Process(target=mp_party, args=(self.qa, self.qb), daemon=True)
        self.proc.start()

    def recv_control(self):
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while True:
            try:
                return self.qb.get(timeout=1)
            except queue.Empty:
                if not self.proc.is_alive():
                    raise PartyError(f"the other process exited with {self.proc.exitcode}") from None
                if time.monotonic() > deadline:
                    raise PartyError(f"no reply from the other process in {CONTROL_TIMEOUT} s") from None

    def close(self):
        try:
            self.qa.put("stop")
            self.proc.join(10)
        finally:
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


class BackportLink(Link):
    name = INTERP

    def __init__(self, syncobj=True):
        import importlib
        interpreters = importlib.import_module(BACKPORT_IMPORT)
        queues = importlib.import_module(BACKPORT_QUEUES)
        self.interpreters, self.queues = interpreters, queues
        self.qa = queues.create(syncobj=syncobj)
        self.qb = queues.create(syncobj=syncobj)
        self.send, self.recv = self.qa.put, self.qb.get
        self.recv_spin = spin_getter(self.qb, queues.QueueEmpty)
        self.interp = interpreters.create()
        # The sub-interpreter needs the queues module before a Queue can be bound into it,
        # and this folder on sys.path to import this file for serve().
        self.interp.exec(f"import sys\nif {PEERS_DIR!r} not in sys.path: sys.path.insert(0, {PEERS_DIR!r})\n"
                         f"import {BACKPORT_QUEUES}\nimport {MODULE}")
        self.interp.prepare_main(qa=self.qa, qb=self.qb)
        self.failure = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.interp.exec(f"{MODULE}.backport_party()")
        except Exception as e:  # ExecutionFailed: serve_guarded already put an error on qb
            self.failure = f"{type(e).__name__}: {e}"

    def recv_control(self):
        try:
            return self.qb.get(timeout=CONTROL_TIMEOUT)
        except self.queues.QueueEmpty:
            raise PartyError(self.failure or f"no reply from the sub-interpreter in {CONTROL_TIMEOUT} s") from None

    def close(self):
        try:
            self.qa.put("stop")
            self.thread.join(10)
        finally:
            if not self.thread.is_alive():
                self.interp.close()


def make_link(runner, **kw):
    if runner == THREADS:
        return ThreadLink()
    if runner == MPQ:
        return MpLink()
    if runner == INTERP:
        return BackportLink(**kw)
    raise ValueError(f"unknown runner {runner!r}")


# --------------------------------------------------------------------------- timing helpers

def repeat(fn, reps, budget):
    """Call fn() (which returns one sample) up to `reps` times, within `budget` seconds
    (but always at least once)."""
    samples = []
    t_start = time.perf_counter()
    for _ in range(reps):
        samples.append(fn())
        spent = time.perf_counter() - t_start
        if spent + spent / len(samples) > budget:
            break
    return samples


def g3(x):
    """A number to about 3 significant digits, without exponent for the sizes used here."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def summarize(samples):
    med = statistics.median(samples)
    if len(samples) == 1:
        return med, "1 run"
    return med, f"median of {len(samples)} (min {g3(min(samples))}, max {g3(max(samples))})"


def row(workload, runner, value, note="", error=None):
    r = {"suite": SUITE, "workload": workload, "runner": runner,
         "value": None if value is None else float(value),
         "unit": UNITS[workload], "speedup": None, "note": note}
    if error is not None:
        r["error"] = error
    return r


# --------------------------------------------------------------------------- workloads

def roundtrip_once(link, n, spin=False, cap=None, warmup=50):
    """Mean µs per round trip over up to n round trips (fewer if `cap` seconds pass)."""
    recv = link.recv_spin if spin else link.recv
    send = link.send
    link.control(("echo", spin))
    for i in range(warmup):
        send(i)
        if check(recv()) != i:
            raise PartyError("wrong echo")
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + (cap if cap else 1e9)
    for i in range(n):
        send(i)
        x = recv()
        if x != i:
            raise PartyError(f"wrong echo: {check(x)!r}, expected {i}")
        done += 1
        if time.perf_counter() > deadline:
            break
    dt = time.perf_counter() - t0
    send(None)
    if check(link.recv_control()) is not None:
        raise PartyError("wrong end of echo")
    return dt / done * 1e6, done


def bench_roundtrip(runner, link, opts):
    n, reps = opts.round_trips, opts.repeat
    if runner == INTERP:
        # Its blocking get() sleeps 10 ms between polls of an empty queue: few round trips,
        # each run capped at --backport-seconds.
        reps = min(reps, 3)
        res = repeat(lambda: roundtrip_once(link, n, cap=opts.backport_seconds, warmup=3),
                     reps, opts.budget)
        value, note = summarize([r[0] for r in res])
        counts = sorted({r[1] for r in res})
        count = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        note = (f"{count} round trips per run (runs capped at {opts.backport_seconds:g} s), "
                f"blocking get(), which polls an empty queue every 10 ms; {note}")
        spin = repeat(lambda: roundtrip_once(link, n, spin=True, warmup=50)[0], reps, opts.budget)
        note += f"; busy-polling get_nowait() on both sides instead: {g3(statistics.median(spin))} µs"
        note += f" ({n:,} round trips, median of {len(spin)})"
        note += "; queues.create(syncobj=True), ints shared without pickle"
        try:
            pickled = make_link(INTERP, syncobj=False)
            try:
                p = repeat(lambda: roundtrip_once(pickled, n, spin=True, warmup=50)[0], reps, opts.budget)
            finally:
                pickled.close()
            note += f" (default pickled queues, busy-polling: {g3(statistics.median(p))} µs)"
        except Exception as e:
            note += f" (pickled queues failed: {type(e).__name__}: {e})"
        return row("roundtrip", runner, value, note)
    res = repeat(lambda: roundtrip_once(link, n), reps, opts.budget)
    value, note = summarize([r[0] for r in res])
    what = "other party is a thread" if runner == THREADS else "other party is a process (fork)"
    return row("roundtrip", runner, value, f"{n:,} round trips per run, {what}; {note}")


def throughput_once(link, n, spin=False):
    """Messages per second: n small ints from main's first put to the consumer's last get."""
    link.control(("sink", spin))
    send = link.send
    t0 = time.perf_counter()
    for i in range(n):
        send(i)
    send(None)
    t_end, count, last = check(link.recv_control())
    if count != n or last != n - 1:
        raise PartyError(f"consumer got {count} items ending with {last!r}, expected {n}")
    return n / (t_end - t0)


def bench_throughput(runner, link, opts):
    n = opts.messages
    samples = repeat(lambda: throughput_once(link, n), opts.repeat, opts.budget)
    value, note = summarize(samples)
    note = f"{n:,} small ints one way per run; {note}"
    if runner == INTERP:
        note += ("; consumer uses blocking get() (sleeps 10 ms whenever it finds the queue empty)"
                 "; queues.create(syncobj=True), ints shared without pickle")
        reps = min(opts.repeat, 3)
        spin = repeat(lambda: throughput_once(link, n, spin=True), reps, opts.budget)
        note += f"; consumer busy-polling get_nowait(): {g3(statistics.median(spin))} msg/s"
        try:
            pickled = make_link(INTERP, syncobj=False)
            try:
                p = repeat(lambda: throughput_once(pickled, n), reps, opts.budget)
            finally:
                pickled.close()
            note += f"; default pickled queues: {g3(statistics.median(p))} msg/s"
        except Exception as e:
            note += f"; pickled queues failed: {type(e).__name__}: {e}"
        note += f" (medians of {reps})"
    elif runner == MPQ:
        note += "; consumer is a process (fork); put() hands items to a feeder thread that pickles them"
    else:
        note += "; consumer is a thread (shares the GIL with the producer)"
    return row("throughput", runner, value, note)


def handoff_once(link, obj, spin=False):
    """ms from main putting `obj` until the other party has read the buffer's last byte."""
    link.control(("take", spin))
    t0 = time.perf_counter()
    link.send(obj)
    t, b = check(link.recv_control())
    if b != 1:
        raise PartyError(f"the receiver read {b!r}, expected 1")
    return (t - t0) * 1e3


def bench_handoff(runner, link, opts):
    size = opts.handoff_bytes
    mb = f"{size / 1e6:g} MB"
    reps = opts.repeat
    if runner == THREADS:
        buf = bytearray(size)
        buf[-1] = 1
        samples = repeat(lambda: handoff_once(link, buf), reps, opts.budget)
        value, note = summarize(samples)
        return [row("handoff-100MB", THREADS, value,
                    f"a {mb} bytearray's reference through queue.Queue to a thread; {note}")]
    if runner == INTERP:
        buf = bytearray(size)
        buf[-1] = 1
        samples = repeat(lambda: handoff_once(link, memoryview(buf), spin=True), reps, opts.budget)
        value, note = summarize(samples)
        note = (f"memoryview of a {mb} bytearray through queues.create(syncobj=True): shared, "
                f"not copied; receiver busy-polls get_nowait(); {note}")
        extra = []
        r2 = min(reps, 3)
        blocking = repeat(lambda: handoff_once(link, memoryview(buf)), r2, opts.budget)
        extra.append(f"with the blocking get() (10 ms polls): {g3(statistics.median(blocking))} ms")
        data = bytes(buf)
        copied = repeat(lambda: handoff_once(link, data, spin=True), r2, opts.budget)
        extra.append(f"bytes put(syncobj=True), copied once: {g3(statistics.median(copied))} ms")
        pickled = repeat(lambda: _handoff_pickled(link, data), r2, opts.budget)
        extra.append(f"bytes put(syncobj=False), pickled: {g3(statistics.median(pickled))} ms")
        del data
        note += "; " + "; ".join(extra) + f" (medians of {r2})"
        return [row("handoff-100MB", INTERP, value, note)]
    if runner == MPQ:
        from multiprocessing.shared_memory import SharedMemory
        rows = []
        buf = bytearray(size)
        buf[-1] = 1
        data = bytes(buf)
        del buf
        try:
            samples = repeat(lambda: handoff_once(link, data), reps, opts.budget)
            value, note = summarize(samples)
            rows.append(row("handoff-100MB", MP_BYTES, value,
                            f"{mb} bytes through multiprocessing.Queue (pickled by the feeder thread, "
                            f"sent through a pipe, unpickled by the receiver); {note}"))
        except Exception as e:
            rows.append(row("handoff-100MB", MP_BYTES, None, error=f"{type(e).__name__}: {e}"))
        try:
            t0 = time.perf_counter()
            shm = SharedMemory(create=True, size=size)
            try:
                shm.buf[:] = data
                fill_ms = (time.perf_counter() - t0) * 1e3
                samples = repeat(lambda: handoff_once(link, shm.name), reps, opts.budget)
                value, note = summarize(samples)
                rows.append(row("handoff-100MB", MP_SHM, value,
                                f"the name of a {mb} SharedMemory block through multiprocessing.Queue; "
                                f"the receiver attaches (SharedMemory(name, track=False)), reads the last "
                                f"byte and closes; creating the block and copying the data in, not "
                                f"included: {g3(fill_ms)} ms; {note}"))
            finally:
                shm.close()
                shm.unlink()
        except Exception as e:
            rows.append(row("handoff-100MB", MP_SHM, None, error=f"{type(e).__name__}: {e}"))
        return rows
    raise ValueError(runner)


def _handoff_pickled(link, data):
    """Like handoff_once with spin, but put() with syncobj=False (pickle) on a syncobj queue."""
    link.control(("take", True))
    t0 = time.perf_counter()
    link.qa.put(data, syncobj=False)
    t, b = check(link.recv_control())
    if b != 1:
        raise PartyError(f"the receiver read {b!r}, expected 1")
    return (t - t0) * 1e3


# --------------------------------------------------------------------------- one runner

def handoff_runners(runner):
    return [MP_BYTES, MP_SHM] if runner == MPQ else [runner]


def run_runner(runner, opts, save=lambda rows: None):
    """All workloads for one runner, in this (fresh) process. Returns rows."""
    rows = []

    def fail(workload, msg):
        names = handoff_runners(runner) if workload == "handoff-100MB" else [runner]
        for name in names:
            log(f"WARNING {workload} / {name} failed: {msg}")
            rows.append(row(workload, name, None, error=msg))

    try:
        link = make_link(runner)
    except Exception as e:
        msg = f"could not start the other party: {type(e).__name__}: {e}".strip()
        for w in opts.workloads:
            fail(w, msg)
        save(rows)
        return rows
    bench = {"roundtrip": bench_roundtrip, "throughput": bench_throughput,
             "handoff-100MB": bench_handoff}
    try:
        for w in opts.workloads:
            try:
                out = bench[w](runner, link, opts)
            except Exception as e:
                fail(w, f"{type(e).__name__}: {e}".strip())
                # The other party may be stuck mid-command: start a fresh one for the next workload.
                try:
                    link.close()
                except Exception:
                    pass
                try:
                    link = make_link(runner)
                except Exception as e2:
                    msg = f"could not restart the other party: {type(e2).__name__}: {e2}"
                    for w2 in opts.workloads[opts.workloads.index(w) + 1:]:
                        fail(w2, msg)
                    save(rows)
                    return rows
                save(rows)
                continue
            for r in out if isinstance(out, list) else [out]:
                rows.append(r)
                if "error" not in r:
                    log(f"{w:<14} {r['runner']:<31} {r['value']:12.4g} {r['unit']}")
                else:
                    log(f"WARNING {w} / {r['runner']} failed: {r['error']}")
            save(rows)
    finally:
        try:
            link.close()
        except Exception as e:
            log(f"note: closing {runner}: {type(e).__name__}: {e}")
    return rows


def run_runner_in_child(runner, opts):
    """Run one runner's workloads in a fresh process of this script; never raises."""
    fd, out_path = tempfile.mkstemp(prefix="channel_peers_", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", runner, "--child-out", out_path,
           "--repeat", str(opts.repeat), "--budget", str(opts.budget),
           "--round-trips", str(opts.round_trips), "--messages", str(opts.messages),
           "--handoff-bytes", str(opts.handoff_bytes),
           "--backport-seconds", str(opts.backport_seconds),
           "--workloads", ",".join(opts.workloads)]
    err = None
    # Its own session, so that on a time-out the other party's process goes with it.
    p = subprocess.Popen(cmd, start_new_session=True)
    try:
        if p.wait(timeout=opts.child_timeout) != 0:
            err = f"runner process exited with status {p.returncode}"
    except subprocess.TimeoutExpired:
        err = f"runner process timed out after {opts.child_timeout:g} s"
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    try:
        with open(out_path) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        rows = []
    finally:
        try:
            os.unlink(out_path)
        except OSError:
            pass
    done = {(r["workload"], r["runner"]) for r in rows}
    for w in opts.workloads:
        for name in (handoff_runners(runner) if w == "handoff-100MB" else [runner]):
            if (w, name) not in done:
                msg = err or "no result from runner process"
                log(f"WARNING {w} / {name} failed: {msg}")
                rows.append(row(w, name, None, error=msg))
    return rows


# --------------------------------------------------------------------------- main

def print_table(rows):
    print(f"{'workload':<14} {'runner':<31} {'value':>12} {'unit':<6}  note")
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<14} {r['runner']:<31} {'ERROR':>12} {r['unit']:<6}  {r['error']}")
        else:
            print(f"{r['workload']:<14} {r['runner']:<31} {r['value']:12.4g} {r['unit']:<6}  {r['note']}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the rows to PATH (JSON list)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds one measurement may take before it stops repeating")
    ap.add_argument("--round-trips", type=int, default=2_000, help="round trips per roundtrip run")
    ap.add_argument("--messages", type=int, default=200_000,
                    help="messages per throughput run (the Swift side sends 200,000 too)")
    ap.add_argument("--handoff-bytes", type=int, default=HANDOFF_BYTES,
                    help="buffer size for handoff-100MB (default 100,000,000)")
    ap.add_argument("--backport-seconds", type=float, default=1.5,
                    help="cap on one roundtrip run of the backport's blocking (10 ms polling) get()")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated subset of: " + ", ".join(WORKLOADS))
    ap.add_argument("--runners", default=",".join(RUNNER_KEYS),
                    help="comma-separated subset of: " + ", ".join(RUNNER_KEYS))
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 run, 200 round trips, 20,000 messages, backport runs capped at 0.3 s")
    ap.add_argument("--child-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.repeat, opts.round_trips, opts.messages, opts.backport_seconds = 1, 200, 20_000, 0.3
    opts.workloads = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    bad = [w for w in opts.workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s): {', '.join(bad)}")
    keys = [k.strip() for k in opts.runners.split(",") if k.strip()]
    bad = [k for k in keys if k not in RUNNER_KEYS]
    if bad:
        ap.error(f"unknown runner(s): {', '.join(bad)}")
    opts.runner_list = [RUNNER_KEYS[k] for k in keys]
    if min(opts.repeat, opts.round_trips, opts.messages, opts.handoff_bytes) < 1:
        ap.error("--repeat, --round-trips, --messages and --handoff-bytes must be at least 1")
    return opts


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    if opts.child:
        def save(rows):
            tmp = opts.child_out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rows, f)
            os.replace(tmp, opts.child_out)
        save(run_runner(opts.child, opts, save))
        return 0

    log(f"Python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs; "
        f"backport imports: {BACKPORT_IMPORT}, {BACKPORT_QUEUES}")
    t0 = time.perf_counter()
    rows = []
    for runner in opts.runner_list:
        rows.extend(run_runner_in_child(runner, opts))

    order = {w: i for i, w in enumerate(WORKLOADS)}
    rows.sort(key=lambda r: (order[r["workload"]], RUNNERS.index(r["runner"])))

    print_table(rows)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if opts.json:
        os.makedirs(os.path.dirname(os.path.abspath(opts.json)), exist_ok=True)
        tmp = opts.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
        os.replace(tmp, opts.json)
        log(f"wrote {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
