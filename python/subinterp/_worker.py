"""The worker side of InterpreterPoolExecutor, imported in each worker interpreter.

A call arrives as ``(kind, function, args, kwargs)``: ``function`` is the pickled callable (by
reference for functions), ``kind`` is ``CALL`` (one call) or ``CHUNK`` (``args`` is a list of
argument tuples, from ``map``). What ``_run`` returns goes back to the caller:

- a call: ``(True, value)`` or ``(False, error)``;
- a chunk: ``(results, seconds, error or None)``, the results before any failure;
- ``error``: ``(exception or None, traceback text, type name, message)``; the exception is None
  when it would not survive pickling, and the caller then raises a stand-in.
"""

import sys

from . import _core

CALL = 0
CHUNK = 1

# (module, qualified name) -> function: a function is looked up once per worker, not per call.
_functions = {}
_FUNCTION_CACHE_LIMIT = 1024


def _run(call):
    kind, reference, args, kwargs = call
    try:
        function = _functions.get(reference)
        if function is None:
            function = _load_function(reference)
        if kind == CALL:
            return (True, function(*args, **kwargs) if kwargs else function(*args))
    except BaseException as error:
        return (False, _describe(error, "running the call"))
    from time import perf_counter
    results = []
    start = perf_counter()
    try:
        for arguments in args:
            results.append(function(*arguments))
    except BaseException as error:
        return (results, perf_counter() - start, _describe(error, "running the call"))
    return (results, perf_counter() - start, None)


def _failure(error, stage):
    """The outcome that reports ``error``, raised while ``stage`` (called by the host)."""
    from . import _as_cannot_send
    return (False, _describe(_as_cannot_send(error), stage))


def _load_function(reference):
    try:
        if type(reference) is tuple:  # (module, qualified name): a function found by its name
            module, name = reference
            function = sys.modules.get(module)
            if function is None:
                __import__(module)
                function = sys.modules[module]
            for part in name.split("."):
                function = getattr(function, part)
        else:
            import pickle
            function = pickle.loads(reference)
    except (AttributeError, ImportError) as error:
        hint = ("the worker interpreters could not find the function to call "
                f"({error}). Functions are sent by reference: define them at the top level of a "
                "module, or of a script run as a file; not in `python -c`, the interactive "
                "interpreter, or inside another function")
        raise type(error)(hint) from error
    if type(reference) is tuple:  # found by name; a pickled callable carries state: not kept
        if len(_functions) >= _FUNCTION_CACHE_LIMIT:
            _functions.clear()
        _functions[reference] = function
    return function


def _describe(error, stage):
    """``(exception or None, traceback, type name, message)`` for ``error``."""
    import traceback
    try:
        summary = traceback.TracebackException.from_exception(error)
        # This module's frames are the executor's plumbing, not the caller's code.
        here = __spec__.origin if __spec__ is not None else __file__
        seen, part = set(), summary
        while part is not None and id(part) not in seen:
            seen.add(id(part))
            part.stack = traceback.StackSummary.from_list(
                [frame for frame in part.stack if frame.filename != here])
            part = part.__cause__ or part.__context__
        text = "".join(summary.format())
    except BaseException:
        text = f"{type(error).__name__} (no traceback)\n"
    try:
        message = str(error)
    except BaseException:
        message = "<unprintable exception>"
    name = type(error).__qualname__
    if type(error).__module__ not in ("builtins", "__main__"):
        name = f"{type(error).__module__}.{name}"
    sendable = error if _survives_pickling(error) else None
    if sendable is not None and stage != "running the call":
        try:
            error.add_note(f"(while {stage})")
        except BaseException:
            pass
    return (sendable, text, name, message)


def _survives_pickling(error):
    import pickle
    try:
        pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
        return True
    except BaseException:
        return False


# --------------------------------------------------------------------------- starting a worker

def _initialize(config):
    """Run once in each new worker, as the pool's setup: the caller's sys.path and argv, its main
    module on demand, then the initializer. If the initializer raises, the pool does not start."""
    sys.path[:] = config["path"]
    sys.argv = list(config["argv"])
    _main_on_demand(config["main_name"], config["main_path"])
    if config["initializer"] is not None:
        import pickle
        initializer, initargs = pickle.loads(config["initializer"])
        initializer(*initargs)


def _main_on_demand(name, path):
    """Lets the caller's ``__main__`` functions and classes be found here, the way
    ``multiprocessing``'s spawn does: the main script (or ``-m`` module) runs as ``__mp_main__``,
    so its ``if __name__ == "__main__":`` block does not. It runs when something from
    ``__main__`` is first needed, not before: most pools never need it, and starting stays fast."""
    if name is None and path is None:
        return
    main = sys.modules["__main__"]

    def __getattr__(attribute):
        loaded = _load_main(name, path)
        if loaded is None:
            raise AttributeError(f"module '__main__' has no attribute '{attribute}'")
        return getattr(loaded, attribute)

    main.__getattr__ = __getattr__


_main_loaded = None
_main_error = None


def _load_main(name, path):
    global _main_loaded, _main_error
    if _main_loaded is not None:
        return _main_loaded
    if _main_error is not None:
        raise _main_error
    import runpy
    import types
    try:
        if name is not None:
            if name == "__main__" or name.endswith(".__main__"):
                return None  # a package's __main__ is not run again, as with spawn
            content = runpy.run_module(name, run_name="__mp_main__", alter_sys=True)
        else:
            content = runpy.run_path(path, run_name="__mp_main__")
    except BaseException as error:
        what = f"module {name}" if name is not None else f"script {path}"
        _main_error = ImportError(
            f"the worker interpreter could not run the main {what} as __mp_main__ to find "
            f"what the call needs from __main__: {type(error).__name__}: {error}")
        _main_error.__cause__ = error
        raise _main_error from error
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    _main_loaded = module
    return module


_core._executor_run = _run
_core._executor_failure = _failure
