"""The CUDA backend's stream ordering, run against a recording stand-in for CuPy (no GPU here).

The stand-in keeps arrays in host memory (so the simulated kernels can run on them) but models what the
ordering depends on: per-thread current streams, events that complete only when the test says so (or a
stream or device is synchronized), ``wait_event`` and asynchronous copies from pinned memory. The checks:
every kernel launch is queued on the consumer stream after it waited for its chunk's ready event; a
chunk's arena slots and arrays are not handed back while the event after its last kernel is pending;
no host-side device-wide synchronization happens on the reconstruction path; and (``unordered``) no two
device operations on different streams touch the same bytes, one of them a write, without an event or
a host synchronization ordering them, nor is decoded memory freed while an operation may still read it.
"""

import gc
import sys
import threading
import time
import types
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numba.cuda.simulator.kernel import BlockThread

import kernels
from engine import Projection, Reconstructor
from engine.training import _backends


class DevArray(np.ndarray):
    """A "device" array: host memory, with CuPy's ``set``/``get``; each write (and what it reads from
    other device arrays) is logged as an operation on the current stream."""

    def set(self, a, stream=None):
        LOG.append(("copy", stream))
        _op(stream, [], _extent(self))
        np.ndarray.__setitem__(self, Ellipsis, a)

    def __array_finalize__(self, obj):
        _alloc(self)  # an arithmetic result, a copy, a view: its memory, see ``ALLOCATED``

    def __setitem__(self, key, value):
        view = self[key]
        if isinstance(view, np.ndarray):
            _op(FakeCupy.cuda.get_current_stream(), _extent(value) if isinstance(value, DevArray) else [],
                _extent(view))
        np.ndarray.__setitem__(self, key, value)

    def get(self):
        return np.array(self)


LOG = []
# Every "device" allocation, kept until the test ends when it uses ``unordered`` (fixture ``no_reuse``):
# CuPy's pool hands memory freed on one stream only to that stream again, whereas NumPy would reuse an
# address at once on any thread, a race the device never has (whether the memory a chunk's kernels read
# is held until they finish is checked apart, by its arrays' lifetime)
ALLOCATED = None
DECODED = set()  # ids of the live buffers ``FakeCudf`` decoded: their lifetime is the code's to get right


def _alloc(a):
    """Keep the memory under ``a`` (while ``ALLOCATED`` is on), unless it is a decoded buffer."""
    if ALLOCATED is not None:
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        if id(root) not in DECODED:
            ALLOCATED[id(root)] = root
    return a


def _op(stream, reads, writes):
    """Log a device operation (byte ranges read and written), unless it is a simulated kernel's own."""
    if not getattr(_local, "in_kernel", False) and not isinstance(threading.current_thread(), BlockThread):
        LOG.append(("op", stream, reads, writes))


def _extent(a) -> list:
    """The byte ranges ``[lo, hi)`` of array ``a``: one if contiguous, one per row of a 2-D row view."""
    if a.size == 0:
        return []
    lo = a.__array_interface__["data"][0]
    if a.flags.c_contiguous:
        return [(lo, lo + a.nbytes)]
    if a.ndim == 2 and a.strides[1] == a.itemsize:
        return [(lo + i * a.strides[0], lo + i * a.strides[0] + a.shape[1] * a.itemsize) for i in range(a.shape[0])]
    return [tuple(np.byte_bounds(a))]


def _overlap(a, b) -> bool:
    return any(x0 < y1 and y0 < x1 for x0, x1 in a for y0, y1 in b)


def _join(clock, other):
    for k, v in other.items():
        if clock.get(k, -1) < v:
            clock[k] = v


def unordered(log) -> list:
    """Pairs of logged operations on different streams that touch the same bytes (one writing), with
    nothing ordering the later after the earlier (vector clocks over the log: an event carries its
    stream's clock, ``wait_event`` joins it, a host synchronization orders everything queued after
    it); and frees of memory an operation may still use. Empty when every access is ordered."""
    clock, events, host, floor, ops, bad = {}, {}, {}, -1, [], []
    for i, e in enumerate(log):
        if e[0] == "record":
            c = dict(clock.get(e[1], {}))
            c[e[1]] = i
            events[e[2]] = c
        elif e[0] == "wait":
            _join(clock.setdefault(e[1], {}), events.get(e[2], {}))
        elif e[0] == "sync":
            c = dict(clock.get(e[1], {}))
            c[e[1]] = i
            _join(host, c)
        elif e[0] in ("complete", "device-sync"):
            floor = i
        elif e[0] == "free":
            bad += [("freed while in use", log[j]) for j, t, r, w in ops
                    if j > floor and host.get(t, -1) < j and _overlap(r + w, e[1])]
        elif e[0] == "op":
            s, reads, writes = e[1:]
            c = clock.setdefault(s, {})
            _join(c, host)
            for j, t, r, w in ops:
                if t is not s and j > floor and c.get(t, -1) < j and \
                        (_overlap(w, reads + writes) or _overlap(r, writes)):
                    bad.append((log[j], e))
            c[s] = i
            ops.append((i, s, reads, writes))
    return bad


def _dev(a):
    """CuPy's ``asarray``: a device array as it is, anything else copied to the device."""
    return a if isinstance(a, DevArray) else _alloc(np.array(a, copy=True).view(DevArray))


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
        LOG.append(("sync", self))
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
        LOG.append(("complete",))
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
    int64=np.int64, int32=np.int32, ndarray=DevArray,
    empty=lambda shape, dtype=float: _alloc(np.empty(shape, dtype).view(DevArray)),
    zeros=lambda shape, dtype=float: _alloc(np.zeros(shape, dtype).view(DevArray)),
    arange=lambda *a, **k: _alloc(_dev(np.arange(*a, **k))),
    cumsum=lambda a: _alloc(_dev(np.cumsum(a))),
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

    for name in ("slice", "assemble", "slice_assemble"):
        kernel = getattr(_backends.CudaBackend, name)

        def launch(*a, _k=kernel, _n=name, **kw):
            cur = FakeCupy.cuda.get_current_stream()
            LOG.append(("launch", _n, cur, kw["stream"]))
            LOG.append(("op", cur, _kernel_reads(a), []))
            _local.in_kernel = True
            try:
                return _k(*a, **kw)
            finally:
                _local.in_kernel = False
        monkeypatch.setattr(_backends.CudaBackend, name, staticmethod(launch))
    monkeypatch.setattr(_backends.CudaBackend, "launch_stream", launch_stream)
    monkeypatch.setattr(_backends.CudaBackend, "PINNED_MIN", 64)  # small tests still take the pinned path
    return numba_streams


def _kernel_reads(args) -> list:
    """What a slicing or assembly kernel reads: its runs' events in every arena lane (not the slots the
    chunk does not use, which a later chunk may be filling), and every other device array it is given."""
    src, runs, rest = args[0], args[1], args[2:]
    start, pos = np.asarray(runs.start), np.asarray(runs.pos)
    reads = [r for w in (src.w8, src.w4) for lane in range(w.shape[0])
             for p, n in zip(pos.tolist(), np.diff(start).tolist()) for r in _extent(w[lane, p:p + n])]

    def arrays(x):
        if isinstance(x, DevArray):
            yield x
        elif isinstance(x, tuple):
            for v in x:
                yield from arrays(v)
    return reads + [r for a in arrays((runs, *rest)) for r in _extent(a)]


def _freed(key, extent):
    DECODED.discard(key)
    LOG.append(("free", extent))


class FakeCudf:
    """cuDF's reader over the stand-in: each column decoded into memory of its own, written on the
    default stream; its free (the allocator may hand it to the next decode at once) is logged."""

    decoded = 0

    def read_parquet(self, path, columns, row_groups):
        t = pq.ParquetFile(path).read_row_groups(row_groups[0], columns=columns)
        out = {}
        for c in columns:
            FakeCudf.decoded += 1
            buf = np.array(t.column(c).to_numpy(), copy=True)
            LOG.append(("op", Stream.null, [], _extent(buf)))
            DECODED.add(id(buf))
            weakref.finalize(buf, _freed, id(buf), _extent(buf))
            out[c] = types.SimpleNamespace(values=buf.view(DevArray))
        return out


@pytest.fixture
def no_reuse(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ALLOCATED", {})


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
def test_kernels_wait_for_their_chunk_and_results_match_cpu(fake_gpu, no_reuse, filled_store, thin_rows, proj,
                                                             prefetch):
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
    assert any(e[0] == "launch" for e in LOG)
    assert unordered(LOG) == []


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


def _rows(batch) -> dict:
    return {k: np.array(v) for k, v in batch.items()}


def _same(got: list, want: list):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            np.testing.assert_array_equal(g[k], w[k])


def test_a_thread_reading_slots_another_thread_filled_waits_for_its_copies(fake_gpu, no_reuse, filled_store,
                                                                            thin_rows):
    """Two training threads on one reconstructor, each on its own stream: the second finds every row
    group cached in slots the first thread's producer stream filled, whose copies have not completed."""
    want = Reconstructor(filled_store, PROJECTIONS[0], device="cpu").reconstruct(thin_rows).to_numpy()
    rec = Reconstructor(filled_store, PROJECTIONS[0], device="cuda", prefetch=0)
    got, start = {}, {}

    def train(name):
        with FakeCupy.cuda.Stream(non_blocking=True):
            start[name] = len(LOG)
            got[name] = _rows(rec.reconstruct(thin_rows))
    for name in ("A", "B"):
        t = threading.Thread(target=train, args=(name,))
        t.start()
        t.join()
    _same([got["A"], got["B"]], [want, want])
    arena = [*_extent(rec._arena.w8), *_extent(rec._arena.w4)]
    fills = [sum(e[0] == "op" and _overlap(e[3], arena) for e in LOG[a:b]) for a, b in
             ((start["A"], start["B"]), (start["B"], len(LOG)))]
    assert fills[0] and not fills[1], "the second thread's chunk must read the first one's cached slots"
    assert not any(e.done for e in FakeCupy.cuda.events)  # nothing completed: only events order the reads
    assert unordered(LOG) == []


def test_an_iteration_after_a_break_waits_for_the_copies_still_running(fake_gpu, no_reuse, store, rng):
    """``break`` out of ``iter_batches`` while the prefetch thread has filled slots for chunks never
    read: the next iteration's own prefetch thread (another stream) reads those slots. Each day's users
    are sealed in a segment of their own, so the first chunk's users fill one slot and later ones the
    other, on the first iteration's stream after the only ready event its consumer waited for."""
    from uih.workload import random_events
    day = 86_400_000_000
    for d, users in enumerate((range(0, 10), range(10, 20))):
        store.append(random_events(rng, users, 300, t0=d * day, span=day))
        store.seal((d + 1) * day)
    thin_rows = store.snapshot({"user_id": np.r_[np.arange(8), np.arange(10, 20)],
                                "request_ts": np.full(18, 3 * day)})
    want = [b.to_numpy() for b in Reconstructor(store, PROJECTIONS[0], device="cpu").iter_batches(thin_rows, 8)]
    rec = Reconstructor(store, PROJECTIONS[0], device="cuda", prefetch=2, chunk_batches=1)
    it = rec.iter_batches(thin_rows, 8)
    first = _rows(next(it))
    deadline = time.monotonic() + 120
    while rec.stats["chunks"] < len(want) and time.monotonic() < deadline:  # every chunk prepared ahead
        time.sleep(0.01)
    it.close()
    assert rec.stats["chunks"] == len(want)
    _same([first, *map(_rows, rec.iter_batches(thin_rows, 8))], want[:1] + want)
    assert unordered(LOG) == []


def test_decoded_columns_live_until_their_copies_complete(fake_gpu, no_reuse, monkeypatch, filled_store,
                                                         thin_rows):
    """cuDF's decoded columns are read by asynchronous device-to-device copies: their memory goes back
    to the allocator only once the event after those copies is known complete."""
    FakeCudf.decoded = 0
    monkeypatch.setattr(_backends._deps, "cudf_or_none", lambda: FakeCudf())
    want = Reconstructor(filled_store, PROJECTIONS[0], device="cpu").reconstruct(thin_rows).to_numpy()
    rec = Reconstructor(filled_store, PROJECTIONS[0], device="cuda", prefetch=0, cache_bytes=0)
    assert rec.backend.cudf is not None
    for _ in range(2):  # the second chunk's reads reap the first one's columns, whose copies are pending
        _same([_rows(rec.reconstruct(thin_rows))], [want])
    gc.collect()
    decoded = FakeCudf.decoded
    assert decoded and not any(e[0] == "free" for e in LOG), "freed while their copies may run"
    FakeCupy.cuda.complete()
    rec.backend.reap()
    gc.collect()
    assert sum(e[0] == "free" for e in LOG) == decoded, "held past their copies' completion"
    assert unordered(LOG) == []


def test_growth_copies_slots_after_the_other_streams_fills(fake_gpu, no_reuse):
    """A growth on one thread's stream copies slots another thread's stream filled (copies pending)."""
    from engine.training._arena import GroupArena
    arena = GroupArena(FakeCupy, 1, 1, 4, budget=1 << 20)

    def fill(keys):
        with FakeCupy.cuda.Stream(non_blocking=True):
            slots, missing = arena.acquire(keys)
            for s in slots[missing].tolist():
                arena.w8[0, s * 4:(s + 1) * 4] = s
                arena.w4[0, s * 4:(s + 1) * 4] = -s
            arena.filled(slots[missing])
    for keys in (range(16), range(16, 40)):  # the second thread's request grows the arena
        t = threading.Thread(target=fill, args=(list(keys),))
        t.start()
        t.join()
    assert arena.slots >= 40 and not any(e.done for e in FakeCupy.cuda.events)
    assert (np.asarray(arena.w8[0]).reshape(-1, 4)[:40, 0] == np.arange(40)).all()
    assert unordered(LOG) == []
