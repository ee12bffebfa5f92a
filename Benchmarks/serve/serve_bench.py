#!/usr/bin/env python3
"""The serve suite: `subinterp serve` against Granian and gunicorn on the same WSGI apps, and
against uvicorn[standard], Hypercorn and Granian on the same ASGI (Starlette) app.

    serve_bench.py [--subinterp PATH] [--json PATH] [--quick] [...]   (--help lists the options)

Run it with the benchmark venv's Python (Benchmarks/run serve does): the peers (granian,
gunicorn, uvicorn, hypercorn) are taken from the same bin/ folder as this Python, and
`subinterp serve` gets `--python` pointing at it so the apps' imports (flask, starlette) resolve
in its sub-interpreters.

For every workload (an app in Benchmarks/serve/apps.py) and every server:
  start the server on a free 127.0.0.1 port with N workers (--workers, default 2); wait until
  GET / answers 200 (and check the body once); warm up for 2 s with wrk; then
      wrk -t2 -c32 -d10s --latency http://127.0.0.1:PORT/        (-c8 for stream-1mb)
  parse requests/s, p50 and p99 latency, and errors (non-2xx/3xx responses + socket errors);
  sample the RSS of the server's process tree (VmRSS of the server process and all its
  descendants) every 0.5 s during the run and take it once more when wrk ends; then SIGTERM
  the server (SIGKILL to its process group after 10 s).
One-worker runs (workload suffix "-1w") of subinterp serve and Granian on hello and flask-cpu
show how each scales from 1 to N workers.

The ASGI workloads (asgi_apps.py: one Starlette app) are measured the same way on their path
(/, /json, /stream). ws-echo runs this suite's own WebSocket client instead of wrk (ws_echo.c,
built with cc into the log folder): the same number of connections, each echoing a 32-byte text
message one at a time, for the same warm-up and duration; it reports messages/s and the p50/p99
round trip.

Sections (--sections, default all of them):
  base          the workloads above against every server in --servers (each server runs the
                workloads of its interface: WSGI or ASGI)
  incompatible  flask-numpy (Benchmarks/serve/incompatible.py: numpy and orjson, which refuse
                sub-interpreters): subinterp serve --isolation processes with N worker processes
                against gunicorn sync (N processes) and Granian (N workers)
  layouts       flask-json with 4 workers: subinterp serve as 1×4, 2×2 and 4×1 (processes ×
                interpreters) against Granian and gunicorn sync with 4 workers (workload
                "layouts-4w"): which layout to choose, by req/s and total RSS
  mixed         apps:mixed with a new connection per request and one request in 200 taking
                ~50 ms of CPU (wrk -s mixed.lua): p99 shows whether a busy worker keeps taking
                new connections; subinterp serve 1×2 and 2×1 against gunicorn sync and Granian

Rows (JSON list, the suite's usual format plus a "metric" field), five per run:
    {"suite": "serve", "workload": "hello", "runner": "Granian", "metric": "req/s",
     "value": 41234.5, "unit": "req/s", "speedup": null, "note": "..."}
metric / unit: "req/s" / "req/s", "p50 ms" / "ms", "p99 ms" / "ms", "errors" / "count",
"RSS MiB" / "MiB" (ws-echo: "msg/s" / "msg/s" instead of req/s). A run that failed (server did not start, crashed, wrk failed) gives rows with
"value": null and an "error" field. Only 127.0.0.1 is used.
"""

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.dirname(os.path.abspath(sys.executable))  # the venv's bin/ (granian, gunicorn)

SUITE = "serve"
RUNNERS = {  # key -> runner name in the rows
    "subinterp": "subinterp serve",
    # The same with its per-request deadline off: with the default --timeout 30, every request
    # schedules a deadline with the pool's controller, and that costs a lot under load (see the
    # README's serve section), so this row shows what the server does without it.
    "subinterp-t0": "subinterp serve --timeout 0",
    "granian": "Granian",
    "gunicorn-sync": "gunicorn sync",
    "gunicorn-gthread": "gunicorn gthread",
    "uvicorn": "uvicorn[standard]",
    "hypercorn": "Hypercorn",
    # The app in the main interpreter of N worker processes (what --isolation auto picks for an
    # app whose extension modules refuse sub-interpreters).
    "subinterp-processes": "subinterp serve --isolation processes",
}
BASE_RUNNERS = ["subinterp", "subinterp-t0", "granian", "gunicorn-sync", "gunicorn-gthread", "uvicorn", "hypercorn"]
# Also "subinterp-MxN": subinterp serve --processes M --workers N ("subinterp serve M×N").
LAYOUT = re.compile(r"subinterp-(\d+)x(\d+)")
# workload -> (interface, MODULE:APP in Benchmarks/serve, path measured)
WORKLOADS = {
    "hello": ("wsgi", "apps:hello", "/"),
    "flask-json": ("wsgi", "apps:flask_json", "/"),
    "flask-cpu": ("wsgi", "apps:flask_cpu", "/"),
    "stream-1mb": ("wsgi", "apps:stream_1mb", "/"),
    "starlette-text": ("asgi", "asgi_apps:app", "/"),
    "starlette-json": ("asgi", "asgi_apps:app", "/json"),
    "starlette-stream-1mb": ("asgi", "asgi_apps:app", "/stream"),
    "ws-echo": ("asgi", "asgi_apps:app", "/ws"),
    "flask-numpy": ("wsgi", "incompatible:flask_numpy", "/"),
    "mixed": ("wsgi", "apps:mixed", "/"),
}
BASE_WORKLOADS = ["hello", "flask-json", "flask-cpu", "stream-1mb", "starlette-text", "starlette-json",
                  "starlette-stream-1mb", "ws-echo"]
# Which servers run which interface's apps in the base section.
SERVES = {
    "wsgi": ("subinterp", "subinterp-t0", "granian", "gunicorn-sync", "gunicorn-gthread"),
    "asgi": ("subinterp", "uvicorn", "granian", "hypercorn"),
}
STREAMS = ("stream-1mb", "starlette-stream-1mb")
MIXED_SCRIPT = os.path.join(HERE, "mixed.lua")
# section -> (workload, row workload name, runners, workers (None: --workers), wrk script)
SECTIONS = {
    "incompatible": ("flask-numpy", "flask-numpy", ["subinterp-processes", "gunicorn-sync", "granian"], None, None),
    "layouts": ("flask-json", "layouts-4w", ["subinterp-1x4", "subinterp-2x2", "subinterp-4x1", "granian", "gunicorn-sync"],
                4, None),
    "mixed": ("mixed", "mixed", ["subinterp", "subinterp-2x1", "gunicorn-sync", "granian"], 2, MIXED_SCRIPT),
}


def runner_name(key):
    layout = LAYOUT.fullmatch(key)
    if layout:
        return f"subinterp serve {layout.group(1)}×{layout.group(2)}"
    return RUNNERS[key]
ONE_WORKER = {"subinterp": ("hello", "flask-cpu"), "granian": ("hello", "flask-cpu")}
WS_MESSAGE_BYTES = 32
GTHREAD_THREADS = 4


def log(msg):
    print(f"serve_bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers

def server_command(key, workload, workers, port, opts):
    interface, spec, _ = WORKLOADS[workload]
    common = ["--bind", f"127.0.0.1:{port}", "--chdir", HERE, "--python", os.path.abspath(sys.executable)]
    if key in ("subinterp", "subinterp-t0"):
        return [opts.subinterp, "serve", spec, "--workers", str(workers)] + common + (
            ["--timeout", "0"] if key == "subinterp-t0" else [])
    if key == "subinterp-processes":
        return [opts.subinterp, "serve", spec, "--isolation", "processes", "--workers", str(workers)] + common
    layout = LAYOUT.fullmatch(key)
    if layout:
        return [opts.subinterp, "serve", spec, "--processes", layout.group(1), "--workers", layout.group(2)] + common
    if key == "granian":
        return [os.path.join(BIN, "granian"), "--interface", interface, "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", HERE,
                "--no-access-log", spec]
    if key == "uvicorn":
        # uvicorn[standard] as people deploy it: uvloop and httptools.
        return [os.path.join(BIN, "uvicorn"), spec, "--workers", str(workers), "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning"]
    if key == "hypercorn":
        return [os.path.join(BIN, "hypercorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                spec]
    if key.startswith("gunicorn"):
        cmd = [os.path.join(BIN, "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
               "--chdir", HERE]
        if key == "gunicorn-sync":
            cmd += ["-k", "sync"]
        else:
            cmd += ["-k", "gthread", "--threads", str(GTHREAD_THREADS)]
        return cmd + [spec]
    raise ValueError(key)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_root(port, timeout=5.0, path="/"):
    """GET path once (/ by default): (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheaders()
    finally:
        conn.close()


def check_path(workload):
    """The path checked once the server is up (ws-echo: the app's plain-text route)."""
    path = WORKLOADS[workload][2]
    return "/" if workload == "ws-echo" else path


def check_body(workload, status, body, headers):
    """'' when the checked path gave what the app should, else what is wrong."""
    if status != 200:
        return f"GET {check_path(workload)} answered {status}: {body[:200]!r}"
    if workload == "hello" and body != b"Hello, world!\n":
        return f"unexpected body {body[:100]!r}"
    if workload in ("starlette-text", "ws-echo") and body != b"Hello, world!":
        return f"unexpected body {body[:100]!r}"
    if workload == "starlette-json":
        try:
            if json.loads(body).get("message") != "Hello, world!":
                return f"unexpected JSON {body[:100]!r}"
        except ValueError:
            return f"not JSON: {body[:100]!r}"
    if workload == "starlette-stream-1mb" and len(body) != 16 * 65536:
        return f"body is {len(body)} bytes, expected {16 * 65536}"
    if workload == "flask-json":
        try:
            if json.loads(body).get("message") != "Hello, world!":
                return f"unexpected JSON {body[:100]!r}"
        except ValueError:
            return f"not JSON: {body[:100]!r}"
    if workload == "flask-cpu":
        try:
            if "result" not in json.loads(body):
                return f"unexpected JSON {body[:100]!r}"
        except ValueError:
            return f"not JSON: {body[:100]!r}"
    if workload == "stream-1mb" and len(body) != 16 * 65536:
        return f"body is {len(body)} bytes, expected {16 * 65536}"
    if workload == "mixed" and body != b"Hello, world!\n":
        return f"unexpected body {body[:100]!r}"
    if workload == "flask-numpy":
        try:
            if json.loads(body).get("sum") != 499500.0:
                return f"unexpected JSON {body[:100]!r}"
        except ValueError:
            return f"not JSON: {body[:100]!r}"
    return ""


def framing(headers):
    h = {k.lower(): v for k, v in headers}
    if "content-length" in h:
        return "Content-Length"
    if "chunked" in h.get("transfer-encoding", "").lower():
        return "chunked"
    return "close-delimited"


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_rss(pid):
    """(sum of VmRSS in KiB over pid and all its descendants, number of processes)."""
    kids = children_map()
    todo, seen, total = [pid], set(), 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
        todo.extend(kids.get(p, []))
    return total, len(seen)


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """CPU seconds (user + system) used so far by pid and its live descendants."""
    kids = children_map()
    todo, seen, total = [pid], set(), 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(kids.get(p, []))
    return total / TICK


def machine_busy():
    """CPU seconds all CPUs have spent busy (not idle/iowait) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return " ⏎ ".join(lines[-n:])


class Server:
    def __init__(self, key, workload, workers, opts, logdir):
        self.key, self.workload, self.workers = key, workload, workers
        self.port = free_port()
        self.cmd = server_command(key, workload, workers, self.port, opts)
        tag = f"{key}-{workload}-{workers}w"
        self.log_path = os.path.join(logdir, tag + ".log")
        self.proc = None
        self.startup_s = None
        self.stop_note = ""

    def start(self, timeout):
        env = dict(os.environ)
        env["PYTHONPATH"] = HERE + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("SUBINTERP_WORKERS", None)
        self.logf = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = t0 + timeout
        last = None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode} while starting: "
                                   + tail(self.log_path))
            try:
                status, body, headers = get_root(self.port, timeout=2.0, path=check_path(self.workload))
                self.startup_s = time.perf_counter() - t0
                return status, body, headers
            except OSError as e:
                last = e
                time.sleep(0.1)
        raise RuntimeError(f"no answer on 127.0.0.1:{self.port} within {timeout:.0f} s ({last}): "
                           + tail(self.log_path))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            t0 = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(grace)
                self.stop_note = f"SIGTERM: exited {code} after {time.perf_counter() - t0:.1f} s"
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
                self.stop_note = f"did not exit within {grace:.0f} s of SIGTERM; SIGKILLed"
        # Whatever is left in the session (e.g. a worker that outlived its parent).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.logf.close()


# --------------------------------------------------------------------------- wrk

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise ValueError("no Requests/sec line in wrk's output: " + out[-500:])
    res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("75", "p75"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[key] = to_ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out)
    res["requests"] = int(m.group(1)) if m else None
    res["read"] = m.group(3) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket"] = tuple(int(x) for x in m.groups()) if m else (0, 0, 0, 0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    res["errors"] = res["non2xx"] + sum(res["socket"])
    return res


def run_wrk(port, duration, connections, threads, timeout_s, path="/", script=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout", f"{timeout_s}s",
           "--latency"] + (["-s", script] if script else []) + [f"http://127.0.0.1:{port}{path}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


# --------------------------------------------------------------------------- WebSocket echo

WS_ECHO = None  # the client binary, built once per suite run


def build_ws_echo(logdir):
    """Compiles ws_echo.c into logdir; returns its path, or raises with the compiler's message."""
    out = os.path.join(logdir, "ws_echo")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) for the WebSocket client")
    p = subprocess.run([cc, "-O2", "-o", out, os.path.join(HERE, "ws_echo.c")], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("could not build ws_echo.c: " + p.stderr.strip()[-500:])
    return out


def run_ws_echo(port, warmup, duration, connections):
    cmd = [WS_ECHO, "127.0.0.1", str(port), WORKLOADS["ws-echo"][2], str(connections), str(warmup),
           str(duration), str(WS_MESSAGE_BYTES)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 60)
    if p.returncode != 0:
        raise RuntimeError(f"ws_echo exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    r = json.loads(p.stdout)
    return {"rps": r["msg_per_s"], "p50": r["p50_ms"], "p99": r["p99_ms"], "errors": r["errors"],
            "requests": r["messages"]}


# --------------------------------------------------------------------------- one run

def rows_for(workload, runner, values, note, error=None):
    rate = ("msg/s", "msg/s", "rps") if workload.startswith("ws-") else ("req/s", "req/s", "rps")
    metrics = [rate, ("p50 ms", "ms", "p50"), ("p99 ms", "ms", "p99"),
               ("errors", "count", "errors"), ("RSS MiB", "MiB", "rss")]
    out = []
    for metric, unit, key in metrics:
        row = {"suite": SUITE, "workload": workload, "runner": runner, "metric": metric,
               "value": None if error else values.get(key), "unit": unit, "speedup": None,
               "note": note}
        if error:
            row["error"] = error
        out.append(row)
    return out


def measure(key, workload, workers, opts, logdir, name=None, script=None):
    runner = runner_name(key)
    name = name or workload + ("-1w" if workers == 1 else "")
    conns = opts.stream_connections if workload in STREAMS else opts.connections
    path = WORKLOADS[workload][2]
    websocket = workload == "ws-echo"
    server = Server(key, workload, workers, opts, logdir)
    log(f"{name} / {runner}: {' '.join(server.cmd)}")
    notes = []
    result = None
    try:
        status, body, headers = server.start(opts.start_timeout)
        problem = check_body(workload, status, body, headers)
        if problem:
            notes.append(f"first GET / wrong: {problem}")
        notes.append(f"ready in {server.startup_s:.1f} s")
        if workload in STREAMS:
            notes.append(f"body framing: {framing(headers)}")
        if script:
            notes.append(f"wrk -s {os.path.basename(script)}")
        if opts.warmup > 0 and not websocket:
            run_wrk(server.port, opts.warmup, conns, opts.threads, opts.wrk_timeout, path, script)
        if not server.alive():
            raise RuntimeError(f"server exited with code {server.proc.returncode} during the "
                               f"warm-up: {tail(server.log_path)}")
        peak = [0, 0]
        stop_sampling = threading.Event()

        def sample():
            while not stop_sampling.wait(0.5):
                kib, n = tree_rss(server.proc.pid)
                if kib > peak[0]:
                    peak[:] = [kib, n]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = (machine_busy(), tree_cpu(server.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN),
                resource.getrusage(resource.RUSAGE_SELF))
        try:
            if websocket:
                # The client's own warm-up comes first on the same connections; the sample
                # covers it too, so the CPU note counts a little more than the measured part.
                ws = run_ws_echo(server.port, opts.warmup, opts.duration, conns)
            else:
                out = run_wrk(server.port, opts.duration, conns, opts.threads, opts.wrk_timeout, path, script)
        finally:
            stop_sampling.set()
            sampler.join()
        alive = server.alive()
        if alive:  # who used the CPUs during the run: the server, wrk, and anything else
            busy = machine_busy() - cpu0[0]
            srv = tree_cpu(server.proc.pid) - cpu0[1]
            ch, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
            wrk_s = (ch.ru_utime + ch.ru_stime) - (cpu0[2].ru_utime + cpu0[2].ru_stime)
            me_s = (me.ru_utime + me.ru_stime) - (cpu0[3].ru_utime + cpu0[3].ru_stime)
            other = max(0.0, busy - srv - wrk_s - me_s)
            client = "ws_echo" if websocket else "wrk"
            cpu_note = (f"CPU during the run: server {srv:.1f} s, {client} {wrk_s:.1f} s, other processes "
                        f"{other:.1f} s (of {opts.duration * (os.cpu_count() or 1)} CPU-s)")
            if other > 0.1 * opts.duration * (os.cpu_count() or 1):
                log(f"  warning: other processes used {other:.1f} CPU-s during this run")
        else:
            cpu_note = ""
        rss_kib, nproc = tree_rss(server.proc.pid) if alive else (0, 0)
        if websocket:
            res = ws
            notes.append(f"{res['requests']} messages echoed ({WS_MESSAGE_BYTES}-byte text, one in flight per "
                         f"connection, {conns} connections); errors: {res['errors']} connections lost")
        else:
            res = parse_wrk(out)
            c, r, w, t = res["socket"]
            notes.append(f"{res['requests']} requests, {res['read']} read; errors: non-2xx {res['non2xx']}, "
                         f"socket connect {c} read {r} write {w} timeout {t}")
            notes.append(f"p75 {res['p75']:.2f} ms, p90 {res['p90']:.2f} ms" if res["p75"] is not None else "")
        res["rss"] = rss_kib / 1024 if alive else None
        notes.append(f"RSS over {nproc} processes at the end, peak during the run "
                     f"{peak[0] / 1024:.0f} MiB")
        notes.append(cpu_note)
        if not alive:
            error = (f"server died during the run (exit code {server.proc.returncode}): "
                     + tail(server.log_path))
            result = rows_for(name, runner, res, "; ".join(n for n in notes if n), error=error)
            return result
        try:
            status, body, headers = get_root(server.port, path=check_path(workload))
            problem = check_body(workload, status, body, headers)
            if problem:
                notes.append(f"GET {check_path(workload)} after the run wrong: {problem}")
        except OSError as e:
            notes.append(f"GET {check_path(workload)} after the run failed: {e}")
        log(f"  {res['rps']:.0f} {'msg/s' if websocket else 'req/s'}, p50 {res['p50']:.3g} ms, "
            f"p99 {res['p99']:.3g} ms, errors {res['errors']}, RSS {res['rss']:.1f} MiB")
        result = rows_for(name, runner, res, "; ".join(n for n in notes if n))
        return result
    except Exception as e:  # noqa: BLE001 -- one failed run must not stop the suite
        log(f"  FAILED: {e}")
        result = rows_for(name, runner, {}, "; ".join(n for n in notes if n), error=str(e))
        return result
    finally:
        server.stop()
        # A shutdown that needed SIGKILL or ended with a non-zero code goes into the note.
        if server.stop_note and not server.stop_note.startswith("SIGTERM: exited 0 "):
            log(f"  shutdown: {server.stop_note}")
            for r in result or []:
                r["note"] = "; ".join(x for x in (r["note"], "shutdown: " + server.stop_note) if x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subinterp", default=os.path.join(ROOT, ".build-bench", "release", "subinterp"),
                    help="the subinterp binary (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run (10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up wrk run (2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--stream-connections", type=int, default=8,
                    help="wrk connections for the 1 MiB streams (8)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--wrk-timeout", type=int, default=5, help="wrk's per-request timeout, s (5)")
    ap.add_argument("--start-timeout", type=float, default=30, help="seconds to wait for a server (30)")
    ap.add_argument("--servers", default=",".join(BASE_RUNNERS),
                    help="the base section's servers, comma-separated: " + ", ".join(BASE_RUNNERS))
    ap.add_argument("--workloads", default=",".join(BASE_WORKLOADS),
                    help="the base section's workloads, comma-separated: " + ", ".join(BASE_WORKLOADS))
    ap.add_argument("--sections", default="base," + ",".join(SECTIONS),
                    help="comma-separated: base, " + ", ".join(SECTIONS) + " (default: all)")
    ap.add_argument("--no-one-worker", action="store_true", help="skip the one-worker (-1w) runs")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 s warm-up")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--logs", help="keep the servers' output in this folder (default: a temporary "
                    "folder, removed unless a run failed)")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.duration, opts.warmup = 2, 1
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    workloads = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    sections = [x.strip() for x in opts.sections.split(",") if x.strip()]
    for s in servers:
        if s not in BASE_RUNNERS:
            ap.error(f"unknown server {s!r}")
    for w in workloads:
        if w not in BASE_WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for x in sections:
        if x != "base" and x not in SECTIONS:
            ap.error(f"unknown section {x!r}")
    if not shutil.which("wrk"):
        ap.error("wrk is not installed (apt-get install wrk)")
    if any(s.startswith("subinterp") for s in servers) and not os.access(opts.subinterp, os.X_OK):
        log(f"warning: {opts.subinterp} is not an executable; the subinterp serve rows will fail "
            "(build it: swift build -c release --product subinterp --scratch-path .build-bench)")

    logdir = opts.logs or tempfile.mkdtemp(prefix="serve-bench-")
    os.makedirs(logdir, exist_ok=True)
    if "base" in sections and "ws-echo" in workloads:
        global WS_ECHO
        try:
            WS_ECHO = build_ws_echo(logdir)
        except RuntimeError as e:
            log(f"warning: {e}; the ws-echo rows will fail")
            WS_ECHO = "/nonexistent/ws_echo"
    plan = []  # (server, workload, workers, row workload name, wrk script)
    if "base" in sections:
        for w in workloads:
            for s in servers:
                if s not in SERVES[WORKLOADS[w][0]]:
                    continue
                plan.append((s, w, opts.workers, None, None))
                if not opts.no_one_worker and w in ONE_WORKER.get(s, ()) and opts.workers != 1:
                    plan.append((s, w, 1, None, None))
    for x in sections:
        if x == "base":
            continue
        workload, name, runners, workers, script = SECTIONS[x]
        for s in runners:
            plan.append((s, workload, workers or opts.workers, name, script))
    log(f"{len(plan)} runs of {opts.warmup} s warm-up + {opts.duration} s; wrk -t{opts.threads} "
        f"-c{opts.connections} (streams: -c{opts.stream_connections}); server output in {logdir}")
    rows, failed = [], False
    t0 = time.perf_counter()
    for s, w, n, name, script in plan:
        rs = measure(s, w, n, opts, logdir, name=name, script=script)
        failed |= any(r.get("error") for r in rs)
        rows.extend(rs)
        if opts.json:  # write as we go so that an interrupted run leaves its rows
            tmp = opts.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rows, f, indent=1)
            os.replace(tmp, opts.json)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if not opts.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    if failed or opts.logs:
        log(f"server output kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
