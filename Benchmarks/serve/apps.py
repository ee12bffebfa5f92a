"""The WSGI apps every server in the serve suite runs (Benchmarks/serve/serve_bench.py).

    subinterp serve apps:hello --chdir Benchmarks/serve
    granian --interface wsgi apps:flask_json          (from Benchmarks/serve)
    gunicorn apps:flask_cpu                           (from Benchmarks/serve)

hello       plain WSGI "Hello, world!" with Content-Length
flask_json  a Flask app whose / returns a small JSON object
flask_cpu   a Flask app whose / does fixed pure-Python CPU work (CPU_LOOPS iterations, about 1-2 ms)
            and returns the result as JSON
stream_1mb  plain WSGI generator: 16 chunks of 64 KiB, no Content-Length (chunked or close-delimited)
mixed       plain WSGI: / answers at once, /slow after SLOW_LOOPS iterations of pure-Python work
            (about 50 ms); the "mixed" workload sends one request in 200 to /slow
"""

from flask import Flask, jsonify

HELLO = b"Hello, world!\n"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


flask_json = Flask("flask_json")


@flask_json.route("/")
def _json_index():
    return jsonify(message="Hello, world!", items=[1, 2, 3], ok=True)


CPU_LOOPS = 20_000


def cpu_work(n=CPU_LOOPS):
    """Fixed pure-Python work: an integer hash-like mix over n iterations."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


flask_cpu = Flask("flask_cpu")


@flask_cpu.route("/")
def _cpu_index():
    return jsonify(result=cpu_work(), loops=CPU_LOOPS)


CHUNK = b"x" * (64 * 1024)
CHUNKS = 16


def stream_1mb(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body():
        for _ in range(CHUNKS):
            yield CHUNK

    return body()


SLOW_LOOPS = 500_000


def mixed(environ, start_response):
    body = HELLO
    if environ["PATH_INFO"] == "/slow":
        body = f"{cpu_work(SLOW_LOOPS)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
