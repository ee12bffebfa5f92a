import Foundation

/// The Python side of the WSGI server, run once in every worker interpreter (the pool's setup).
/// It loads the app and turns one request into a response the host can send: PEP 3333's
/// environ, `start_response` (with `exc_info`), `write()`, `wsgi.file_wrapper`, and response
/// iterables pulled one non-empty chunk at a time, so generators stream.
enum WSGIAdapter {
    static func setup(app: String, multiprocess: Bool) -> String {
        return AppLoader.python(app: app, as: "_wsgi_app") + "\n" + #"""
import sys as _sys, io as _io

_wsgi_multiprocess = \#(multiprocess ? "True" : "False")
_wsgi_open = {}

class _WSGIErrors:
    """wsgi.errors: text goes to the server's log (the worker's stderr, line by line)."""
    def write(self, text):
        _sys.stderr.write(text)
    def writelines(self, lines):
        for line in lines:
            _sys.stderr.write(line)
    def flush(self):
        pass

_wsgi_errors = _WSGIErrors()

class _FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks; close() closes it."""
    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close
    def __iter__(self):
        return self
    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

def _header_text(text, what):
    """A header name or value as an exact str. A str subclass (a StrEnum member, say) is
    accepted and converted with str.__str__, which gives its characters whatever __str__ or
    __format__ the subclass defines; anything else is an error. CR, LF, NUL and characters
    outside Latin-1 are refused by the host when it encodes the head."""
    if type(text) is str:
        return text
    if isinstance(text, str):
        return str.__str__(text)
    raise TypeError(f"{what} must be a str, not {type(text).__name__}")

class _Response:
    __slots__ = ("status", "headers", "sent", "chunks", "iterator", "result", "whole")

    def __init__(self):
        self.status = None
        self.headers = None
        self.sent = False
        self.chunks = []
        self.iterator = None
        self.result = None
        self.whole = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        status = _header_text(status, "the status")
        if len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError(f"the status must look like '200 OK', not {status!r}")
        if not isinstance(headers, list):
            raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
        checked = []
        for header in headers:
            if not (isinstance(header, tuple) and len(header) == 2):
                raise TypeError(f"each response header must be a (name, value) tuple, not {header!r}")
            name, value = header
            if type(name) is not str or type(value) is not str:
                name = _header_text(name, "a header name")
                value = _header_text(value, f"the value of header {name!r}")
            checked.append((name, value))
        self.status = status
        self.headers = checked
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"write() needs bytes, not {type(data).__name__}")
        if data:
            self.chunks.append(bytes(data))
            self.sent = True

    def pull(self):
        """Runs the iterable to its next non-empty chunk (a list or tuple, already in memory,
        to its end, so the host knows the whole body and sends its length); returns
        (chunks, done)."""
        if self.iterator is not None:
            for data in self.iterator:
                if not isinstance(data, (bytes, bytearray)):
                    raise TypeError(f"the response iterable yielded {type(data).__name__}, not bytes")
                if data:
                    self.chunks.append(bytes(data))
                    if not self.whole:
                        break
            else:
                self.iterator = None
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        self.sent = self.sent or bool(self.chunks) or self.iterator is None
        chunks, self.chunks = self.chunks, []
        return chunks, self.iterator is None

    def close(self):
        close = getattr(self.result, "close", None)
        self.result = None
        self.iterator = None
        if close is not None:
            close()

_wsgi_constants = {
    "SCRIPT_NAME": "",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": _wsgi_errors,
    "wsgi.multithread": False,
    "wsgi.multiprocess": _wsgi_multiprocess,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": _FileWrapper,
    "wsgi.input_terminated": True,
}

def _wsgi_start(request_id, environ, body):
    """environ holds the request's own keys, made by the host from the raw head (Latin-1
    values, PATH_INFO decoded, names with '_' dropped); the constant keys are added here."""
    environ.update(_wsgi_constants)
    environ["wsgi.input"] = _io.BytesIO(body)
    response = _Response()
    try:
        response.result = _wsgi_app(environ, response.start_response)
        response.whole = type(response.result) in (list, tuple)
        response.iterator = iter(response.result)
        chunks, done = response.pull()
    except BaseException:
        response.close()
        raise
    if done:
        response.close()
    else:
        _wsgi_open[request_id] = response
    return (int(response.status[:3]), response.status[4:], response.headers, chunks, done)

def _wsgi_next(request_id):
    response = _wsgi_open[request_id]
    try:
        chunks, done = response.pull()
    except BaseException:
        _wsgi_open.pop(request_id, None)
        response.close()
        raise
    if done:
        _wsgi_open.pop(request_id, None)
        response.close()
    return (chunks, done)

def _wsgi_close(request_id):
    response = _wsgi_open.pop(request_id, None)
    if response is not None:
        response.close()
"""#
    }
}
