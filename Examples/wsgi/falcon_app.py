"""A small Falcon app for `subinterp serve`.

    subinterp serve falcon_app:app --chdir Examples/wsgi --workers 4

Falcon's optional Cython speedups (falcon.cyutil) refuse to load in a sub-interpreter; Falcon
catches that ImportError and uses its pure-Python code, so the app runs unchanged.
"""

import falcon


class Hello:
    def on_get(self, req, resp):
        resp.media = {"hello": "world", "framework": "falcon"}


class Item:
    def __init__(self):
        self.items = {}

    def on_get(self, req, resp, key):
        if key not in self.items:
            raise falcon.HTTPNotFound(title="no such item", description=key)
        resp.media = {"key": key, "value": self.items[key]}

    def on_put(self, req, resp, key):
        # Each worker interpreter has its own `items`: nothing is shared between them.
        self.items[key] = req.get_media()
        resp.status = falcon.HTTP_204


app = falcon.App()
app.add_route("/", Hello())
app.add_route("/items/{key}", Item())
