"""A small Bottle app for `subinterp serve`.

    subinterp serve bottle_app:app --chdir Examples/wsgi --workers 4
"""

import bottle

app = bottle.Bottle()


@app.get("/")
def index():
    # A dict becomes a JSON response.
    return {"hello": "world", "framework": "bottle"}


@app.get("/hello/<name>")
def greet(name):
    bottle.response.content_type = "text/plain; charset=utf-8"
    return f"Hello, {name}!\n"


@app.post("/echo")
def echo():
    return {"length": len(bottle.request.body.read()), "json": bottle.request.json}
