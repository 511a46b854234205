"""The process-wide reserve of host buffers: a new pool or arena reuses memory an old one let go, never
memory still in use, and the reserve stays within its bound."""

import os
import signal
import weakref

import numpy as np
import pytest

import engine
from engine.training import _buffer_pool
from engine.training._buffer_pool import host_empty
from uih.workload import synthetic_store

SHAPE = (3, 12_345)  # a shape no other test asks for


def test_a_buffer_let_go_is_handed_out_again():
    a = host_empty(SHAPE, np.int64)
    old = weakref.ref(a)
    del a  # whoever asked for it (a backend made per pass) is gone
    assert host_empty(SHAPE, np.int64) is old()


def test_a_buffer_in_use_is_never_handed_out_again():
    a = host_empty(SHAPE, np.int32)
    view = a[1:]  # a view keeps its base in use
    b = host_empty(SHAPE, np.int32)
    assert not np.shares_memory(a, b)
    del a
    c = host_empty(SHAPE, np.int32)
    assert not np.shares_memory(view, c) and not np.shares_memory(b, c)


def test_other_shapes_and_dtypes_get_other_buffers():
    a = host_empty(SHAPE, np.int64)
    old = weakref.ref(a)
    del a
    assert host_empty(SHAPE, np.float64) is not old()
    assert host_empty((SHAPE[0], SHAPE[1] + 1), np.int64) is not old()
    assert host_empty(SHAPE, np.int64) is old()


def test_idle_buffers_beyond_the_bound_are_forgotten(monkeypatch):
    monkeypatch.setattr(_buffer_pool, "RESERVE_BYTES", _buffer_pool.reserved_bytes() + (1 << 20))
    for k in range(8):  # 8 idle MiB buffers of distinct shapes: only about one fits in the bound
        host_empty((1 << 17) + k, np.int64)
    last = host_empty(SHAPE, np.int8)  # the next request trims first
    assert _buffer_pool.reserved_bytes() <= _buffer_pool.RESERVE_BYTES + last.nbytes


def test_a_zero_bound_keeps_nothing_for_reuse(monkeypatch):
    monkeypatch.setattr(_buffer_pool, "RESERVE_BYTES", 0)
    a = host_empty(SHAPE, np.int64)
    old = weakref.ref(a)
    del a
    assert host_empty(SHAPE, np.int64) is not old() and old() is None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = synthetic_store(tmp_path_factory.mktemp("pool") / "store", users=4, history=3000)
    yield s
    s.close()


def test_the_next_reconstructor_reuses_the_last_ones_output_and_arena_memory(store):
    """One pass per reconstructor, as a training job makes them: the second pass faults no new memory
    for its batches or its decoded row groups."""
    thin = store.snapshot({"user_id": np.arange(4), "request_ts": np.full(4, 1 << 62)})
    p = engine.Projection(["item_id", "action", "ts"], max_len=1000)

    def one_pass():
        rec = engine.Reconstructor(store, p, device="cpu", prefetch=0)
        out = rec.reconstruct(thin)
        blob = out.packed()[0]
        return weakref.ref(blob), weakref.ref(rec._arena.w8), weakref.ref(rec._arena.w4), out["item_id"].copy()

    *first, values1 = one_pass()
    *second, values2 = one_pass()
    assert all(a() is not None and a() is b() for a, b in zip(first, second))
    np.testing.assert_array_equal(values1, values2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_another_thread_takes_a_buffer_can_take_one_too():
    with _buffer_pool._lock:  # as a prefetch thread holds it while it looks for a buffer
        pid = os.fork()
        if pid == 0:  # the child: give up after 10 s rather than hang the suite
            signal.alarm(10)
            try:
                host_empty(SHAPE, np.int64)
            except BaseException:  # noqa: BLE001 - any failure is the child's exit status
                os._exit(1)
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child could not take a buffer"
