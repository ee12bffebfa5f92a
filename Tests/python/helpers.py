"""Functions the tests send to worker interpreters. They live in a module, so the workers find
them by name (the tests' folder is on sys.path, which the workers copy)."""

import os
import sys
import time

import subinterp


def add(x, y=0):
    return x + y


def echo(*args, **kwargs):
    return args, kwargs


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fail(message):
    raise ValueError(message)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


def return_unpicklable():
    import threading
    return threading.Lock()


class StubbornError(Exception):
    """An exception that does not survive pickling (its __init__ needs two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def raise_stubborn():
    raise StubbornError(1, 2)


def exit_worker():
    sys.exit(3)


def announce_then_spin(queue_name):
    """Tells the test it runs, then busy-loops in pure Python until interrupted (it would take
    hours to finish). A test sees the interruption by the worker taking its next call."""
    subinterp.queue(queue_name).put("started")
    n = 0
    while n < 10**12:
        n += 1
    return "finished"


def announce_then_block(started_name, gate_name):
    subinterp.queue(started_name).put("started")
    return subinterp.queue(gate_name).get(timeout=60)


def block_on(queue_name):
    """Waits until the test puts something on the queue."""
    return subinterp.queue(queue_name).get(timeout=60)


def record(queue_name, value):
    subinterp.queue(queue_name).put(value)
    return value


def put_into(queue, value):
    queue.put(value)
    return queue


def fill(buffer, byte):
    view = memoryview(buffer)
    for i in range(len(view)):
        view[i] = byte
    return bytes(view[:4])


def read_buffer(buffer):
    return bytes(memoryview(buffer))


_calls = 0


def count_calls():
    """How many calls this worker's interpreter has run (a fresh interpreter starts at 1)."""
    global _calls
    _calls += 1
    return _calls


INITIALIZED = None


def initialize(value):
    global INITIALIZED
    INITIALIZED = value


def initialized():
    return INITIALIZED


def failing_initializer():
    raise ValueError("error in initializer")


def interpreter_facts():
    """What this interpreter sees of the subinterp module and the process."""
    import subinterp
    return {
        "pid": os.getpid(),
        "names": sorted(n for n in dir(subinterp) if not n.startswith("_")),
        "core": subinterp._core.__name__,
        "file": subinterp.__file__,
    }


class Multiplier:
    """A callable object: it travels by pickle."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def times(self, x):
        return x * self.factor


def exchange_a(first, second):
    subinterp.queue(first).put("a says hi")
    return subinterp.queue(second).get(timeout=60)


def exchange_b(first, second):
    subinterp.queue(second).put("b says hi")
    return subinterp.queue(first).get(timeout=60)


def print_later(text):
    # Only returns after the process began to exit when the exit does not wait for it.
    import time
    time.sleep(0.5)
    print(text, flush=True)
