"""A small Flask app for `subinterp serve`.

    subinterp serve flask_app:app --chdir Examples/wsgi --workers 4

Routes: `/` (JSON), `/cpu?n=N` (pure-Python work that holds the interpreter's GIL: with one
GIL per worker interpreter, requests run in parallel on all cores), `/stream` (a generator
response, sent to the client chunk by chunk).
"""

import time

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(hello="world")


@app.get("/cpu")
def cpu():
    n = request.args.get("n", default=100_000, type=int)
    if not 0 <= n <= 50_000_000:
        return jsonify(error="n must be between 0 and 50000000"), 400
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return jsonify(n=n, sum_of_squares=total, seconds=round(time.perf_counter() - started, 6))


@app.get("/stream")
def stream():
    count = request.args.get("count", default=5, type=int)
    delay = request.args.get("delay", default=0.0, type=float)

    def generate():
        for i in range(count):
            if delay:
                time.sleep(delay)
            yield f"chunk {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.post("/echo")
def echo():
    return jsonify(length=len(request.get_data()), json=request.get_json(silent=True))


if __name__ == "__main__":
    app.run()
