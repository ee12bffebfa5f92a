"""A Flask app that cannot run in a sub-interpreter: numpy's and orjson's extension modules do
not support them (single-phase init). `subinterp serve` tries it in an isolated interpreter,
logs one warning naming the module, and serves it in worker processes instead, one per worker,
each running the app in its main interpreter (--isolation auto, the default).

    subinterp serve incompatible_app:app --chdir Examples/wsgi --workers 2    # 2 worker processes
    subinterp serve incompatible_app:app --chdir Examples/wsgi --isolation interpreters   # exits 1
    subinterp check numpy orjson                                             # says why

GET /?n=10 answers {"n": 10, "sum": 45, "mean": 4.5, "pid": ...}, computed with numpy and
encoded with orjson.
"""

import os

import numpy
import orjson
from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/")
def index():
    n = request.args.get("n", 10, type=int)
    if n < 0 or n > 10_000_000:
        return Response(orjson.dumps({"error": "n must be between 0 and 10000000"}), status=400, mimetype="application/json")
    values = numpy.arange(n, dtype=numpy.int64)
    result = {"n": n, "sum": int(values.sum()), "mean": float(values.mean()) if n else 0.0, "pid": os.getpid()}
    return Response(orjson.dumps(result), mimetype="application/json")
