import os, time
from subinterp import InterpreterPoolExecutor

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

if __name__ == "__main__":
    start = time.perf_counter(); [fib(24) for _ in range(64)]; serial = time.perf_counter() - start
    with InterpreterPoolExecutor() as pool:
        start = time.perf_counter(); list(pool.map(fib, [24] * 64)); parallel = time.perf_counter() - start
    print(f"64 x fib(24): {serial:.2f} s serially, {parallel:.2f} s on {os.cpu_count()} interpreters: {serial / parallel:.2f}x")
