import Foundation

/// The Python side of an ASGI worker, run once in its interpreter (the interpreter's setup):
/// it loads the app, and `_asgi_run` runs the worker's asyncio loop until the host stops it.
///
/// The loop's selector takes the mailbox's events before and after every poll
/// (`_subinterp_asgi.before_select` / `after_select`); the mailbox's eventfd sits in the
/// selector only to wake a sleeping loop. Requests themselves are handled in C
/// (`asgi_module.c`); lifespan is here.
enum ASGIAdapter {
    /// Values of the control reports `_subinterp_asgi.report` sends (asgi.h).
    enum Report: Int32 {
        case started = 1, startupFailed, stopped, shutdownFailed, info, warning, error
    }

    /// The app's loader. The same rules as the WSGI server's (`MODULE:APP`, `MODULE:factory()`).
    static func loader(app: String) -> String {
        #"""
import inspect as _inspect

def _app_interface(app):
    """'asgi' for an async callable (a coroutine function, or an object whose __call__ is one),
    as uvicorn decides; 'wsgi' otherwise."""
    if _inspect.isclass(app):
        return "wsgi"
    if _inspect.iscoroutinefunction(app) or _inspect.iscoroutinefunction(getattr(app, "__call__", None)):
        return "asgi"
    return "wsgi"
"""# + "\n" + AppLoader.python(app: app, as: "_app")
    }

    static func setup(app: String, rootPath: String, lifespan: ASGILifespanMode) -> String {
        loader(app: app) + "\n" + #"""
import asyncio as _asyncio, collections.abc as _abc, selectors as _selectors, sys as _sys
import subinterp as _subinterp
import _subinterp_asgi as _asgi

_abc.Coroutine.register(_asgi.Awaitable)
_ASGI_ROOT_PATH = \#(AppLoader.pythonString(rootPath))
_ASGI_LIFESPAN = \#(AppLoader.pythonString(lifespan.rawValue))
_REPORT_STARTED, _REPORT_STARTUP_FAILED, _REPORT_STOPPED, _REPORT_SHUTDOWN_FAILED = 1, 2, 3, 4
_REPORT_INFO, _REPORT_WARNING, _REPORT_ERROR = 5, 6, 7
_CONTROL_SHUTDOWN = 9

def _asgi_format(error):
    """The traceback of an app's exception, without this adapter's frames."""
    import traceback
    try:
        summary = traceback.TracebackException.from_exception(error)
        summary.stack = traceback.StackSummary.from_list(
            [frame for frame in summary.stack if frame.filename not in ("<subinterp asgi>", "<subinterp bootstrap>")])
        return "".join(summary.format()).rstrip("\n")
    except Exception:
        return repr(error)

async def _asgi_await(awaitable):
    return await awaitable

class _MailboxSelector(_selectors.DefaultSelector):
    """The loop's selector: takes the host's events before and after every poll. The mailbox's
    eventfd is registered with (None, None) as its data, which asyncio's loop skips.

    While the mailbox (and the loop's own self-pipe, which `_asgi.wake` stands in for) is all
    it watches, as for an app whose I/O is all the server's, it polls nothing: `_asgi.wait`
    sleeps on the mailbox's condition instead. Once the app registers a file descriptor of
    its own (a database connection), it polls them with the mailbox's eventfd among them."""

    def __init__(self, fd):
        super().__init__()
        super().register(fd, _selectors.EVENT_READ, (None, None))
        self._host_fds = {fd}

    def select(self, timeout=None):
        if self._fd_to_key.keys() <= self._host_fds:
            _asgi.wait(timeout)
            return []
        if _asgi.before_select():
            timeout = 0
        try:
            return super().select(timeout)
        finally:
            _asgi.after_select()

class _Lifespan:
    """The lifespan protocol for this worker's loop, with uvicorn's rules for 'auto' and 'on'."""

    def __init__(self, app, mode):
        self.app = app
        self.mode = mode
        self.state = {}
        self.queue = _asyncio.Queue()
        self.started = _asyncio.Event()
        self.ended = _asyncio.Event()
        self.error = None
        self.startup_failed = None
        self.shutdown_failed = None
        self.task = None

    async def main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except _asyncio.CancelledError:
            # Only a loop that is going away cancels lifespan: not a sign the app lacks it.
            raise
        except BaseException as error:
            self.error = error
            if self.startup_failed is not None or self.shutdown_failed is not None:
                return
            if self.mode == "auto":
                _asgi.report(_REPORT_INFO, "ASGI 'lifespan' protocol appears unsupported.")
            else:
                _asgi.report(_REPORT_ERROR, "Exception in 'lifespan' protocol\n" + _asgi_format(error))
        finally:
            self.started.set()
            self.ended.set()

    async def receive(self):
        return await self.queue.get()

    async def send(self, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self.started.is_set() or self.ended.is_set():
                raise RuntimeError(f"unexpected ASGI message {kind!r}: startup has already ended")
            if kind == "lifespan.startup.failed":
                self.startup_failed = str(message.get("message") or "")
            self.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not self.started.is_set() or self.ended.is_set():
                raise RuntimeError(f"unexpected ASGI message {kind!r}: shutdown has not begun")
            if kind == "lifespan.shutdown.failed":
                self.shutdown_failed = str(message.get("message") or "")
            self.ended.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan protocol")

    async def startup(self):
        """(ok, message)."""
        self.task = _asyncio.get_running_loop().create_task(self.main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.startup_failed is not None:
            return False, self.startup_failed or "the app sent lifespan.startup.failed"
        if self.error is not None and self.mode == "on":
            return False, f"the app raised in lifespan startup: {type(self.error).__name__}: {self.error}"
        return True, None

    async def shutdown(self):
        """(ok, message)."""
        if self.error is not None:
            return True, None
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.ended.wait()
        if self.shutdown_failed is not None:
            return False, self.shutdown_failed or "the app sent lifespan.shutdown.failed"
        if self.error is not None and self.mode == "on":
            return False, f"the app raised in lifespan shutdown: {type(self.error).__name__}: {self.error}"
        return True, None

async def _asgi_main(stop):
    lifespan = None if _ASGI_LIFESPAN == "off" else _Lifespan(_app, _ASGI_LIFESPAN)
    if lifespan is not None:
        ok, message = await lifespan.startup()
        if not ok:
            _asgi.report(_REPORT_STARTUP_FAILED, message)
            return
    _asgi.serve(lifespan.state if lifespan is not None else {})
    _asgi.report(_REPORT_STARTED, None)
    await stop
    # The host let the requests still running have its grace period; end them now.
    tasks = _asgi.cancel_all()
    if tasks:
        await _asyncio.wait(tasks, timeout=5)
    if lifespan is not None:
        ok, message = await lifespan.shutdown()
        if not ok:
            _asgi.report(_REPORT_SHUTDOWN_FAILED, message)
            return
    _asgi.report(_REPORT_STOPPED, None)

def _asgi_run():
    """Runs this worker's event loop until the host asks it to stop."""
    loop = None
    stop = None

    def control(kind):
        if kind == _CONTROL_SHUTDOWN and stop is not None and not stop.done():
            stop.set_result(None)

    try:
        selector = _MailboxSelector(_asgi.mailbox_fd())
        loop = _asyncio.SelectorEventLoop(selector)
        # call_soon_threadsafe wakes the loop through the mailbox (however it sleeps), not
        # through its self-pipe, which then never needs polling.
        selector._host_fds.add(loop._ssock.fileno())
        loop._write_to_self = _asgi.wake
    except BaseException as error:
        _asgi.report(_REPORT_STARTUP_FAILED, f"could not start the event loop: {type(error).__name__}: {error}")
        return
    _asyncio.set_event_loop(loop)
    stop = loop.create_future()
    _asgi.attach(loop, _app, _ASGI_ROOT_PATH, control, _asgi_format, _asgi_await, _subinterp.CancelledError)
    main = loop.create_task(_asgi_main(stop))
    try:
        while not main.done():
            try:
                loop.run_until_complete(main)
            except _subinterp.CancelledError:
                # An interrupt meant for code that held the loop arrived as that code ended, in
                # the loop's own code: the loop carries on.
                _asgi.interrupted()
                if main.done():
                    break
                _asgi.report(_REPORT_WARNING, "an interrupt for a task that held the event loop arrived after it ended")
        if not main.cancelled() and main.exception() is not None:
            error = main.exception()
            _asgi.report(_REPORT_ERROR, "the worker's event loop failed\n" + _asgi_format(error))
            _asgi.report(_REPORT_STARTUP_FAILED if not stop.done() else _REPORT_SHUTDOWN_FAILED,
                         f"{type(error).__name__}: {error}")
    finally:
        _asgi.detach()
        # A loop that ended abnormally (an app's sys.exit()) leaves tasks behind: cancel them
        # while the loop can still run, rather than have them destroyed pending with the interpreter.
        try:
            pending = [task for task in _asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(_asyncio.gather(*pending, return_exceptions=True))
        except BaseException:
            pass
        for cleanup in (loop.shutdown_asyncgens, loop.shutdown_default_executor):
            try:
                loop.run_until_complete(cleanup())
            except BaseException:
                pass
        loop.close()
        _asyncio.set_event_loop(None)
        # threading keeps a dummy Thread for this thread (it was not started by threading) and
        # forgets it when the thread's state is deleted, after the interpreter has torn its
        # globals down, which prints an ignored TypeError (CPython 3.13). Forget it now.
        try:
            import threading
            del threading._thread_local_info._track_dummy_thread_ref
        except (AttributeError, ImportError):
            pass
"""#
    }
}
