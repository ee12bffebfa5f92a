"""Parallel Python on CPython sub-interpreters, each with its own GIL, in one process.

The same module everywhere: in a plain ``python`` process (installed with pip) and inside the
interpreters that ``subinterp run``/``serve`` and pools start.

- ``InterpreterPoolExecutor``: a ``concurrent.futures`` executor whose workers are isolated
  interpreters of this process; a call can be interrupted while it runs (``Future.cancel()``,
  per-call timeouts).
- ``Queue``, ``queue(name)``, ``SharedBuffer``: channels between interpreters, passable to pool
  calls as arguments.
- ``worker_index()``, ``worker_count()``, ``CancelledError``.
"""

from . import _core
from ._core import (
    Queue,
    SharedBuffer,
    _buffer_from_id,
    _queue_from_id,
    _write,
    create_queue,
    queue,
    worker_count,
    worker_index,
)

__all__ = [
    "BrokenInterpreterPool",
    "CallTimeoutError",
    "CancelledError",
    "CannotSendError",
    "InterpreterPoolExecutor",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "SharedBuffer",
    "create_queue",
    "queue",
    "worker_count",
    "worker_index",
]


class CancelledError(BaseException):
    """Raised inside Python when the host cancels the running call or its deadline passes.
    A BaseException, like KeyboardInterrupt, so ``except Exception`` does not swallow it."""


def _cannot_send_type():
    """What the executor raises for a call it cannot send: a TypeError (as channels raise) that
    is also a pickle.PicklingError (as ProcessPoolExecutor raises), so code written for either
    catches it. Made on first use: importing pickle in every interpreter's start would slow it."""
    global _CannotSend
    if _CannotSend is None:
        import pickle

        class CannotSendError(TypeError, pickle.PicklingError):
            """An object that cannot go to another interpreter: not a basic type, and pickle
            refused it."""

        CannotSendError.__module__ = __name__
        CannotSendError.__qualname__ = "CannotSendError"  # pickled by name, as subinterp.CannotSendError
        _CannotSend = CannotSendError
    return _CannotSend


_CannotSend = None


def _as_cannot_send(error):
    """The channels' TypeError for an object that cannot be sent, as CannotSendError (for the
    executor, where ProcessPoolExecutor's users expect a pickle.PicklingError); other errors as
    they are."""
    if type(error) is TypeError and str(error).startswith("cannot send"):
        converted = _cannot_send_type()(str(error))
        converted.__cause__ = error.__cause__
        return converted
    return error


def _qualified_name(t):
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _pickle_dumps(obj):
    import pickle
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise TypeError(
            f"cannot send a '{_qualified_name(type(obj))}' object to another interpreter: "
            f"it is not a basic type and pickle refused it ({error})") from error


def _pickle_loads(data):
    import pickle
    return pickle.loads(data)


# The native core raises and pickles through these.
_core.CancelledError = CancelledError
_core._pickle_dumps = _pickle_dumps
_core._pickle_loads = _pickle_loads

_EXECUTOR_NAMES = frozenset({"InterpreterPoolExecutor", "BrokenInterpreterPool", "CallTimeoutError"})


def __getattr__(name):
    # The executor is imported on first use: concurrent.futures and threading would slow the
    # start of every interpreter, and most never make a pool.
    if name in _EXECUTOR_NAMES:
        from . import _executor
        return getattr(_executor, name)
    if name == "CannotSendError":
        return _cannot_send_type()
    return getattr(_core, name)  # QueueEmpty, QueueFull (made on first use), or AttributeError


def __dir__():
    return sorted(set(globals()) | set(__all__))
