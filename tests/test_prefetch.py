"""The prefetch stage: order, errors, and the ``busy`` signal by which the consumer's kernels leave the
prefetch thread a core while it prepares a chunk."""

import threading
import time

import numba
import pytest

from engine.training._backends import CpuBackend
from engine.training._prefetch import prefetch


def test_items_in_order_and_errors_reach_the_consumer():
    assert list(prefetch(lambda: iter(range(7)), depth=2)) == list(range(7))

    def broken():
        yield 1
        raise ValueError("bad chunk")
    got = prefetch(broken, depth=2)
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(got)


def test_busy_is_set_while_an_item_is_made_and_clear_while_the_queue_is_full():
    busy, making, go = threading.Event(), threading.Event(), threading.Event()

    def produce():
        yield 0
        making.set()
        go.wait(5)  # the producer is making item 1 until the test lets it finish
        yield 1

    it = prefetch(produce, depth=1, busy=busy)
    assert next(it) == 0
    assert making.wait(5) and busy.is_set()
    go.set()
    assert next(it) == 1
    assert list(it) == [] and not busy.is_set()

    full = threading.Event()
    it = prefetch(lambda: iter(range(100)), depth=1, busy=full)
    assert next(it) == 0
    time.sleep(0.2)  # the producer makes the next items in microseconds, then waits on the full queue
    assert not full.is_set()
    it.close()


def test_cpu_kernels_leave_a_core_to_a_busy_producer_and_get_it_back():
    be, before = CpuBackend(), numba.get_num_threads()
    with be.sharing_cores(True):
        assert numba.get_num_threads() == max(1, before - 1)
    assert numba.get_num_threads() == before
    with be.sharing_cores(False):
        assert numba.get_num_threads() == before


def test_the_producer_is_closed_as_soon_as_the_consumer_leaves():
    """Not when garbage-collected: a producer may own a stage (a thread) of its own to stop."""
    closed, held = threading.Event(), []

    def items():
        try:
            yield from range(100)
        finally:
            closed.set()

    def produce():  # the generator is referenced elsewhere too: only an explicit close() ends it now
        held.append(items())
        return held[-1]
    it = prefetch(produce, depth=1)
    assert next(it) == 0
    it.close()  # the consumer leaves; the producer thread closes its generator before it ends
    assert closed.wait(5)
