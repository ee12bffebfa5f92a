"""The README's Python quick start: its example is Examples/python/speedup.py, word for word, and
it runs and prints the speedup."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "Examples", "python", "speedup.py")


def test_the_readme_shows_the_example_file():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    with open(EXAMPLE, encoding="utf-8") as file:
        example = file.read()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert example in blocks


def test_the_example_prints_the_parallel_speedup():
    done = subprocess.run([sys.executable, EXAMPLE], capture_output=True, text=True, timeout=300)
    if not (sys.version_info < (3, 13) and done.returncode == -6):  # see test_executor.assert_clean_exit
        assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"64 x fib\(24\): [\d.]+ s serially, [\d.]+ s on \d+ interpreters: [\d.]+x\n", done.stdout)
