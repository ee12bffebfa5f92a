"""subinterp.Queue, named queues and SharedBuffer in a plain Python process: the same objects
as inside interpreters, and passable to pool calls."""

import pickle
import queue as std_queue
import threading
import uuid

import pytest

import subinterp
from subinterp import InterpreterPoolExecutor

import helpers

WAIT = 60


@pytest.fixture(scope="module")
def executor():
    with InterpreterPoolExecutor(max_workers=2) as pool:
        yield pool


def test_queue_has_the_queue_surface_in_the_main_interpreter():
    q = subinterp.Queue(maxsize=2)
    assert q.empty() and not q.full() and q.maxsize == 2
    q.put({"n": [1, 2.5, "three", b"four", None, True, 2**100]})
    q.put_nowait((1, 2))
    assert q.full() and q.qsize() == 2
    with pytest.raises(subinterp.QueueFull):
        q.put(3, timeout=0.01)
    assert q.get() == {"n": [1, 2.5, "three", b"four", None, True, 2**100]}
    assert q.get_nowait() == (1, 2)
    with pytest.raises(std_queue.Empty):
        q.get(block=False)
    assert issubclass(subinterp.QueueEmpty, std_queue.Empty)
    assert issubclass(subinterp.QueueFull, std_queue.Full)


def test_a_blocking_get_wakes_when_another_thread_puts():
    q = subinterp.create_queue()
    got = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=WAIT)))
    reader.start()
    q.put("hello")
    reader.join(WAIT)
    assert got == ["hello"]


def test_a_queue_passed_to_a_call_is_the_same_queue(executor):
    q = subinterp.Queue()
    returned = executor.submit(helpers.put_into, q, "from a worker").result(timeout=WAIT)
    assert returned == q and returned.id == q.id
    assert q.get(timeout=WAIT) == "from a worker"


def test_named_queues_connect_the_main_interpreter_and_the_workers(executor):
    name = f"test-{uuid.uuid4().hex}"
    subinterp.queue(name).put("to the worker")
    assert executor.submit(helpers.block_on, name).result(timeout=WAIT) == "to the worker"
    executor.submit(helpers.record, name, "to the main interpreter").result(timeout=WAIT)
    assert subinterp.queue(name).get(timeout=WAIT) == "to the main interpreter"


def test_a_shared_buffer_is_shared_memory_not_a_copy(executor):
    buffer = subinterp.SharedBuffer(16)
    memoryview(buffer)[:4] = b"main"
    assert executor.submit(helpers.read_buffer, buffer).result(timeout=WAIT)[:4] == b"main"
    assert executor.submit(helpers.fill, buffer, 7).result(timeout=WAIT) == b"\x07" * 4
    assert bytes(buffer.view) == b"\x07" * 16


def test_queues_and_buffers_pickle_as_references_to_the_same_object():
    q = subinterp.Queue()
    buffer = subinterp.SharedBuffer(4)
    q2, buffer2 = pickle.loads(pickle.dumps((q, buffer)))
    assert q2 == q and buffer2 == buffer
    q2.put(1)
    assert q.get(timeout=WAIT) == 1


def test_an_object_that_cannot_be_pickled_raises_type_error_in_the_sender():
    with pytest.raises(TypeError, match="cannot send a '_thread.lock' object"):
        subinterp.Queue().put(threading.Lock())


def test_worker_index_and_count_in_the_main_interpreter():
    assert subinterp.worker_index() == 0 and subinterp.worker_count() == 1
