"""The CUDA backend's stream ordering, run against a recording stand-in for CuPy (no GPU here).

The stand-in keeps arrays in host memory (so the simulated kernels can run on them) but models what the
ordering depends on: per-thread current streams, events that complete only when the test says so (or a
stream or device is synchronized), ``wait_event`` and asynchronous copies from pinned memory. The checks:
every kernel launch is queued on the consumer stream after it waited for its chunk's ready event; a
chunk's arena slots and arrays are not handed back while the event after its last kernel is pending;
and no host-side device-wide synchronization happens on the reconstruction path.
"""

import threading
import types
import weakref

import numpy as np
import pyarrow as pa
import pytest

import kernels
from engine import Projection, Reconstructor
from engine.training import _backends


class DevArray(np.ndarray):
    """A "device" array: host memory, with CuPy's ``set``/``get``."""

    def set(self, a, stream=None):
        LOG.append(("copy", stream))
        self[...] = a

    def get(self):
        return np.array(self)


LOG = []


def _dev(a):
    return np.asarray(a).view(DevArray)


class Event:
    def __init__(self, **_):
        self.stream, self.done = None, True

    def record(self, stream=None):
        self.stream = stream or FakeCupy.cuda.get_current_stream()
        self.done = False
        FakeCupy.cuda.events.append(self)
        LOG.append(("record", self.stream, self))


class Stream:
    count = 0

    def __init__(self, non_blocking=False, null=False):
        Stream.count += 1
        self.ptr = 0 if null else Stream.count

    def __enter__(self):
        _local.stack = [*getattr(_local, "stack", []), self]
        return self

    def __exit__(self, *exc):
        _local.stack.pop()

    def wait_event(self, ev):
        LOG.append(("wait", self, ev))

    def synchronize(self):
        for e in FakeCupy.cuda.events:
            if e.stream is self:
                e.done = True


_local = threading.local()


class _Cuda(types.SimpleNamespace):
    def get_current_stream(self):
        stack = getattr(_local, "stack", [])
        return stack[-1] if stack else self.Stream.null

    def alloc_pinned_memory(self, n):
        return bytearray(n)

    def complete(self):
        for e in self.events:
            e.done = True


def _device():
    def synchronize():
        LOG.append(("device-sync",))
        FakeCupy.cuda.complete()
    return types.SimpleNamespace(id=0, synchronize=synchronize)


Stream.null = Stream(null=True)
FakeCupy = types.SimpleNamespace(
    cuda=_Cuda(Event=Event, Stream=Stream, Device=_device, events=[]),
    int64=np.int64, int32=np.int32,
    empty=lambda shape, dtype=float: np.empty(shape, dtype).view(DevArray),
    zeros=lambda shape, dtype=float: np.zeros(shape, dtype).view(DevArray),
    arange=lambda *a, **k: _dev(np.arange(*a, **k)),
    cumsum=lambda a: _dev(np.cumsum(a)),
    asarray=_dev,
)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``device="cuda"`` resolves to ``CudaBackend`` over the stand-in; kernels run in the simulator on
    the stream the backend hands them, and each launch is logged with it."""
    from numba import cuda as numba_cuda
    LOG.clear()
    FakeCupy.cuda.events.clear()
    monkeypatch.setattr(_backends._deps, "cupy", lambda: FakeCupy)
    monkeypatch.setattr(_backends._deps, "cudf_or_none", lambda: None)
    monkeypatch.setattr(_backends, "cuda_usable", lambda: True)
    numba_streams = {}

    def launch_stream(self):  # the simulator has no external streams: one simulated stream per CuPy one
        cur = FakeCupy.cuda.get_current_stream()
        return numba_streams.setdefault(cur, (cur, numba_cuda.stream()))[1]

    for name in ("slice", "assemble"):
        kernel = getattr(_backends.CudaBackend, name)

        def launch(*a, _k=kernel, _n=name, **kw):
            LOG.append(("launch", _n, FakeCupy.cuda.get_current_stream(), kw["stream"]))
            return _k(*a, **kw)
        monkeypatch.setattr(_backends.CudaBackend, name, staticmethod(launch))
    monkeypatch.setattr(_backends.CudaBackend, "launch_stream", launch_stream)
    monkeypatch.setattr(_backends.CudaBackend, "PINNED_MIN", 64)  # small tests still take the pinned path
    return numba_streams


@pytest.fixture
def thin_rows(filled_store, rng):
    """Requests of every user at several times (some before the last seal), with a label column."""
    day = 86_400_000_000
    users = np.repeat(np.arange(0, 20, 2), 3)
    ts = np.tile([day + day // 2, 2 * day + day // 3, 3 * day], 10)
    thin = filled_store.snapshot({"user_id": users, "request_ts": ts})
    return thin.append_column("label", pa.array(rng.random(len(users)).astype(np.float32)))


PROJECTIONS = [Projection(["item_id", "action", "ts"], max_len=64),
               Projection(["item_id", "dwell_ms"], max_len=32, actions=[1, 3], window_us=86_400_000_000,
                          align="right")]


@pytest.mark.parametrize("proj, prefetch", [(PROJECTIONS[0], 2), (PROJECTIONS[1], 0)],
                         ids=["plain-prefetch", "filtered-inline"])
def test_kernels_wait_for_their_chunk_and_results_match_cpu(fake_gpu, filled_store, thin_rows, proj, prefetch):
    want = [b.to_numpy() for b in Reconstructor(filled_store, proj, device="cpu").iter_batches(thin_rows, 8)]
    rec = Reconstructor(filled_store, proj, device="cuda", prefetch=prefetch, chunk_batches=2)
    assert rec.device == "cuda" and isinstance(rec.backend, _backends.CudaBackend)
    got = [{k: np.array(v) for k, v in b.items()} for b in rec.iter_batches(thin_rows, 8, extra_columns=["label"])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() - w.keys() == {"label"}
        for k in w:
            np.testing.assert_array_equal(g[k], w[k])

    ready = {}  # chunk ready events, by the stream that recorded them (the producer's)
    waited = {}  # consumer stream -> events it waited on, in order
    for entry in LOG:
        if entry[0] == "record":
            ready.setdefault(entry[1], []).append(entry[2])
        elif entry[0] == "wait":
            waited.setdefault(entry[1], []).append(entry[2])
        elif entry[0] == "launch":
            _, _, consumer, numba_stream = entry
            assert fake_gpu[consumer][1] is numba_stream, "kernel not launched on the thread's current stream"
            assert waited.get(consumer), "kernel launched before its stream waited for the chunk's copies"
            assert waited[consumer][-1].stream is not consumer  # it waited on the producer's ready event
        assert entry[0] != "device-sync", "the reconstruction path must not synchronize the whole device"
    if prefetch:  # copies run on the prefetch thread's own stream, not the consumer's
        producers = {e.stream for evs in waited.values() for e in evs}
        assert producers and all(p.ptr != 0 for p in producers)
    copies = [e for e in LOG if e[0] == "copy"]
    assert copies and all(s is not None for _, s in copies)  # every host-to-device copy names its stream


def test_slots_and_arrays_outlive_the_chunk_until_its_kernels_finish(fake_gpu, filled_store, thin_rows):
    rec = Reconstructor(filled_store, PROJECTIONS[0], device="cuda", prefetch=0)
    batch = rec.reconstruct(thin_rows)
    assert batch.size == thin_rows.num_rows
    arena = rec._arena
    assert any(arena._pins), "a chunk's slots are pinned"
    (event, keep, _), = rec.backend._retired  # the chunk was collected; its release waits on this event
    assert not event.done and event.stream is FakeCupy.cuda.get_current_stream()
    held = weakref.ref(next(a for a in keep if isinstance(a, kernels.Runs)).pos)
    del keep
    rec.backend.reap()
    assert any(arena._pins) and held() is not None, "released while a kernel may still read it"
    FakeCupy.cuda.complete()
    rec.backend.reap()
    assert not any(arena._pins) and not rec.backend._retired
    assert held() is None, "the chunk's arrays go back to the memory pool once its kernels are done"
