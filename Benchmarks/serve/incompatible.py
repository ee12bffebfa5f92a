"""The serve suite's app that cannot run in a sub-interpreter (Benchmarks/serve/serve_bench.py,
workload flask-numpy): numpy's and orjson's extension modules refuse them, so `subinterp serve`
runs it in worker processes (--isolation processes), like gunicorn and Granian do.

flask_numpy  a Flask view that sums and averages a 1,000-element numpy array and encodes the
             result with orjson
"""

import numpy
import orjson
from flask import Flask, Response

flask_numpy = Flask("flask_numpy")
VALUES = numpy.arange(1000, dtype=numpy.float64)


@flask_numpy.route("/")
def _numpy_index():
    result = {"sum": float(VALUES.sum()), "mean": float(VALUES.mean()), "n": int(VALUES.size)}
    return Response(orjson.dumps(result), mimetype="application/json")
