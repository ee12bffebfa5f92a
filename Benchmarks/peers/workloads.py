"""Workload functions shared by every runner.

They live in an importable module (not in ``__main__``) so that process and
interpreter workers can unpickle references to them: a worker imports
``workloads`` by name, which needs this folder on ``sys.path`` (pool_peers.py
puts it on PYTHONPATH before any worker starts).
"""

import os
import threading
import time


def fib(n):
    """Naive recursive Fibonacci: pure-Python, CPU-bound, no allocation to speak of."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def noop(x):
    """The trivial call: measures a runner's per-call overhead."""
    return x


def hold(seconds):
    """Sleep, then say which worker ran this (process id, OS thread id).

    Used to force every worker of a pool to start: with workers*2 of these in
    flight at once, a pool that starts workers on demand must start them all.
    """
    time.sleep(seconds)
    return (os.getpid(), threading.get_native_id())
