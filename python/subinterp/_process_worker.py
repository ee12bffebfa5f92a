"""The loop of a pool's process worker: a plain Python process that runs calls by name, one at a
time, in its main interpreter, so every extension module loads (numpy, orjson, pydantic-core).

The host (``Pool/ProcessWorker.swift``) starts ``python -P -c <this source>`` with:

- fd 3: a Unix stream socket to the host. Every message in either direction is one item of the
  item encoding (``Sources/CPython/ENCODING.md``), after its length as a little-endian ``u64``.
- fd 4: the read end of a pipe on which the host writes the 8-byte id of the request to
  interrupt, just before it sends ``SIGUSR1``. The handler raises ``subinterp.CancelledError``
  only if that request is the one running, so an interrupt that arrives late never reaches the
  next call.

Requests are tuples ``(id, kind, ...)``:

- ``(0, "start", options)``: set up as an interpreter worker would be (``sys.path``, the
  ``setup`` code as ``<setup>``, the tools' ``loader`` as ``<subinterp loader>``); answered with
  ``(0, True, None)`` or ``(0, False, error)``.
- ``(id, "call", function, args, kwargs)``: answered with ``(id, True, value)`` or
  ``(id, False, error)``.
- ``(id, "chunk", function, inputs, star)``: one answer ``(id, True, value)`` or
  ``(id, False, error)`` per input, as each finishes, then ``(id, "done", seconds)``. A
  cancelled chunk stops after the input that was interrupted.

``error`` is ``(type name, message, traceback, refused module or None, frames)``, what
``subinterp._describe`` gives in an interpreter. The host closes the socket to end the worker.
This file is the one place the encoding is written in Python; it needs only the standard library.
"""

import os
import pickle
import signal
import struct
import sys
import types

# -- The item encoding (ENCODING.md) ----------------------------------------------------------

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_MAX_DEPTH = 512


def encode(value):
    """One item for ``value``: exact basic types natively, anything else pickled."""
    out = bytearray()
    _write(value, out, 0)
    return bytes(out)


def _write(value, out, depth):
    if depth >= _MAX_DEPTH:
        raise ValueError("value nested more than 512 levels deep; flatten it or pass it pickled")
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        if -(1 << 63) <= value < (1 << 63):
            out += b"i"
            out += _I64.pack(value)
        else:
            text = hex(value).encode("ascii")
            out += b"I"
            out += _U64.pack(len(text))
            out += text
    elif kind is float:
        out += b"f"
        out += _F64.pack(value)
    elif kind is str:
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates have no UTF-8 form
            _write_pickled(value, out)
            return
        out += b"s"
        out += _U64.pack(len(data))
        out += data
    elif kind is bytes:
        out += b"b"
        out += _U64.pack(len(value))
        out += value
    elif kind is list or kind is tuple:
        # A snapshot: pickling an element runs Python code that may change the list.
        items = tuple(value)
        out += b"l" if kind is list else b"t"
        out += _U64.pack(len(items))
        for item in items:
            _write(item, out, depth + 1)
    elif kind is dict:
        items = tuple(value.items())
        out += b"d"
        out += _U64.pack(len(items))
        for key, item in items:
            _write(key, out, depth + 1)
            _write(item, out, depth + 1)
    else:
        _write_pickled(value, out)


def _write_pickled(value, out):
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise TypeError(f"cannot send {type(value).__name__!r} object to the host: pickle refused it ({error})") from error
    out += b"p"
    out += _U64.pack(len(data))
    out += data


class CorruptItem(ValueError):
    pass


def decode(data):
    """The value of one whole item; bytes left over make it corrupt."""
    view = memoryview(data)
    value, offset = _read(view, 0)
    if offset != len(view):
        raise CorruptItem("corrupt item (bytes after the value)")
    return value


def _word(view, offset):
    if offset + 8 > len(view):
        raise CorruptItem("corrupt item (truncated)")
    return _U64.unpack_from(view, offset)[0], offset + 8


def _blob(view, offset):
    size, offset = _word(view, offset)
    if size > len(view) - offset:
        raise CorruptItem("corrupt item (a length runs past the end)")
    return bytes(view[offset:offset + size]), offset + size


def _count(view, offset, minimum):
    count, offset = _word(view, offset)
    if count > (len(view) - offset) // minimum:
        raise CorruptItem("corrupt item (a count runs past the end)")
    return count, offset


def _read(view, offset):
    if offset >= len(view):
        raise CorruptItem("corrupt item (truncated)")
    tag = view[offset]
    offset += 1
    if tag == 0x4E:  # N
        return None, offset
    if tag == 0x54:  # T
        return True, offset
    if tag == 0x46:  # F
        return False, offset
    if tag == 0x69:  # i
        if offset + 8 > len(view):
            raise CorruptItem("corrupt item (truncated)")
        return _I64.unpack_from(view, offset)[0], offset + 8
    if tag == 0x66:  # f
        if offset + 8 > len(view):
            raise CorruptItem("corrupt item (truncated)")
        return _F64.unpack_from(view, offset)[0], offset + 8
    if tag == 0x49:  # I
        text, offset = _blob(view, offset)
        digits = text[3:] if text.startswith(b"-0x") else text[2:] if text.startswith(b"0x") else None
        if not digits or digits.strip(b"0123456789abcdef"):
            raise CorruptItem("corrupt item (an I that is not hex)")
        value = int(digits, 16)
        return (-value if text.startswith(b"-") else value), offset
    if tag == 0x73:  # s
        data, offset = _blob(view, offset)
        return data.decode("utf-8", "replace"), offset
    if tag == 0x62:  # b
        return _blob(view, offset)
    if tag == 0x70:  # p
        data, offset = _blob(view, offset)
        return pickle.loads(data), offset
    if tag == 0x6C or tag == 0x74:  # l, t
        count, offset = _count(view, offset, 1)
        items = []
        for _ in range(count):
            item, offset = _read(view, offset)
            items.append(item)
        return (items if tag == 0x6C else tuple(items)), offset
    if tag == 0x64:  # d
        count, offset = _count(view, offset, 2)
        result = {}
        for _ in range(count):
            key, offset = _read(view, offset)
            result[key], offset = _read(view, offset)
        return result, offset
    if tag == 0x51 or tag == 0x42:  # Q, B
        raise CorruptItem("a subinterp.Queue or SharedBuffer cannot reach a worker process")
    raise CorruptItem(f"corrupt item (unknown tag {tag:#x})")


# -- Talking to the host -------------------------------------------------------------------------

_SOCKET = 3
_INTERRUPTS = 4


def _read_exactly(size):
    chunks = []
    while size:
        chunk = os.read(_SOCKET, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive():
    """The next request, or None when the host closed the socket."""
    header = _read_exactly(8)
    if header is None:
        return None
    data = _read_exactly(_U64.unpack(header)[0])
    if data is None:
        return None
    return decode(data)


def _send(message):
    data = encode(message)
    view = memoryview(_U64.pack(len(data)) + data)
    while view:
        view = view[os.write(_SOCKET, view):]


# -- Interrupts ------------------------------------------------------------------------------------


class CancelledError(BaseException):
    """Raised inside Python when the host cancels the running call or its deadline passes.
    A BaseException, like KeyboardInterrupt, so ``except Exception`` does not swallow it."""


CancelledError.__module__ = "subinterp"

# The request running now (0: none). The handler compares it with the id the host wrote.
_current = 0


def _on_interrupt(signum, frame):
    target = 0
    while True:
        try:
            data = os.read(_INTERRUPTS, 8 * 64)
        except BlockingIOError:
            break
        if not data:
            break
        if len(data) >= 8:
            target = _U64.unpack_from(data, len(data) - len(data) % 8 - 8)[0]
    if target and target == _current:
        raise CancelledError("the call was interrupted by the host (cancelled, or past its deadline)")


# -- What the host needs of Python -------------------------------------------------------------------


def _qualified_name(kind):
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


import importlib as _importlib

_IMPORTLIB = _importlib.__file__.rpartition("/")[0] + "/"


def _internal_file(filename):
    """Frames of this worker and of the import machinery, not the user's code."""
    return (filename.startswith("<subinterp") or filename.startswith("<frozen importlib._bootstrap")
            or filename.startswith(_IMPORTLIB))


def _describe(exc):
    """(type name, message, traceback, refused module or None, frames): as in an interpreter
    worker, without this file's frames and the import machinery's."""
    import re
    import traceback
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
    found = re.search(r"module (\S+) does not support loading in subinterpreters", message)
    if found:
        refused = found.group(1)
    return (_qualified_name(type(exc)), message, formatted, refused, frames)


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


def _stand_in_package(index, count):
    """A ``subinterp`` module with what code run by a pool may use in any worker: the loader's
    ``_resolve``, ``CancelledError``, ``worker_index()``, ``worker_count()``. Queues and shared
    buffers live in the host process and do not reach a worker process."""
    package = types.ModuleType("subinterp", "The parts of subinterp available in a pool's worker process.")
    package.CancelledError = CancelledError
    package.worker_index = lambda: index
    package.worker_count = lambda: count
    package._resolve = _resolve
    sys.modules["subinterp"] = package


def _start(options):
    _stand_in_package(options["index"], options["count"])
    sys.argv = [""]
    sys.path[0:0] = options["path"]
    if options["line_buffered"]:
        # A line goes out in one write, so lines of different workers do not interleave.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)
            except Exception:
                pass
    main = sys.modules["__main__"].__dict__
    if options["setup"] is not None:
        exec(compile(options["setup"], "<setup>", "exec"), main)
    if options["loader"] is not None:
        exec(compile(options["loader"], "<subinterp loader>", "exec"), main)


_functions = {}


def _function(name):
    function = _functions.get(name)
    if function is None:
        function = _resolve(name)
        if len(_functions) < 1024:
            _functions[name] = function
    return function


def _run(request_id, call):
    """(True, value) or (False, error); the interrupt handler may raise only inside ``call``."""
    global _current
    try:
        _current = request_id
        try:
            return True, call()
        finally:
            _current = 0
    except BaseException as error:
        return False, _describe(error)


def _answer(request_id, outcome):
    try:
        _send((request_id, *outcome))
    except (TypeError, ValueError, RecursionError) as error:  # a result that cannot be sent
        _send((request_id, False, _describe(error)))


def main():
    import time
    os.set_blocking(_INTERRUPTS, False)
    signal.signal(signal.SIGUSR1, _on_interrupt)
    while True:
        request = _receive()
        if request is None:
            return
        request_id, kind = request[0], request[1]
        if kind == "start":
            _answer(request_id, _run(request_id, lambda: _start(request[2])))
        elif kind == "call":
            _, _, name, args, kwargs = request
            _answer(request_id, _run(request_id, lambda: _function(name)(*args, **kwargs)))
        elif kind == "chunk":
            _, _, name, inputs, star = request
            started = time.perf_counter()
            for value in inputs:
                if star and type(value) in (list, tuple):
                    outcome = _run(request_id, lambda: _function(name)(*value))
                else:
                    outcome = _run(request_id, lambda: _function(name)(value))
                _answer(request_id, outcome)
                if not outcome[0] and outcome[1][0] == "subinterp.CancelledError":
                    break
            _send((request_id, "done", time.perf_counter() - started))
        else:
            _send((request_id, False, ("ValueError", f"unknown request {kind!r}", "", None, [])))


if __name__ == "__main__":
    main()
