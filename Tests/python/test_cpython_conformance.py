"""CPython's own executor tests (Lib/test/test_concurrent_futures, as installed with Python 3.13),
run against subinterp.InterpreterPoolExecutor.

The test classes are CPython's; this adapter only mixes them with our executor, the way CPython
mixes them with ThreadPoolExecutor and ProcessPoolExecutor. Where a test inspects the internals of
process pools, or expects what only a crashed or killed process does, it is skipped with the
reason, or (for a crash that is reported differently) run with the exception this executor
documents instead.
"""

import contextlib
import pickle
import sys
import unittest

import pytest

try:
    from test.test_concurrent_futures import executor as cpython_executor
    from test.test_concurrent_futures import (
        test_as_completed, test_deadlock, test_init, test_shutdown, test_wait, util)
except ImportError:  # CPython 3.12 as pyenv builds it ships no test_concurrent_futures
    pytest.skip("this Python does not ship test.test_concurrent_futures (3.13 does)", allow_module_level=True)

import subinterp


class InterpreterPoolMixin(util.ExecutorMixin):
    executor_type = subinterp.InterpreterPoolExecutor


class InterpreterPoolExecutorTest(InterpreterPoolMixin, cpython_executor.ExecutorTest, util.BaseTestCase):
    pass


class InterpreterPoolWaitTest(InterpreterPoolMixin, test_wait.WaitTests, util.BaseTestCase):
    pass


class InterpreterPoolAsCompletedTest(InterpreterPoolMixin, test_as_completed.AsCompletedTests, util.BaseTestCase):
    pass


class InterpreterPoolInitializerTest(test_init.InitializerMixin, InterpreterPoolMixin, util.BaseTestCase):
    pass


class InterpreterPoolFailingInitializerTest(test_init.FailingInitializerMixin, InterpreterPoolMixin, util.BaseTestCase):
    pass


@contextlib.contextmanager
def _children_import_this_executor():
    """The shutdown tests start `python -c` with `from concurrent.futures import <executor>`;
    the child imports this executor from subinterp instead. Nothing else in the script changes."""
    original = test_shutdown.assert_python_ok

    def assert_python_ok(*args, **kwargs):
        args = [a.replace("from concurrent.futures import InterpreterPoolExecutor",
                          "from subinterp import InterpreterPoolExecutor") if isinstance(a, str) else a
                for a in args]
        return original(*args, **kwargs)

    test_shutdown.assert_python_ok = assert_python_ok
    try:
        yield
    finally:
        test_shutdown.assert_python_ok = original


class InterpreterPoolShutdownTest(InterpreterPoolMixin, test_shutdown.ExecutorShutdownTest, util.BaseTestCase):
    def test_interpreter_shutdown(self):
        with _children_import_this_executor():
            super().test_interpreter_shutdown()

    def test_submit_after_interpreter_shutdown(self):
        with _children_import_this_executor():
            super().test_submit_after_interpreter_shutdown()

    def test_hang_gh83386(self):
        with _children_import_this_executor():
            super().test_hang_gh83386()


_SEGFAULT = "a segfault in a worker interpreter ends the whole process: the workers are interpreters, not processes"

# Failures that end a worker process in a ProcessPoolExecutor (BrokenProcessPool) are ordinary
# exceptions here: the call's future raises the exception itself, and the pool goes on.
_RAISED_INSTEAD = {
    "test_exit_at_task_unpickle": SystemExit,
    "test_error_at_task_unpickle": pickle.UnpicklingError,
    "test_error_during_result_unpickle_in_result_handler": pickle.UnpicklingError,
    "test_exit_during_result_unpickle_in_result_handler": SystemExit,
}


class InterpreterPoolDeadlockTest(InterpreterPoolMixin, test_deadlock.ExecutorDeadlockTest, util.BaseTestCase):
    def _check_crash(self, error, func, *args, ignore_stderr=False):
        # CPython's version, without the mp_context argument this executor does not take.
        error = _RAISED_INSTEAD.get(self._testMethodName, error)
        self.executor.shutdown(wait=True)
        executor = self.executor_type(max_workers=2)
        res = executor.submit(func, *args)
        cm = test_deadlock.support.captured_stderr() if ignore_stderr else contextlib.nullcontext()
        try:
            with self.assertRaises(error):
                with cm:
                    res.result(timeout=self.TIMEOUT)
        finally:
            executor.shutdown(wait=True)

    @unittest.skip(_SEGFAULT)
    def test_crash_at_task_unpickle(self):
        pass

    @unittest.skip(_SEGFAULT)
    def test_crash_during_func_exec_on_worker(self):
        pass

    @unittest.skip(_SEGFAULT)
    def test_crash_during_result_pickle_on_worker(self):
        pass

    @unittest.skip(_SEGFAULT)
    def test_shutdown_deadlock(self):
        pass

    @unittest.skip(_SEGFAULT)
    def test_crash_big_data(self):
        pass

    @unittest.skip("inspects ProcessPoolExecutor's manager thread (_executor_manager_thread)")
    def test_shutdown_deadlock_pickle(self):
        pass

    @unittest.skip("mocks ProcessPoolExecutor's manager thread and wake-up pipe, which this executor has not")
    def test_gh105829_should_not_deadlock_if_wakeup_pipe_full(self):
        pass
