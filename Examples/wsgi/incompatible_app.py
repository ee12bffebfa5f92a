"""An app `subinterp serve` refuses at startup: numpy's extension modules do not support
sub-interpreters (single-phase init), so importing numpy fails in every worker, and the server
exits with a message naming the module and pointing at `subinterp check`.

    subinterp serve incompatible_app:app --chdir Examples/wsgi   # exits 1
    subinterp check numpy                                         # says why
"""

import numpy


def app(environ, start_response):
    body = f"{numpy.arange(10).sum()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
