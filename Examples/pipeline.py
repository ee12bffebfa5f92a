"""A producer -> workers -> collector pipeline over subinterp queues.

    subinterp run -n 3 Examples/pipeline.py        # 1 producer, 1 worker, 1 collector
    subinterp run -n 6 Examples/pipeline.py 5000   # 1 producer, 4 workers, 1 collector

Copy 0 produces, the last copy collects, every copy in between works. They find each other
through named queues; each runs in its own interpreter with its own GIL.
"""
import sys
import subinterp

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
me, copies = subinterp.worker_index(), subinterp.worker_count()
if copies < 3:
    sys.exit("run with -n 3 or more: a producer, at least one worker, a collector")
workers = copies - 2
tasks = subinterp.queue("pipeline-tasks", maxsize=100)   # bounded: the producer waits for the workers
results = subinterp.queue("pipeline-results")

if me == 0:
    for n in range(count):
        tasks.put(n)
    for _ in range(workers):
        tasks.put(None)                                   # one stop signal per worker
elif me == copies - 1:
    done, total = 0, 0
    while done < workers:
        item = results.get()
        if item is None:
            done += 1
        else:
            total += item
    expected = sum(sum(range(n % 1000)) for n in range(count))
    print(f"collector: {count} results from {workers} workers, total {total}, correct: {total == expected}")
else:
    handled = 0
    while (n := tasks.get()) is not None:
        results.put(sum(range(n % 1000)))                 # stand-in for real CPU work
        handled += 1
    results.put(None)
    print(f"worker {me}: handled {handled} tasks")
