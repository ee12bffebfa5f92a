#!/usr/bin/env python3
"""Side-by-side report of benchmark row files.

    report.py [--md PATH] [--svg PATH] ROWS.json [ROWS.json ...]

Each file holds a JSON list of rows
    {"suite", "workload", "runner", "value", "unit", "speedup", "note"[, "error"]}
as written by the Python peers (Benchmarks/peers/pool_peers.py, suite "pool";
Benchmarks/peers/channel_peers.py, suite "channels") and by the Swift
benchmark (runners whose names start with "subinterp": "subinterp
InterpreterPool" for the pool suite, "subinterp.Queue" and
"subinterp.SharedBuffer" for the channels suite). Prints one markdown table per
workload, with a column comparing each runner to that workload's subinterp row
when there is one, and writes the same markdown to --md and a horizontal bar
chart to --svg (plain SVG, no plotting library). Works with the Swift rows
missing. The default output paths are Benchmarks/results/<suite>.md and .svg.

The comparison column is oriented so that above 1x always means the subinterp
row is better: runner / subinterp for lower-is-better workloads (times,
memory), subinterp / runner for higher-is-better ones (throughput).
"""

import argparse
import datetime
import html
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE_PREFIX = "subinterp"  # rows from the Swift benchmark

# Per suite: the title, the chart's title, and the Swift runners (for the legend).
SUITES = {
    "pool": ("Pool benchmarks",
             "Pool benchmarks: subinterp InterpreterPool vs Python's executors",
             ["subinterp InterpreterPool"]),
    "python": ("Python executor benchmarks",
               "From Python: subinterp.InterpreterPoolExecutor vs Python's executors",
               ["subinterp InterpreterPoolExecutor"]),
    "channels": ("Channel benchmarks",
                 "Channel benchmarks: subinterp.Queue and SharedBuffer vs Python's queues",
                 ["subinterp.Queue", "subinterp.SharedBuffer"]),
    "serve": ("Server benchmarks (WSGI and ASGI)",
              "subinterp serve vs Granian and gunicorn (WSGI), uvicorn[standard], Granian and Hypercorn (ASGI); 2 workers unless -1w",
              ["subinterp serve"]),
}

# Known workloads: title, what is measured, and whether lower values are better.
WORKLOADS = {
    "fib24x64": ("64 × fib(24)", "wall time for 64 calls of pure-Python fib(24)", True),
    "map-trivial": ("map over trivial calls",
                    "time per call of noop(x) through map (chunked where the executor supports it)", True),
    "map-default": ("map over trivial calls, no chunksize",
                    "time per call of noop(x) through map without a chunksize: each executor's default "
                    "(one call per task for the standard ones; adaptive chunks for subinterp)", True),
    "call-trivial": ("trivial call round trip",
                     "time per submit(noop, i).result(), one call at a time", True),
    "start-to-first": ("pool start to first result",
                       "constructing a fresh pool until the first submit(noop, 1).result() returns", True),
    "rss-per-worker": ("memory per worker",
                       "RSS added per worker once every worker has started (process and children)", True),
    # suite "channels"
    "roundtrip": ("queue round trip",
                  "one side puts a small int on queue A, the other gets it and puts it on queue B, "
                  "the first gets it back: time per round trip", True),
    "throughput": ("one-way message throughput",
                   "small ints from one side to the other, from the first put until the receiver "
                   "has got the last one", False),
    "handoff-100MB": ("hand a 100 MB buffer over",
                      "from the sender putting a 100 MB buffer (or a handle to it) on a queue until "
                      "the receiver has read a byte of it", True),
}
RUNNER_ORDER = [
    "subinterp InterpreterPool",
    "subinterp InterpreterPoolExecutor",
    "subinterp.Queue",
    "subinterp.SharedBuffer",
    "serial",
    "ThreadPoolExecutor",
    "ProcessPoolExecutor (fork)",
    "ProcessPoolExecutor (forkserver)",
    "InterpreterPoolExecutor (backport)",
    "interpreters.queues (backport)",
    "multiprocessing.Queue",
    "multiprocessing.Queue (bytes)",
    "multiprocessing shared_memory",
    "queue.Queue (threads)",
]


def warn(msg):
    print(f"report: warning: {msg}", file=sys.stderr)


def load_rows(paths):
    """Rows from all files; a later file's row replaces an earlier one for the same key."""
    by_key = {}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            warn(f"skipping {path}: {e}")
            continue
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            data = data["rows"]
        if not isinstance(data, list):
            warn(f"skipping {path}: expected a JSON list of rows")
            continue
        for r in data:
            if not isinstance(r, dict) or "workload" not in r or "runner" not in r:
                warn(f"{path}: skipping a malformed row: {r!r}")
                continue
            key = (r.get("suite", ""), r["workload"], r["runner"])
            if r.get("metric"):  # serve suite: several metrics per run
                key += (r["metric"],)
            if key in by_key:
                warn(f"{path}: {r['workload']} / {r['runner']} appears twice; using the later row")
            by_key[key] = r
    return list(by_key.values())


def shown_path(p):
    rel = os.path.relpath(p)
    return os.path.abspath(p) if rel.startswith("..") else rel


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def ok(r):
    return not r.get("error") and is_number(r.get("value"))


def fmt(v):
    """A value to about 3 significant digits, never in exponent form."""
    if not is_number(v):
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    if a == 0:
        return "0"
    return f"{v:.2g}" if a >= 1e-4 else f"{v:.1e}"


def fmt_ratio(x):
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:,.0f}×"


def unit_label(u):
    return {"us/call": "µs/call", "us": "µs"}.get(u, u)


def is_subinterp(r):
    return str(r.get("runner", "")).startswith(BASELINE_PREFIX)


def baseline(rs):
    """The workload's subinterp row with a value (the first one in runner order), or None."""
    return next((r for r in rs if is_subinterp(r) and ok(r)), None)


def vs_base(r, base, lower):
    """How many times better `base` (subinterp) is than `r`: > 1 means subinterp wins."""
    if base is None or not ok(r) or not base["value"] or not r["value"]:
        return None
    if r is base:
        return 1.0
    return r["value"] / base["value"] if lower else base["value"] / r["value"]


def vs_header(lower):
    return "vs subinterp: " + ("runner ÷ subinterp" if lower else "subinterp ÷ runner")


def workload_unit(suite, workload, rs):
    units = []
    for r in rs:
        if r.get("unit") and r["unit"] not in units:
            units.append(r["unit"])
    if len(units) > 1:
        warn(f"{suite} / {workload}: rows in different units ({', '.join(units)}); "
             f"the table and chart assume {units[0]}")
    return unit_label(units[0]) if units else ""


def suites_of(groups):
    return sorted({suite for suite, _ in groups}, key=lambda s: (list(SUITES).index(s)
                                                                 if s in SUITES else len(SUITES), s))


def group(rows):
    """{(suite, workload): [rows in runner order]} in a stable workload order."""
    known = list(WORKLOADS)
    groups = {}
    for r in rows:
        groups.setdefault((r.get("suite", ""), r["workload"]), []).append(r)

    def wkey(k):
        suite, w = k
        return (list(SUITES).index(suite) if suite in SUITES else len(SUITES), suite,
                known.index(w) if w in known else len(known), w)

    def rkey(r):
        n = r["runner"]
        return (RUNNER_ORDER.index(n) if n in RUNNER_ORDER else len(RUNNER_ORDER), n)

    return {k: sorted(groups[k], key=rkey) for k in sorted(groups, key=wkey)}


def meta(workload):
    title, what, lower = WORKLOADS.get(workload, (workload, "", True))
    return title, what, lower


# --------------------------------------------------------------------------- markdown

def markdown(groups, sources):
    suites = suites_of(groups)
    multi = len(suites) > 1
    title = SUITES.get(suites[0], (f"{suites[0]} benchmarks",))[0] if len(suites) == 1 else "Benchmarks"
    out = [f"# {title}", ""]
    out.append(f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
               + ", ".join(f"`{shown_path(p)}`" for p in sources) + ".")
    swift_names = [n for s in suites for n in SUITES.get(s, ("", "", []))[2]] or [BASELINE_PREFIX + " …"]
    have_base = any(baseline(rs) for rs in groups.values())
    if have_base:
        out.append("Column *vs subinterp* compares each runner with the workload's subinterp row "
                   "(" + ", ".join(f"`{n}`" for n in swift_names)
                   + (", measured from Python" if suites == ["python"] else ", from the Swift benchmark") + ") "
                   "and is oriented so that **above 1× means subinterp is better**: "
                   "runner ÷ subinterp where lower is better (times, memory), "
                   "subinterp ÷ runner where higher is better (throughput).")
    else:
        out.append("No subinterp rows were given (" + ", ".join(f"`{n}`" for n in swift_names)
                   + "; the Swift benchmark did not run or failed), so there is no comparison column.")
    out.append("")
    for (suite, workload), rs in groups.items():
        title, what, lower = meta(workload)
        unit = workload_unit(suite, workload, rs)
        prefix = f"{suite} / " if multi else ""
        out.append(f"## {prefix}{workload}: {title} ({'lower' if lower else '**higher**'} is better)")
        out.append("")
        if what:
            out.append(what + ".")
            out.append("")
        base = baseline(rs)
        show_speedup = any(is_number(r.get("speedup")) for r in rs)
        head = ["runner", unit or "value"]
        if show_speedup:
            head.append("speedup vs serial")
        if base:
            head.append(vs_header(lower))
        head.append("note")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|")
        for r in rs:
            name = f"**{r['runner']}**" if is_subinterp(r) else r["runner"]
            if ok(r):
                cells = [name, fmt(r["value"])]
            else:
                cells = [name, "failed"]
            if show_speedup:
                sp = r.get("speedup")
                cells.append(fmt_ratio(sp) if is_number(sp) and ok(r) else "")
            if base:
                x = vs_base(r, base, lower)
                cells.append(fmt_ratio(x) if x is not None else "")
            note = r.get("error") and f"error: {r['error']}" or r.get("note") or ""
            cells.append(note.replace("|", "\\|").replace("\n", " "))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- SVG

def esc(s):
    return html.escape(str(s), quote=True)


def svg_chart(groups):
    W = 980
    label_w = 270          # runner names, right-aligned
    bar_x = label_w + 12
    bar_max = 430          # longest bar
    row_h = 24
    bar_h = 16
    top = 76
    parts = []
    y = top
    swift_color, serial_color, peer_color = "#d95f02", "#9e9e9e", "#3b75af"
    suites = suites_of(groups)
    multi = len(suites) > 1
    for (suite, workload), rs in groups.items():
        title, what, lower = meta(workload)
        unit = workload_unit(suite, workload, rs)
        better = "lower is better" if lower else "HIGHER is better"
        prefix = f"{suite} / " if multi else ""
        parts.append(f'<text x="16" y="{y}" class="h">{esc(prefix + workload)}: {esc(title)}</text>')
        parts.append(f'<text x="{W - 16}" y="{y}" class="b" text-anchor="end">'
                     f'{esc(unit)} · {better} ({"shorter" if lower else "longer"} bar wins)</text>')
        y += 8
        vmax = max((r["value"] for r in rs if ok(r)), default=0) or 1
        base = baseline(rs)
        for r in rs:
            y += row_h
            cy = y - bar_h / 2 - 4  # vertical centre of the bar
            weight = ' font-weight="bold"' if is_subinterp(r) else ""
            parts.append(f'<text x="{label_w}" y="{y - 8}" class="l" text-anchor="end"{weight}>'
                         f'{esc(r["runner"])}</text>')
            if not ok(r):
                msg = str(r.get("error") or "no value")
                msg = msg if len(msg) <= 70 else msg[:67] + "…"
                parts.append(f'<text x="{bar_x}" y="{y - 8}" class="err">failed: {esc(msg)}</text>')
                continue
            v = r["value"]
            w = max(2.0, bar_max * v / vmax) if v > 0 else 0
            color = (swift_color if is_subinterp(r)
                     else serial_color if r["runner"] == "serial" else peer_color)
            parts.append(f'<rect x="{bar_x}" y="{cy - bar_h / 2:.1f}" width="{w:.1f}" '
                         f'height="{bar_h}" fill="{color}" rx="2"/>')
            label = f"{fmt(v)} {unit}"
            extras = []
            if is_number(r.get("speedup")):
                extras.append(f"{fmt_ratio(r['speedup'])} serial")
            x = vs_base(r, base, lower) if r is not base else None
            if x is not None:
                extras.append(f"subinterp {fmt_ratio(x)} better" if x >= 1
                              else f"{fmt_ratio(1 / x)} better than subinterp")
            if extras:
                label += "  (" + ", ".join(extras) + ")"
            if bar_x + w + 6 + 7.0 * len(label) <= W - 8:  # roughly 7 px a character at 12 px
                parts.append(f'<text x="{bar_x + w + 6:.1f}" y="{y - 8}" class="v">{esc(label)}</text>')
            else:  # no room to the right of a long bar: write the label inside it
                parts.append(f'<text x="{bar_x + w - 6:.1f}" y="{y - 8}" class="v" fill="white" '
                             f'text-anchor="end">{esc(label)}</text>')
        y += 40
    H = y - 10
    legend_y = 40
    have_base = any(is_subinterp(r) for rs in groups.values() for r in rs)
    swift_names = [n for s in suites for n in SUITES.get(s, ("", "", []))[2]] or [BASELINE_PREFIX + " …"]
    legend = [
        (" / ".join(swift_names) + (" (Swift)" if have_base else " (Swift: not run)"), swift_color),
        ("Python peers", peer_color),
    ]
    if any(r["runner"] == "serial" for rs in groups.values() for r in rs):
        legend.append(("serial loop", serial_color))
    chart_title = (SUITES[suites[0]][1] if len(suites) == 1 and suites[0] in SUITES
                   else "Benchmarks: subinterp vs Python")
    lx = 16
    leg = []
    for name, color in legend:
        leg.append(f'<rect x="{lx}" y="{legend_y - 11}" width="12" height="12" fill="{color}" rx="2"/>')
        leg.append(f'<text x="{lx + 18}" y="{legend_y}" class="b">{esc(name)}</text>')
        lx += 18 + 7.2 * len(name) + 24
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        "<style>"
        ".t{font-size:18px;font-weight:bold;fill:#222}"
        ".h{font-size:15px;font-weight:bold;fill:#222}"
        ".b{font-size:12px;fill:#555}"
        ".l{font-size:13px;fill:#222}"
        ".v{font-size:12px}"
        ".err{font-size:12px;fill:#c62828}"
        "</style>",
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="16" y="22" class="t">{esc(chart_title)}</text>',
        *leg,
        *parts,
        "</svg>",
        "",
    ])


# --------------------------------------------------------------------------- serve suite
# Rows of the serve suite (Benchmarks/serve/serve_bench.py) carry a "metric" field: one run
# (workload × runner) gives five rows, "req/s" ("msg/s" for WebSocket echo), "p50 ms", "p99 ms",
# "errors" and "RSS MiB". They are rendered as one table per workload, one line per runner.

SERVE_METRICS = ["req/s", "p50 ms", "p99 ms", "errors", "RSS MiB"]
SERVE_RUNNERS = ["subinterp serve", "subinterp serve --timeout 0", "subinterp serve --isolation processes",
                 "subinterp serve 1×4", "subinterp serve 2×2", "subinterp serve 4×1", "subinterp serve 2×1",
                 "Granian", "uvicorn[standard]", "Hypercorn", "gunicorn sync", "gunicorn gthread"]
SERVE_WORKLOADS = {
    "hello": ("plain WSGI hello world", "a 14-byte text/plain body with Content-Length"),
    "hello-1w": ("plain WSGI hello world, 1 worker", "as hello, with one worker"),
    "flask-json": ("Flask JSON", "a Flask view returning a small JSON object (jsonify)"),
    "flask-cpu": ("Flask + ~1–2 ms of pure-Python CPU work",
                  "a Flask view running a fixed 20,000-iteration pure-Python loop, then jsonify"),
    "flask-cpu-1w": ("Flask + CPU work, 1 worker", "as flask-cpu, with one worker"),
    "stream-1mb": ("1 MiB streamed", "a WSGI generator yielding 16 × 64 KiB, no Content-Length "
                   "(wrk -c8 instead of -c32)"),
    "starlette-text": ("Starlette plain text (ASGI)", "GET / of a Starlette app: PlainTextResponse(\"Hello, world!\")"),
    "starlette-json": ("Starlette JSON (ASGI)", "GET /json of the same app: a small JSONResponse"),
    "starlette-stream-1mb": ("Starlette 1 MiB streamed (ASGI)",
                             "GET /stream: a StreamingResponse of 16 × 64 KiB from an async generator, "
                             "no Content-Length (wrk -c8 instead of -c32)"),
    "ws-echo": ("WebSocket echo (ASGI)",
                "a Starlette WebSocket route echoing 32-byte text messages; the suite's own client "
                "(serve/ws_echo.c) keeps one message in flight on each of 32 connections; "
                "messages per second and round-trip times"),
    "flask-numpy": ("an app that cannot run in a sub-interpreter",
                    "a Flask view using numpy and orjson, which refuse sub-interpreters: subinterp serve "
                    "runs it in worker processes (--isolation processes), as many as the others' workers"),
    "layouts-4w": ("4 workers as processes × interpreters",
                   "flask-json with 4 workers: subinterp serve as 1×4, 2×2 and 4×1 (worker processes × "
                   "interpreters each), Granian and gunicorn sync with 4 workers"),
    "mixed": ("slow and fast requests, a new connection each",
              "apps:mixed with Connection: close, one request in 200 taking ~50 ms of CPU (wrk -s mixed.lua): "
              "the p99 shows whether a worker busy with a slow request keeps taking new connections"),
}


def rate_metric(metrics):
    """The throughput metric of a run: req/s, or msg/s for WebSocket echo."""
    return "msg/s" if "msg/s" in metrics else "req/s"


def serve_runs(rows):
    """{workload: {runner: {metric: row}}} in a stable order."""
    runs = {}
    for r in rows:
        runs.setdefault(r["workload"], {}).setdefault(r["runner"], {})[r.get("metric") or "req/s"] = r
    known = list(SERVE_WORKLOADS)
    order = sorted(runs, key=lambda w: (known.index(w) if w in known else len(known), w))
    return {w: dict(sorted(runs[w].items(), key=lambda kv: (
        SERVE_RUNNERS.index(kv[0]) if kv[0] in SERVE_RUNNERS else len(SERVE_RUNNERS), kv[0])))
        for w in order}


def serve_value(metrics, name):
    if name == "req/s":
        name = rate_metric(metrics)
    r = metrics.get(name)
    return r["value"] if r is not None and ok(r) else None


def serve_error(metrics):
    return next((r.get("error") for r in metrics.values() if r.get("error")), None)


def serve_base(by_runner):
    return next((m for n, m in by_runner.items() if n.startswith(BASELINE_PREFIX)
                 and is_number(serve_value(m, "req/s"))), None)


def serve_markdown(rows, sources):
    runs = serve_runs(rows)
    out = ["# " + SUITES["serve"][0], ""]
    out.append(f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
               + ", ".join(f"`{shown_path(p)}`" for p in sources) + ".")
    out.append("Every server runs the same app from `Benchmarks/serve/` (`apps.py` and `incompatible.py`: "
               "WSGI; `asgi_apps.py`: ASGI) on 127.0.0.1, "
               "measured with `wrk -t2 -c32 -d10s --latency` after a 2 s warm-up (1 MiB streams: -c8; "
               "ws-echo: the suite's WebSocket client, 32 connections, same warm-up and duration). "
               "*errors* = non-2xx/3xx responses + socket errors; *RSS* = VmRSS summed over the "
               "server process and all its descendants when wrk ends. "
               "The ratio columns are oriented so that **above 1× means `subinterp serve` is better**: "
               "req/s: subinterp ÷ runner; RSS: runner ÷ subinterp.")
    out.append("")
    for workload, by_runner in runs.items():
        title, what = SERVE_WORKLOADS.get(workload, (workload, ""))
        out.append(f"## {workload}: {title}")
        out.append("")
        if what:
            out.append(what + ".")
            out.append("")
        base = serve_base(by_runner)
        rate = rate_metric(next(iter(by_runner.values()), {}))
        head = ["runner", rate, "p50 ms", "p99 ms", "errors", "RSS MiB"]
        if base:
            head += [f"{rate}: subinterp ÷ runner", "RSS: runner ÷ subinterp"]
        head.append("note")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|")
        for runner, m in by_runner.items():
            name = f"**{runner}**" if runner.startswith(BASELINE_PREFIX) else runner
            err = serve_error(m)
            if err:
                cells = [name] + ["failed"] + [""] * 4
            else:
                cells = [name] + [fmt(serve_value(m, k)) if k != "errors" or serve_value(m, k) is None
                                  else f"{serve_value(m, k):,.0f}" for k in SERVE_METRICS]
            if base:
                rps, b_rps = serve_value(m, "req/s"), serve_value(base, "req/s")
                rss, b_rss = serve_value(m, "RSS MiB"), serve_value(base, "RSS MiB")
                cells.append(fmt_ratio(b_rps / rps) if not err and rps and b_rps else "")
                cells.append(fmt_ratio(rss / b_rss) if not err and rss and b_rss else "")
            first = m.get(rate_metric(m)) or next(iter(m.values()))
            note = err and f"error: {err}" or first.get("note") or ""
            cells.append(str(note).replace("|", "\\|").replace("\n", " "))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def serve_svg(rows):
    """Horizontal bars of req/s per workload (longer wins), p99 and RSS in the labels."""
    runs = serve_runs(rows)
    W, label_w, bar_max, row_h, bar_h, top = 1100, 240, 360, 24, 16, 76
    bar_x = label_w + 12
    swift_color, peer_color = "#d95f02", "#3b75af"
    parts, y = [], top
    for workload, by_runner in runs.items():
        title, _ = SERVE_WORKLOADS.get(workload, (workload, ""))
        parts.append(f'<text x="16" y="{y}" class="h">{esc(workload)}: {esc(title)}</text>')
        rate = rate_metric(next(iter(by_runner.values()), {}))
        parts.append(f'<text x="{W - 16}" y="{y}" class="b" text-anchor="end">'
                     f'{rate} · HIGHER is better (longer bar wins)</text>')
        y += 8
        vmax = max((serve_value(m, "req/s") or 0 for m in by_runner.values()), default=0) or 1
        base = serve_base(by_runner)
        for runner, m in by_runner.items():
            y += row_h
            cy = y - bar_h / 2 - 4
            mine = runner.startswith(BASELINE_PREFIX)
            weight = ' font-weight="bold"' if mine else ""
            parts.append(f'<text x="{label_w}" y="{y - 8}" class="l" text-anchor="end"{weight}>'
                         f'{esc(runner)}</text>')
            v, err = serve_value(m, "req/s"), serve_error(m)
            if err or v is None:
                msg = str(err or "no value")
                msg = msg if len(msg) <= 80 else msg[:77] + "…"
                parts.append(f'<text x="{bar_x}" y="{y - 8}" class="err">failed: {esc(msg)}</text>')
                continue
            w = max(2.0, bar_max * v / vmax) if v > 0 else 0
            parts.append(f'<rect x="{bar_x}" y="{cy - bar_h / 2:.1f}" width="{w:.1f}" '
                         f'height="{bar_h}" fill="{swift_color if mine else peer_color}" rx="2"/>')
            extras = []
            p99, rss, errs = (serve_value(m, k) for k in ("p99 ms", "RSS MiB", "errors"))
            if p99 is not None:
                extras.append(f"p99 {fmt(p99)} ms")
            if rss is not None:
                extras.append(f"{fmt(rss)} MiB")
            if errs:
                extras.append(f"{errs:,.0f} errors")
            if base is not None and m is not base and v:
                x = serve_value(base, "req/s") / v
                extras.append("≈ subinterp" if 0.995 <= x < 1.005
                              else f"subinterp {fmt_ratio(x)} faster" if x >= 1
                              else f"{fmt_ratio(1 / x)} faster than subinterp")
            label = f"{fmt(v)} {rate}" + (f"  ({', '.join(extras)})" if extras else "")
            if bar_x + w + 6 + 7.0 * len(label) <= W - 8 or 7.0 * len(label) > w - 12:
                parts.append(f'<text x="{bar_x + w + 6:.1f}" y="{y - 8}" class="v">{esc(label)}</text>')
            else:
                parts.append(f'<text x="{bar_x + w - 6:.1f}" y="{y - 8}" class="v" fill="white" '
                             f'text-anchor="end">{esc(label)}</text>')
        y += 40
    H = y - 10
    legend = [("subinterp serve (sub-interpreters in one process)", swift_color),
              ("Granian / gunicorn / uvicorn / Hypercorn (worker processes)", peer_color)]
    leg, lx = [], 16
    for name, color in legend:
        leg.append(f'<rect x="{lx}" y="29" width="12" height="12" fill="{color}" rx="2"/>')
        leg.append(f'<text x="{lx + 18}" y="40" class="b">{esc(name)}</text>')
        lx += 18 + 7.2 * len(name) + 24
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        "<style>"
        ".t{font-size:18px;font-weight:bold;fill:#222}"
        ".h{font-size:15px;font-weight:bold;fill:#222}"
        ".b{font-size:12px;fill:#555}"
        ".l{font-size:13px;fill:#222}"
        ".v{font-size:12px}"
        ".err{font-size:12px;fill:#c62828}"
        "</style>",
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="16" y="22" class="t">{esc(SUITES["serve"][1])}</text>',
        *leg,
        *parts,
        "</svg>",
        "",
    ])


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description="Side-by-side report of benchmark row files.")
    ap.add_argument("files", nargs="+", help="JSON row files (Benchmarks/results/*.json)")
    ap.add_argument("--md", help="markdown output (default: Benchmarks/results/<suite>.md, "
                    "or report.md when the rows hold several suites)")
    ap.add_argument("--svg", help="SVG chart output (default: Benchmarks/results/<suite>.svg, "
                    "or report.svg)")
    opts = ap.parse_args(argv)

    rows = load_rows(opts.files)
    if not rows:
        print("report: no rows in " + ", ".join(opts.files), file=sys.stderr)
        return 1
    serve_rows = [r for r in rows if r.get("suite") == "serve"]
    groups = group([r for r in rows if r.get("suite") != "serve"])
    suites = suites_of(groups) + (["serve"] if serve_rows else [])
    stem = suites[0] if len(suites) == 1 and suites[0] else "report"
    opts.md = opts.md or os.path.join(HERE, "results", stem + ".md")
    opts.svg = opts.svg or os.path.join(HERE, "results", stem + ".svg")
    md = "\n\n".join(([markdown(groups, opts.files)] if groups else [])
                     + ([serve_markdown(serve_rows, opts.files)] if serve_rows else []))
    if groups and serve_rows:
        warn("the chart shows the pool/channels rows only; chart the serve rows on their own")
    svg = svg_chart(groups) if groups else serve_svg(serve_rows)
    print(md)
    for path, text in ((opts.md, md + "\n"), (opts.svg, svg)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        print(f"report: wrote {shown_path(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
