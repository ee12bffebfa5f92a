#!/usr/bin/env python3
"""Measure Python's own ways of running work in parallel, side by side.

Runners: a plain loop (``serial``), ``ThreadPoolExecutor``,
``ProcessPoolExecutor`` with the fork and forkserver start methods, the
``InterpreterPoolExecutor`` of the PyPI backport ``interpreters-pep-734``
(imported as ``interpreters_backport.concurrent.futures``), and, with
``--runners ...,subinterp`` (``Benchmarks/run python``), this project's own
``subinterp.InterpreterPoolExecutor`` (the pip-installed package). Every pool
gets ``max_workers = os.cpu_count()`` unless ``--workers`` says otherwise.

Workloads (see Benchmarks/README.md for the exact definitions):

  fib24x64        64 calls of pure-Python fib(24); wall seconds, speedup over serial
  map-trivial     executor.map(noop, range(N), chunksize=N // (workers*16)); us per call
  map-default     executor.map(noop, range(N)) with no chunksize (each executor's
                  default: 1 for the standard ones, adaptive for subinterp); us per call
  call-trivial    submit(noop, i).result() one round trip at a time; us per call
  start-to-first  construct a fresh executor .. first submit(noop, 1).result(); ms
  rss-per-worker  RSS of this process and all its children once every worker
                  has started, minus RSS before the executor existed, / workers; MiB

Each runner is measured in a fresh child process of this script, so that one
runner's leftovers (a forkserver, a grown heap, a crash) cannot touch another's
numbers; rss-per-worker uses one fresh process per repetition. A runner that
fails gives rows with an "error" field instead of stopping the run.

Output: ``--json PATH`` writes a list of rows
  {"suite": "pool", "workload": ..., "runner": ..., "value": float|null,
   "unit": "s"|"us/call"|"ms"|"MiB", "speedup": float|null, "note": str}
(plus "error": str on a failed row).
"""

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))

# Workers import `workloads` by name: put its folder on sys.path here and on
# PYTHONPATH for every process started from here on (forkserver, spawned
# helpers, child runs of this script). Sub-interpreters started in this
# process get sys.path from the process's startup configuration, which is why
# Benchmarks/run also exports PYTHONPATH before starting Python.
if PEERS_DIR not in sys.path:
    sys.path.insert(0, PEERS_DIR)
_pp = os.environ.get("PYTHONPATH", "")
if PEERS_DIR not in _pp.split(os.pathsep):
    os.environ["PYTHONPATH"] = PEERS_DIR + (os.pathsep + _pp if _pp else "")

import workloads  # noqa: E402  (needs the sys.path line above)
from workloads import fib, hold, noop  # noqa: E402

SUITE = "pool"  # --suite python labels the rows of `Benchmarks/run python`
BACKPORT_IMPORT = "interpreters_backport.concurrent.futures"

SERIAL = "serial"
THREADS = "ThreadPoolExecutor"
FORK = "ProcessPoolExecutor (fork)"
FORKSERVER = "ProcessPoolExecutor (forkserver)"
INTERP = "InterpreterPoolExecutor (backport)"
SUBINTERP = "subinterp InterpreterPoolExecutor"
RUNNERS = [SUBINTERP, SERIAL, THREADS, FORK, FORKSERVER, INTERP]
RUNNER_KEYS = {  # short names for --runners
    "serial": SERIAL, "threads": THREADS, "fork": FORK,
    "forkserver": FORKSERVER, "interp": INTERP, "subinterp": SUBINTERP,
}
DEFAULT_RUNNERS = ["serial", "threads", "fork", "forkserver", "interp"]
WORKLOADS = ["fib24x64", "map-trivial", "map-default", "call-trivial", "start-to-first", "rss-per-worker"]
DEFAULT_WORKLOADS = ["fib24x64", "map-trivial", "call-trivial", "start-to-first", "rss-per-worker"]
UNITS = {"fib24x64": "s", "map-trivial": "us/call", "map-default": "us/call", "call-trivial": "us/call",
         "start-to-first": "ms", "rss-per-worker": "MiB"}
POOL_ONLY = {"start-to-first", "rss-per-worker"}   # no serial row for these

FIB_N = 24
FIB_CALLS = 64
FIB_VALUE = 46368  # fib(24)

# Warnings go to stderr but should not drown the output; this one is expected
# when forking a process that has a pool's manager thread running.
warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*",
                        category=DeprecationWarning)


def log(msg):
    print(f"[pool_peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- executors

def make_executor(runner, workers):
    """Construct a fresh executor for `runner` (None for serial)."""
    if runner == SERIAL:
        return None
    if runner == THREADS:
        from concurrent.futures import ThreadPoolExecutor
        return ThreadPoolExecutor(max_workers=workers)
    if runner in (FORK, FORKSERVER):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        method = "fork" if runner == FORK else "forkserver"
        return ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context(method))
    if runner == INTERP:
        import importlib
        mod = importlib.import_module(BACKPORT_IMPORT)
        return mod.InterpreterPoolExecutor(max_workers=workers)
    if runner == SUBINTERP:
        from subinterp import InterpreterPoolExecutor
        return InterpreterPoolExecutor(max_workers=workers)
    raise ValueError(f"unknown runner {runner!r}")


def start_all_workers(ex, workers, seconds=0.2, timeout=120):
    """Keep workers*2 sleeping tasks in flight so an on-demand pool starts every worker.

    Returns how many distinct workers ran them.
    """
    futs = [ex.submit(hold, seconds) for _ in range(workers * 2)]
    return len({f.result(timeout=timeout) for f in futs})


def warm(ex, workers):
    """Start every worker and have each import `workloads` before timing anything."""
    seen = start_all_workers(ex, workers)
    for f in [ex.submit(fib, 12) for _ in range(workers * 2)]:
        f.result(timeout=60)
    return seen


# --------------------------------------------------------------------------- timing helpers

def repeat(fn, reps, budget):
    """Call fn() (which returns one sample) up to `reps` times.

    Stops early once another repetition would push the total past `budget`
    seconds, but always takes at least one sample.
    """
    samples = []
    t_start = time.perf_counter()
    for _ in range(reps):
        samples.append(fn())
        spent = time.perf_counter() - t_start
        if spent + spent / len(samples) > budget:
            break
    return samples


def summarize(samples, fmt="{:.3g}"):
    med = statistics.median(samples)
    if len(samples) == 1:
        return med, "1 run"
    return med, (f"median of {len(samples)} (min {fmt.format(min(samples))}, "
                 f"max {fmt.format(max(samples))})")


def row(workload, runner, value, note="", speedup=None, error=None):
    r = {"suite": SUITE, "workload": workload, "runner": runner,
         "value": None if value is None else float(value),
         "unit": UNITS[workload], "speedup": speedup, "note": note}
    if error is not None:
        r["error"] = error
    return r


# --------------------------------------------------------------------------- workloads

def bench_fib(runner, ex, workers, opts):
    args = [FIB_N] * FIB_CALLS

    def once():
        t0 = time.perf_counter()
        if ex is None:
            out = [fib(FIB_N) for _ in range(FIB_CALLS)]
        else:
            out = list(ex.map(fib, args, timeout=300))
        dt = time.perf_counter() - t0
        if out != [FIB_VALUE] * FIB_CALLS:
            raise RuntimeError("wrong fib results")
        return dt

    samples = repeat(once, opts.repeat, budget=opts.budget)
    value, note = summarize(samples)
    if ex is not None:
        note += "; pool warm (all workers started) before timing"
    return row("fib24x64", runner, value, note)


def bench_map(runner, ex, workers, opts, default_chunks=False):
    n = opts.map_calls
    if default_chunks and ex is not None and runner != SUBINTERP:
        n = min(n, opts.call_calls * 5)  # one task per call: keep it short
    chunksize = None if default_chunks else max(1, n // (workers * 16))
    workload = "map-default" if default_chunks else "map-trivial"

    def once():
        t0 = time.perf_counter()
        if ex is None:
            out = []
            for i in range(n):
                out.append(noop(i))
        elif chunksize is None:
            out = list(ex.map(noop, range(n), timeout=300))
        else:
            out = list(ex.map(noop, range(n), chunksize=chunksize, timeout=300))
        dt = time.perf_counter() - t0
        if len(out) != n or out[-1] != n - 1:
            raise RuntimeError("wrong map results")
        return dt / n * 1e6

    samples = repeat(once, opts.repeat, budget=opts.budget)
    value, note = summarize(samples)
    if ex is None:
        note = f"plain loop, {n} calls; {note}"
    elif chunksize is None:
        note = f"{n} calls, no chunksize given ({'adaptive' if runner == SUBINTERP else 'one task per call'}); {note}"
    else:
        note = f"{n} calls, chunksize={chunksize}; {note}"
        if runner in (THREADS, INTERP):
            note += "; this executor ignores chunksize (one task per item)"
    return row(workload, runner, value, note)


def bench_call(runner, ex, workers, opts):
    n = opts.map_calls if ex is None else opts.call_calls

    def once():
        t0 = time.perf_counter()
        if ex is None:
            for i in range(n):
                noop(i)
        else:
            for i in range(n):
                if ex.submit(noop, i).result(timeout=60) != i:
                    raise RuntimeError("wrong result")
        return (time.perf_counter() - t0) / n * 1e6

    samples = repeat(once, opts.repeat, budget=opts.budget)
    value, note = summarize(samples)
    what = "plain loop" if ex is None else "submit(noop, i).result() one at a time"
    return row("call-trivial", runner, value, f"{what}, {n} calls; {note}")


def bench_start(runner, workers, opts):
    samples = []
    for _ in range(opts.start_reps):
        gc.collect()
        t0 = time.perf_counter()
        ex = make_executor(runner, workers)
        try:
            if ex.submit(noop, 1).result(timeout=60) != 1:
                raise RuntimeError("wrong result")
            samples.append((time.perf_counter() - t0) * 1e3)
        finally:
            ex.shutdown(wait=True)
    value, note = summarize(samples)
    note += f"; first (cold) in a fresh process: {samples[0]:.3g} ms"
    if runner == FORKSERVER:
        note += " (includes starting the forkserver, reused afterwards)"
    return row("start-to-first", runner, value, note)


# --------------------------------------------------------------------------- memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root=None):
    root = os.getpid() if root is None else root
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree_memory():
    pids = process_tree()
    rss = sum(rss_bytes(p) for p in pids)
    psses = [pss_bytes(p) for p in pids]
    pss = None if any(p is None for p in psses) else sum(psses)
    return rss, pss, len(pids)


def rss_probe(runner, workers):
    """Run in a fresh process: memory added by one pool with all workers started."""
    import concurrent.futures  # noqa: F401  (imports are not the pool's cost)
    import multiprocessing  # noqa: F401
    if runner == INTERP:
        import importlib
        importlib.import_module(BACKPORT_IMPORT)
    if runner == SUBINTERP:
        import subinterp._executor  # noqa: F401
    gc.collect()
    time.sleep(0.05)
    rss0, pss0, n0 = tree_memory()
    ex = make_executor(runner, workers)
    try:
        seen = start_all_workers(ex, workers, seconds=0.3)
        gc.collect()
        rss1, pss1, n1 = tree_memory()
    finally:
        ex.shutdown(wait=True)
    mib = 1024 * 1024
    return {
        "rss_per_worker": (rss1 - rss0) / workers / mib,
        "pss_per_worker": None if pss0 is None or pss1 is None else (pss1 - pss0) / workers / mib,
        "workers_seen": seen,
        "processes": n1,
        "processes_before": n0,
    }


def bench_rss(runner, workers, opts):
    """One fresh process per repetition (a process's heap only grows)."""
    results = []
    for _ in range(opts.repeat):
        cmd = [sys.executable, os.path.abspath(__file__), "--rss-probe", runner,
               "--workers", str(workers), "--suite", SUITE]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"rss probe exited {p.returncode}: {tail}")
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    value, note = summarize([r["rss_per_worker"] for r in results])
    last = results[-1]
    psses = [r["pss_per_worker"] for r in results if r["pss_per_worker"] is not None]
    extra = [f"workers started: {last['workers_seen']}"]
    if runner in (FORK, FORKSERVER):
        extra.append(f"counts {last['processes'] - last['processes_before']} new processes "
                     "(workers" + (" + forkserver + resource tracker" if runner == FORKSERVER else "")
                     + "); RSS counts shared copy-on-write pages once per process")
    if psses:
        extra.append(f"PSS/worker {statistics.median(psses):.3g} MiB")
    return row("rss-per-worker", runner, value, note + "; " + "; ".join(extra))


# --------------------------------------------------------------------------- one runner

def run_runner(runner, opts, save=lambda rows: None):
    """All timed workloads for one runner, in this (fresh) process. Returns rows.

    `save(rows)` is called after every row, so a parent that has to kill this
    process still gets the rows finished so far.
    """
    workers = opts.workers
    wanted = [w for w in opts.workloads if w != "rss-per-worker"]
    rows = []

    def attempt(workload, fn):
        try:
            r = fn()
        except Exception as e:  # keep going: one failure is one row
            msg = f"{type(e).__name__}: {e}".strip()
            log(f"WARNING {workload} / {runner} failed: {msg}")
            r = row(workload, runner, None, error=msg)
        rows.append(r)
        save(rows)
        if "error" not in r:
            log(f"{workload:<15} {runner:<34} {r['value']:10.4g} {r['unit']}")
        return r

    if runner != SERIAL and "start-to-first" in wanted:
        attempt("start-to-first", lambda: bench_start(runner, workers, opts))

    timed = [w for w in ("fib24x64", "map-trivial", "map-default", "call-trivial") if w in wanted]
    if not timed:
        return rows
    ex = None
    if runner != SERIAL:
        try:
            ex = make_executor(runner, workers)
            seen = warm(ex, workers)
            if seen != workers:
                log(f"note: {runner} ran the warm-up on {seen} of {workers} workers")
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".strip()
            log(f"WARNING {runner} could not start: {msg}")
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)
            rows.extend(row(w, runner, None, error=msg) for w in timed)
            save(rows)
            return rows
    try:
        bench = {"fib24x64": bench_fib, "map-trivial": bench_map, "call-trivial": bench_call,
                 "map-default": lambda *a: bench_map(*a, default_chunks=True)}
        for w in timed:
            attempt(w, lambda w=w: bench[w](runner, ex, workers, opts))
    finally:
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
    return rows


def run_runner_in_child(runner, opts):
    """Run one runner's workloads in a fresh process of this script; never raises."""
    timed = [w for w in opts.workloads if w != "rss-per-worker"
             and not (runner == SERIAL and w in POOL_ONLY)]
    rows = []
    if timed:
        fd, out_path = tempfile.mkstemp(prefix="pool_peers_", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", runner,
               "--child-out", out_path, "--workers", str(opts.workers),
               "--repeat", str(opts.repeat), "--budget", str(opts.budget),
               "--map-calls", str(opts.map_calls), "--call-calls", str(opts.call_calls),
               "--start-reps", str(opts.start_reps), "--workloads", ",".join(timed),
               "--suite", SUITE]
        err = None
        # Its own session, so that on a time-out its pool's worker processes go with it.
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
        done = {r["workload"] for r in rows}
        for w in timed:
            if w not in done:
                msg = err or "no result from runner process"
                log(f"WARNING {w} / {runner} failed: {msg}")
                rows.append(row(w, runner, None, error=msg))
    if "rss-per-worker" in opts.workloads and runner != SERIAL:
        try:
            r = bench_rss(runner, opts.workers, opts)
            log(f"{'rss-per-worker':<15} {runner:<34} {r['value']:10.4g} {r['unit']}")
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".strip()
            log(f"WARNING rss-per-worker / {runner} failed: {msg}")
            r = row("rss-per-worker", runner, None, error=msg)
        rows.append(r)
    return rows


# --------------------------------------------------------------------------- main

def print_table(rows):
    print(f"{'workload':<15} {'runner':<34} {'value':>10} {'unit':<8} {'speedup':>8}  note")
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<15} {r['runner']:<34} {'ERROR':>10} {r['unit']:<8} "
                  f"{'':>8}  {r['error']}")
            continue
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else ""
        print(f"{r['workload']:<15} {r['runner']:<34} {r['value']:10.4g} {r['unit']:<8} "
              f"{sp:>8}  {r['note']}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the rows to PATH (JSON list)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="max_workers for every pool (default: os.cpu_count())")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per measurement (median)")
    ap.add_argument("--budget", type=float, default=25.0,
                    help="seconds one measurement may take before it stops repeating")
    ap.add_argument("--map-calls", type=int, default=100_000,
                    help="calls for map-trivial (and the serial loops)")
    ap.add_argument("--call-calls", type=int, default=2_000,
                    help="one-at-a-time round trips for call-trivial")
    ap.add_argument("--start-reps", type=int, default=5, help="fresh pools for start-to-first")
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                    help="comma-separated subset of: " + ", ".join(WORKLOADS))
    ap.add_argument("--runners", default=",".join(DEFAULT_RUNNERS),
                    help="comma-separated subset of: " + ", ".join(RUNNER_KEYS))
    ap.add_argument("--suite", default="pool", help="the suite name written in each row")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 repetition, 10,000 map calls, 200 round trips")
    ap.add_argument("--child-timeout", type=float, default=240.0, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--rss-probe", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    global SUITE
    SUITE = opts.suite
    if opts.quick:
        opts.repeat, opts.map_calls, opts.call_calls, opts.start_reps = 1, 10_000, 200, 2
    opts.workloads = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    bad = [w for w in opts.workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s): {', '.join(bad)}")
    keys = [k.strip() for k in opts.runners.split(",") if k.strip()]
    bad = [k for k in keys if k not in RUNNER_KEYS]
    if bad:
        ap.error(f"unknown runner(s): {', '.join(bad)}")
    opts.runner_list = [RUNNER_KEYS[k] for k in keys]
    if opts.workers < 1:
        ap.error("--workers must be at least 1")
    return opts


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    if opts.rss_probe:
        print(json.dumps(rss_probe(opts.rss_probe, opts.workers)))
        return 0
    if opts.child:
        def save(rows):
            tmp = opts.child_out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rows, f)
            os.replace(tmp, opts.child_out)
        save(run_runner(opts.child, opts, save))
        return 0

    log(f"Python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs, "
        f"{opts.workers} workers; backport import: {BACKPORT_IMPORT}")
    t0 = time.perf_counter()
    rows = []
    for runner in opts.runner_list:
        rows.extend(run_runner_in_child(runner, opts))

    # Speedup over serial for the CPU-bound workload.
    serial = next((r for r in rows if r["workload"] == "fib24x64" and r["runner"] == SERIAL
                   and r["value"] is not None), None)
    for r in rows:
        if r["workload"] == "fib24x64" and serial and r["value"]:
            r["speedup"] = serial["value"] / r["value"]
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
