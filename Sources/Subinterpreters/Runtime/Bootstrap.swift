/// Python run once in every new interpreter, before any user code (the `subinterp` package is
/// importable by then, see `cpy_package_install`). It hangs a few private helpers of the host on
/// the package and, when asked, replaces `sys.stdout` and `sys.stderr` with writers that emit
/// whole lines under the host's output lock. What the package itself needs in every process,
/// `CancelledError` and how objects are pickled, is in python/subinterp/__init__.py.
///
/// The host sets `_ISOLATED` in its globals: False when a worker of kind `main` enters the
/// main interpreter, which refuses no extension module and may run this more than once (its
/// workers then share the package, and with it one `CancelledError`).
enum Bootstrap {
    static let source = #"""
import sys
import subinterp

# Extension modules whose initialization is unsafe in an isolated interpreter even though
# CPython runs it: 3.12 runs the init of these single-phase modules before refusing them, and
# the init corrupts state shared with other interpreters; 3.13's _datetime shares objects
# between interpreters, and ending two that imported it crashes the process
# (python/cpython#136423, #119450). They are refused up front with CPython's own message;
# datetime, decimal and xml.etree then use their pure-Python implementations. _zoneinfo goes
# with _datetime: it needs the C datetime's capsule, and refused, zoneinfo falls back to Python.
_UNSAFE_EXTENSIONS = (
    frozenset({"_datetime", "_zoneinfo"}) if sys.version_info >= (3, 13)
    else frozenset({"_datetime", "_zoneinfo", "_decimal", "_ctypes", "pyexpat", "_elementtree",
                    # CPython's own test module: its init frees global state a second time
                    # (double free) when an interpreter runs it before refusing it.
                    "_testsinglephase"}))

class _RefuseUnsafeExtensions:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in _UNSAFE_EXTENSIONS:
            raise ImportError(f"module {name} does not support loading in subinterpreters", name=name)
        return None

if _ISOLATED:
    sys.meta_path.insert(0, _RefuseUnsafeExtensions)

def _qualified_name(t):
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"

import importlib as _importlib
_IMPORTLIB = _importlib.__file__.rpartition("/")[0] + "/"

def _internal_file(filename):
    """Frames of the host's plumbing and of the import machinery, not the user's code."""
    return (filename.startswith("<subinterp") or filename.startswith("<frozen importlib._bootstrap")
            or filename.startswith(_IMPORTLIB))

def _describe(exc):
    """(type name, message, traceback, module that refused to load in a sub-interpreter or None,
    the exception's own frames as (file, line, function) tuples, outermost first). Frames of
    the host and of importlib are left out of both the traceback and the frames."""
    import traceback, re
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    frames = []
    try:
        summary = traceback.TracebackException.from_exception(exc)
        seen = set()
        pending = [summary]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            current.stack = traceback.StackSummary.from_list(
                [frame for frame in current.stack if not _internal_file(frame.filename)])
            pending += [current.__cause__, current.__context__] + list(getattr(current, "exceptions", None) or [])
        frames = [(frame.filename, frame.lineno or 0, frame.name) for frame in summary.stack]
        formatted = "".join(summary.format())
    except Exception:
        formatted = ""
    refused = None
    seen = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = re.search(r"module (\S+) does not support loading in subinterpreters", str(current))
        if found:
            refused = found.group(1)
            break
        current = current.__cause__ or current.__context__
    return _qualified_name(type(exc)), message, formatted, refused, frames

def _resolve(name):
    """The object named by "package.module.attr", "package.module:attr.path" or a __main__ global."""
    import importlib
    if ":" in name:
        module_name, _, path = name.partition(":")
        target = importlib.import_module(module_name)
        for part in path.split("."):
            target = getattr(target, part)
        return target
    parts = name.split(".")
    if len(parts) == 1:
        main = sys.modules["__main__"]
        if hasattr(main, name):
            return getattr(main, name)
        import builtins
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise NameError(f"name '{name}' is not defined in __main__; use 'module.function' to call into a module")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name) and cut > 1:
                continue
            raise
        for part in parts[cut:]:
            target = getattr(target, part)
        return target
    raise ImportError(f"cannot resolve '{name}'")

class _LineWriter:
    """A text stream that writes whole lines under the host's output lock, so lines written by
    different interpreters never interleave. A partial line waits for its newline (flush keeps
    it) and is written when the interpreter ends."""

    def __init__(self, fd, name, errors):
        self._fd = fd
        self._pending = b""
        self.name = name
        self.encoding = "utf-8"
        self.errors = errors
        self.buffer = _LineBuffer(self)

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._write_bytes(text.encode("utf-8", self.errors))
        return len(text)

    def _write_bytes(self, data):
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._pending += data
            return
        if self._pending:
            data = self._pending + data
            cut += len(self._pending)
        self._pending = data[cut:]
        subinterp._write(self._fd, data[:cut])

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def _drain(self):
        # A last line without its newline gets one: written as it is, the next line of another
        # interpreter would continue it.
        if self._pending:
            pending, self._pending = self._pending, b""
            subinterp._write(self._fd, pending + b"\n")

    def fileno(self):
        return self._fd

    def isatty(self):
        import os
        return os.isatty(self._fd)

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    @property
    def closed(self):
        return False

    @property
    def line_buffering(self):
        return True

class _LineBuffer:
    """`sys.stdout.buffer`: bytes written here join the same line discipline."""

    def __init__(self, owner):
        self._owner = owner

    def write(self, data):
        self._owner._write_bytes(bytes(data))
        return len(data)

    def flush(self):
        pass

def _install_line_writers():
    import atexit
    sys.stdout = _LineWriter(1, "<stdout>", "strict")
    sys.stderr = _LineWriter(2, "<stderr>", "backslashreplace")
    atexit.register(_drain_output)

def _drain_output():
    for stream in (sys.stdout, sys.stderr):
        drain = getattr(stream, "_drain", None)
        if drain is not None:
            try:
                drain()
            except Exception:
                pass
        else:
            try:
                stream.flush()
            except Exception:
                pass

def _run_path(path):
    """Runs a script as __main__ the way `python path` does; returns its exit status.
    SystemExit gives its code; other exceptions propagate to the host with their traceback."""
    import os
    main = sys.modules["__main__"]
    with open(path, "rb") as file:
        source = file.read()
    code = compile(source, path, "exec")
    main.__dict__["__file__"] = os.path.abspath(path)
    try:
        exec(code, main.__dict__)
    except SystemExit as exit:
        if exit.code is None:
            return 0
        if isinstance(exit.code, int):
            return exit.code
        print(exit.code, file=sys.stderr)
        return 1
    return 0

def _before_end():
    """Runs just before the interpreter ends: flush held output, and retire the record
    `threading` keeps for the host thread while the module can still do it cleanly."""
    _drain_output()
    threading = sys.modules.get("threading")
    info = getattr(threading, "_thread_local_info", None)
    if info is not None:
        try:
            del info._track_dummy_thread_ref
        except AttributeError:
            pass

subinterp._describe = _describe
subinterp._before_end = _before_end
subinterp._run_path = _run_path
subinterp._resolve = _resolve
subinterp._install_line_writers = _install_line_writers
subinterp._drain_output = _drain_output
"""#
}
