"""InterpreterPoolExecutor: a concurrent.futures executor whose workers are isolated
sub-interpreters of this process, each with its own GIL.

How a call travels: ``submit`` sends ``(kind, function, args, kwargs)`` to the host's pool as one
item (basic values copied natively, other objects pickled, queues and shared buffers as
themselves). A worker runs it (``_worker._run``) and the host posts the outcome to this pool's
completion box. A thread blocked in ``Future.result()`` for that call takes it directly; any
other outcome goes to the executor's result thread, which completes the Future (and so runs
callbacks, wakes ``wait`` and ``as_completed``). Nothing polls: both wait in C with the GIL
released.
"""

import concurrent.futures as _futures
import itertools
import os
import sys
import threading
import time
import weakref
from concurrent.futures import _base

from . import _core

__all__ = ["InterpreterPoolExecutor", "BrokenInterpreterPool", "CallTimeoutError"]

# Outcome statuses, as the host posts them (executor.h); -1: the outcome could not be unpickled here.
_OK, _CANCELLED, _TIMEOUT, _BROKEN, _ERROR, _UNREADABLE = 0, 1, 2, 3, 4, -1
_CALL, _CHUNK = 0, 1
# A map chunk should keep a worker busy about this long: long enough that the per-chunk cost
# vanishes, short enough that the last chunks still spread over the workers.
_CHUNK_SECONDS = 0.002


class BrokenInterpreterPool(_futures.BrokenExecutor):
    """The pool cannot run calls: a worker's initializer raised, or a worker could not start."""


class CallTimeoutError(TimeoutError):
    """A call ran past its timeout; its Python code was interrupted."""


class _RemoteTraceback(Exception):
    """The worker's traceback, set as ``__cause__`` of the exception a call raised."""

    def __init__(self, tb):
        self.tb = tb

    def __str__(self):
        return self.tb


def _rebuild(error):
    """The exception to raise here for ``error`` = (exception or None, traceback, type, message)."""
    exception, tb, name, message = error
    if exception is None:
        exception = RuntimeError(
            f"the call raised {name}: {message} (that exception could not be sent back: "
            "it does not survive pickling)")
    exception.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')
    return exception


# --------------------------------------------------------------------------- functions

_references = {}
_REFERENCE_CACHE_LIMIT = 1024


def _reference(fn):
    """How ``fn`` travels: ``(module, qualified name)`` for a function the workers can import by
    name, else its pickle. Raises CannotSendError (a TypeError and pickle.PicklingError)."""
    try:
        return _references[fn]
    except (KeyError, TypeError):
        pass
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__!r} object is not callable")
    kind = type(fn).__name__
    reference = None
    if kind in ("function", "builtin_function_or_method"):
        module = getattr(fn, "__module__", None)
        name = getattr(fn, "__qualname__", None)
        if module and name and "<" not in name and _lookup(module, name) is fn:
            reference = (module, name)
    if reference is None:
        # A partial, a bound method, a callable object: pickled each time (its state may change).
        import pickle
        try:
            return pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            from . import _cannot_send_type
            raise _cannot_send_type()(
                f"cannot send {fn!r} to the worker interpreters: functions travel by reference, "
                f"and this one cannot be found by its name ({error}); define it at the top level "
                "of a module, or of a script run as a file") from error
    if len(_references) >= _REFERENCE_CACHE_LIMIT:
        _references.clear()
    _references[fn] = reference
    return reference


def _sending_error(error):
    """A call's arguments could not be sent: see ``subinterp._as_cannot_send``."""
    from . import _as_cannot_send
    return _as_cannot_send(error)


def _lookup(module, name):
    target = sys.modules.get(module)
    for part in name.split("."):
        target = getattr(target, part, None)
    return target


# --------------------------------------------------------------------------- futures

class _Future(_futures.Future):
    """A concurrent.futures.Future for one call. Beyond the standard one: ``cancel()`` also
    stops a call that is running (its code gets ``subinterp.CancelledError``), and ``result()``
    takes the outcome straight from the worker when it is the one waiting."""

    _raw = False  # a map chunk's future: its result is the worker's outcome as it came

    def __init__(self, shared):
        super().__init__()
        self._shared = shared
        self._job = 0

    def result(self, timeout=None):
        if self._state == _base.PENDING and self._job:
            self._shared.wait(self, timeout)
        return super().result(timeout)

    def exception(self, timeout=None):
        if self._state == _base.PENDING and self._job:
            self._shared.wait(self, timeout)
        return super().exception(timeout)

    def running(self):
        if self._state == _base.PENDING and self._job:
            return self._shared.handle.state(self._job) == 1
        return super().running()

    def cancel(self):
        """Cancels the call: a queued one never runs; a running one is interrupted (it gets
        ``subinterp.CancelledError``, unlike with the standard executors, which cannot stop a
        running call). False if it already finished."""
        with self._condition:
            if self._state == _base.FINISHED:
                return False
            if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
                return True
        if self._job and self._shared.handle.cancel(self._job, False) == 0:
            return False  # it finished; its outcome is on its way
        return self._set_cancelled()

    def _set_cancelled(self):
        with self._condition:
            if self._state == _base.FINISHED:
                return False
            if self._state == _base.CANCELLED_AND_NOTIFIED:
                return True
            self._state = _base.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()
        return True

    def _complete(self, status, value):
        try:
            if status == _OK:
                if self._raw:
                    self.set_result(value)
                elif value[0] is True:
                    self.set_result(value[1])
                else:
                    self.set_exception(_rebuild(value[1]))
            elif status == _CANCELLED:
                self._set_cancelled()
            elif status == _TIMEOUT:
                self.set_exception(CallTimeoutError(value))
            elif status == _BROKEN:
                self.set_exception(BrokenInterpreterPool(value.partition("\n")[0]))
            elif status == _ERROR:
                self.set_exception(BrokenInterpreterPool(value))
            else:  # _UNREADABLE: the outcome arrived but could not be unpickled here
                self.set_exception(value)
        except _base.InvalidStateError:
            pass  # cancelled here while the outcome was on its way


# --------------------------------------------------------------------------- shared state

_live = set()  # executors not yet closed, for the interpreter's exit
_global_shutdown = False


class _Shared:
    """What the executor, its futures, its maps and its result thread share. Holds no reference
    to the executor, so an executor nobody holds is collected (and then shuts down)."""

    def __init__(self, handle, workers, timeout):
        self.handle = handle
        self.workers = workers
        self.timeout = timeout
        self.lock = threading.Lock()
        self.outstanding = 0  # calls submitted and not yet completed here
        self.shutdown = False
        self.closed = False
        self.broken = None
        self.thread = None
        self.maps = weakref.WeakSet()

    def submit(self, target, payload, timeout):
        """Sends one call; the caller holds ``lock`` and has checked the pool is open."""
        target._job = self.handle.submit(payload, target, timeout)
        self.outstanding += 1
        if self.thread is None:
            self.thread = threading.Thread(
                target=_result_loop, args=(self,), name="InterpreterPoolExecutor-results")
            self.thread.start()

    def wait(self, future, timeout):
        """Waits for ``future``'s outcome in C and completes it here, if no other thread has it."""
        outcome = self.handle.take(future._job, timeout)
        if outcome is None:
            return  # the result thread completes it; Future.result waits for that
        if outcome is False:
            if future._state == _base.PENDING:
                raise _futures.TimeoutError()
            return
        self.complete(future, *outcome)

    def complete(self, target, status, value):
        if status == _BROKEN:
            self.on_broken(value)  # submit() fails from now on
        target._complete(status, value)
        with self.lock:
            self.outstanding -= 1
            idle = self.outstanding == 0 and self.shutdown
        if idle:
            self.handle.wake()  # the result thread closes the pool

    def on_broken(self, message):
        """The pool could not start: logged once, by whichever thread learns it first, as the
        standard executors log an initializer's exception."""
        with self.lock:
            first = self.broken is None
            if first:
                self.broken = message.partition("\n")[0]
        if first:
            import logging
            logging.getLogger("concurrent.futures").critical("Exception in initializer:\n%s", message)

    def start_shutdown(self, cancel_futures, wait):
        """No more submissions. With ``cancel_futures``, calls not yet started are dropped.
        Returns the result thread, which closes the pool once every call has completed (or None:
        then the pool is closed here)."""
        with self.lock:
            self.shutdown = True
            thread = self.thread
            maps = list(self.maps)
        if cancel_futures:
            for run in maps:
                run.stop()
            # The oldest calls, one per worker, are running or go to a free worker at once: they
            # count as started, as ProcessPoolExecutor counts the calls in its call queue.
            pending = sorted(self.handle.pending(), key=lambda entry: entry[0])
            for job, target in pending[self.workers:]:
                if self.handle.cancel(job, True):
                    target._set_cancelled()
        if thread is None:
            self.close(wait)
        else:
            self.handle.wake()
        return thread

    def close(self, wait):
        if not self.closed:
            self.closed = True
            self.handle.close(wait)
            _live.discard(self)


def _result_loop(shared):
    handle = shared.handle
    while True:
        batch = handle.wait_any()
        if batch is None:
            break
        for target, status, value in batch:
            if target is None:
                shared.on_broken(value)
            else:
                shared.complete(target, status, value)
        with shared.lock:
            done = shared.shutdown and shared.outstanding == 0
        if done:
            shared.close(wait=True)
            break


def _python_exit():
    # Like the standard executors: at exit, calls already submitted still run to completion.
    global _global_shutdown
    _global_shutdown = True
    for shared in list(_live):
        thread = shared.start_shutdown(cancel_futures=False, wait=True)
        if thread is not None and thread is not threading.current_thread():
            thread.join()


threading._register_atexit(_python_exit)


# --------------------------------------------------------------------------- map

class _MapRun:
    """One ``map``: its inputs, sent as chunks of calls as earlier chunks come back. Chunks grow
    while they take less than about 2 ms of a worker's time and shrink when they take longer;
    at most two chunks per worker are queued or running."""

    def __init__(self, shared, reference, items, chunksize, timeout):
        self.shared = shared
        self.reference = reference
        self.items = items
        self.total = len(items)
        self.fixed = chunksize
        self.size = 1
        self.timeout = timeout
        self.sent = 0
        self.in_flight = 0
        self.limit = 2 * shared.workers
        self.chunks = []
        self.stopped = False
        self.fed = threading.Condition(threading.Lock())

    def feed(self):
        shared = self.shared
        with self.fed, shared.lock:
            while (not self.stopped and self.sent < self.total and self.in_flight < self.limit
                   and not shared.closed):
                size = self.fixed or self.size
                chunk = self.items[self.sent:self.sent + size]
                future = _Future(shared)
                future._raw = True
                try:
                    shared.submit(future, (_CHUNK, self.reference, chunk, None), self.timeout)
                except Exception as error:
                    # This chunk cannot be sent: the iterator raises it in its place.
                    future.set_exception(_sending_error(error))
                    self.chunks.append(future)
                    self.stopped = True
                    break
                future._count = len(chunk)
                self.sent += len(chunk)
                self.in_flight += 1
                self.chunks.append(future)
                future.add_done_callback(self._chunk_done)
            if self.sent >= self.total:
                self.items = ()
            self.fed.notify_all()

    def _chunk_done(self, future):
        with self.fed:
            self.in_flight -= 1
            if self.fixed is None and not future.cancelled() and future._exception is None:
                outcome = future._result
                if len(outcome) == 3:
                    self._adapt(future._count, outcome[1])
        self.feed()

    def _adapt(self, count, seconds):
        per_call = seconds / count if count else 0
        wanted = self.size * 4 if per_call <= 0 else int(_CHUNK_SECONDS / per_call)
        # Grow at most 4x a step; keep enough chunks for the last ones to spread over the workers.
        remaining = self.total - self.sent
        wanted = min(wanted, self.size * 4, max(1, remaining // (2 * self.shared.workers)))
        self.size = max(1, wanted)

    def stop(self):
        """No more chunks (shutdown with cancel_futures): queued ones are dropped, running ones
        finish."""
        with self.fed:
            self.stopped = True
            pending = [f for f in self.chunks if f is not None and not f.done()]
            self.fed.notify_all()
        for future in pending:
            if future._job and self.shared.handle.cancel(future._job, True):
                future._set_cancelled()

    def cancel(self):
        """The caller stopped iterating: cancel everything not yet done, running chunks too."""
        with self.fed:
            self.stopped = True
            pending = [f for f in self.chunks if f is not None and not f.done()]
        for future in pending:
            future.cancel()

    def _next_chunk(self, index):
        with self.fed:
            while index >= len(self.chunks):
                if self.sent >= self.total:
                    return None
                if self.stopped or self.shared.closed:
                    raise _futures.CancelledError()
                self.fed.wait()
            future = self.chunks[index]
            self.chunks[index] = None  # the iterator keeps no result it has yielded
            return future

    def results(self, end_time):
        try:
            index = 0
            while True:
                future = self._next_chunk(index)
                if future is None:
                    return
                index += 1
                try:
                    if end_time is None:
                        outcome = future.result()
                    else:
                        outcome = future.result(end_time - time.monotonic())
                except BaseException:
                    future.cancel()  # late (or the wait was interrupted): stop it too
                    raise
                del future
                if outcome[0] is False:  # the whole chunk failed before any call ran
                    raise _rebuild(outcome[1])
                results, _, error = outcome
                del outcome
                results.reverse()
                while results:
                    yield results.pop()
                if error is not None:
                    raise _rebuild(error)
        finally:
            self.cancel()


# --------------------------------------------------------------------------- the executor

class InterpreterPoolExecutor(_futures.Executor):
    """A ``concurrent.futures.Executor`` whose workers are isolated sub-interpreters of this
    process, each with its own GIL, so pure-Python work runs in parallel without processes.

    ``max_workers``: how many interpreters (default: the CPU count). ``initializer(*initargs)``
    runs in each worker as it starts; if it raises, the pool is broken and every call fails
    with ``BrokenInterpreterPool``. ``max_tasks_per_worker``: after that many calls (a ``map``
    chunk counts as one) a worker is replaced by a fresh interpreter. ``timeout``: the default
    deadline of each call, in seconds from when it starts; a call that passes it is interrupted
    and its future raises ``CallTimeoutError``.

    Functions travel by reference (module and name), other callables by pickle. Arguments and
    results: basic values are copied, other objects pickled, ``subinterp.Queue`` and
    ``SharedBuffer`` arrive as themselves. The main script's functions work under
    ``if __name__ == "__main__":``, as with ``ProcessPoolExecutor`` and spawn: a worker runs the
    script as ``__mp_main__`` when it first needs something from it.
    """

    def __init__(self, max_workers=None, initializer=None, initargs=(), *,
                 max_tasks_per_worker=None, timeout=None):
        if max_workers is None:
            count = getattr(os, "process_cpu_count", os.cpu_count)()
            max_workers = count or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_worker is not None:
            if not isinstance(max_tasks_per_worker, int):
                raise TypeError("max_tasks_per_worker must be an integer")
            if max_tasks_per_worker <= 0:
                raise ValueError("max_tasks_per_worker must be >= 1")
        self._timeout = _check_timeout(timeout)
        self._max_workers = max_workers
        handle = _core._Pool(max_workers, _setup_code(initializer, initargs), max_tasks_per_worker or 0)
        self._shared = _Shared(handle, max_workers, self._timeout)
        _live.add(self._shared)
        # Dropped without shutdown(): let the queued calls finish, then end the workers.
        weakref.finalize(self, self._shared.start_shutdown, False, False).atexit = False

    def submit(self, fn, /, *args, **kwargs):
        return self._submit(self._timeout, fn, args, kwargs)

    def submit_with_timeout(self, timeout, fn, /, *args, **kwargs):
        """Like ``submit``, with this call's own ``timeout`` (seconds from when it starts, or None)."""
        return self._submit(_check_timeout(timeout), fn, args, kwargs)

    submit.__doc__ = _futures.Executor.submit.__doc__

    def _submit(self, timeout, fn, args, kwargs):
        shared = self._shared
        with shared.lock:
            self._check_open()
            future = _Future(shared)
            try:
                payload = (_CALL, _reference(fn), args, kwargs or None)
                shared.submit(future, payload, timeout)
            except Exception as error:
                # As with ProcessPoolExecutor, what cannot be sent is the call's error.
                future.set_exception(_sending_error(error))
            return future

    def _check_open(self):
        shared = self._shared
        if shared.broken is not None:
            raise BrokenInterpreterPool(shared.broken)
        if shared.shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def map(self, fn, *iterables, timeout=None, chunksize=None):
        """Like ``Executor.map``. ``chunksize``: calls per task; by default it adapts, starting at
        one call and growing while tasks finish within about 2 ms (one call per task when the
        executor has a per-call ``timeout``). If ``timeout`` passes before a result is ready,
        ``TimeoutError`` is raised and the calls not yet done are cancelled, running ones too."""
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize is None and self._timeout is not None:
            chunksize = 1
        end_time = None if timeout is None else timeout + time.monotonic()
        shared = self._shared
        with shared.lock:
            self._check_open()
        items = list(zip(*iterables))
        try:
            reference = _reference(fn)
        except Exception as error:
            failed = _futures.Future()
            failed.set_exception(error)
            reference = None
        if reference is None:
            return _failed_map(failed) if items else iter(())
        run = _MapRun(shared, reference, items, chunksize, self._timeout)
        shared.maps.add(run)
        run.feed()
        return run.results(end_time)

    def shutdown(self, wait=True, *, cancel_futures=False):
        thread = self._shared.start_shutdown(cancel_futures, wait)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    shutdown.__doc__ = _futures.Executor.shutdown.__doc__

    @property
    def _broken(self):
        return self._shared.broken or False


def _failed_map(future):
    yield future.result()


def _check_timeout(timeout):
    if timeout is None:
        return None
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds, or None")
    return timeout


def _setup_code(initializer, initargs):
    """The statements each worker runs as it starts (see ``_worker._initialize``)."""
    main = sys.modules.get("__main__")
    main_name = getattr(getattr(main, "__spec__", None), "name", None)
    main_path = None
    if main_name is None and getattr(main, "__file__", None):
        main_path = os.path.abspath(main.__file__)
    initializing = None
    if initializer is not None:
        import pickle
        try:
            initializing = pickle.dumps((initializer, tuple(initargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            from . import _cannot_send_type
            raise _cannot_send_type()(
                f"cannot send the initializer {initializer!r} and its initargs to the worker "
                f"interpreters: {error}") from error
    config = {"path": list(sys.path), "argv": list(sys.argv), "main_name": main_name,
              "main_path": main_path, "initializer": initializing}
    return f"import subinterp._worker\nsubinterp._worker._initialize({config!r})\n"
