"""Read-ahead advice: the prefetching planner asks the OS for exactly the bytes decoding will read.

``engine.training._reads.will_need`` is called a chunk ahead (``Reconstructor.iter_batches`` with prefetch). It
must ask for the column chunks of exactly the row groups ``runs`` decodes (nothing more, or it would read bytes
no projection needs), skip what the arena already holds, and never change a result.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.serving import _segments
from engine.training import _reads
from engine.training._arena import GroupArena
from uih.workload import COLUMNS, random_events

DAY = 86_400_000_000


@pytest.fixture
def small_groups_store(tmp_path, monkeypatch):
    """Three sealed segments of 256-row groups, 60 users, a rare event type (sidecar parts), then a
    snapshot per user."""
    monkeypatch.setattr(_segments, "ROW_GROUP_ROWS", 256)
    rng = np.random.default_rng(7)
    store = engine.UIHStore.create(tmp_path / "s", columns=COLUMNS, event_type_column="action")
    for d in range(3):
        ev = random_events(rng, range(60), 6000, t0=d * DAY, span=DAY)
        ev["action"] = rng.choice(4, len(ev["ts"]), p=[0.77, 0.15, 0.05, 0.03]).astype(np.int32)
        store.append(ev)
        store.seal((d + 1) * DAY)
    thin = store.snapshot({"user_id": np.arange(60), "request_ts": np.full(60, 3 * DAY)})
    yield store, thin
    store.close()


def _advice(monkeypatch) -> list:
    """Record every WILLNEED advice as (file, first byte, end byte)."""
    got, real = [], os.posix_fadvise

    def advise(fd, offset, length, advice):
        if advice != os.POSIX_FADV_WILLNEED:  # opening a segment declares random access: not advice
            return real(fd, offset, length, advice)
        assert length > 0  # a length of 0 would mean "to the end of the file"
        got.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), offset, offset + length))
    monkeypatch.setattr(os, "posix_fadvise", advise)
    return got


def _chunk_bytes(path, groups, columns) -> set:
    """Every byte of the named columns' chunks in ``groups`` of the file, from its footer."""
    md = pq.ParquetFile(path).metadata
    names = [md.schema.column(j).name for j in range(md.num_columns)]
    out = set()
    for g in groups:
        for c in columns:
            cc = md.row_group(g).column(names.index(c))
            first = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
            out.update(range(first, first + cc.total_compressed_size))
    return out


needs_advice = pytest.mark.skipif(not (hasattr(os, "posix_fadvise") and os.path.isdir("/proc/self/fd")),
                                  reason="no posix_fadvise or /proc/self/fd on this OS")


@needs_advice
@pytest.mark.parametrize("cut", ["all", "recent"])
def test_advice_covers_exactly_the_chunks_runs_decodes(small_groups_store, monkeypatch, cut):
    store, _ = small_groups_store
    view = store.view
    assert max(len(_segments.row_group_rows(view.parquet(s, "main"))) for s in range(len(view.segments))) > 4
    users = np.array([1, 5, 6, 20, 33], np.int64)
    seq_lo = None if cut == "all" else np.array([200, 0, 150, 300, 10], np.int64)
    columns = ["item_id", "action", "dwell_ms"]  # event types: dictionary-encoded, a page before the data
    decoded = {}

    def read_groups(pf, path, groups, cols, name):
        decoded.setdefault(os.path.basename(path), set()).update(groups)
        return _segments.read_groups_arrow(pf, path, groups, cols, name)

    advised = _advice(monkeypatch)
    reads = _reads.plan(view, users, 64, seq_lo=seq_lo)  # 64-row blocks: several per group
    asked = _reads.will_need(view, reads, columns)
    arena = GroupArena(np, 1, 2, 64, budget=1 << 30)
    rs = _reads.runs(view, reads, arena, (["item_id"], ["action", "dwell_ms"]), columns, read_groups=read_groups)
    assert rs.num_events > 0 and decoded
    for file in {f for f, _, _ in advised} | set(decoded):
        path = store.root / "segments" / file if (store.root / "segments" / file).exists() else None
        path = path or next(p for p in store.root.rglob(file))
        want = _chunk_bytes(path, sorted(decoded.get(file, ())), columns)
        have = set()
        for f, a, b in advised:
            if f == file:
                assert not have & set(range(a, b)), "a byte was asked for twice"
                have.update(range(a, b))
        assert have == want, file
    assert asked == sum(b - a for _, a, b in advised)

    # what the arena already holds is not asked for again
    advised.clear()
    assert _reads.will_need(view, reads, columns, arena=arena) == 0 and advised == []
    arena.release(rs.slots)


PROJECTIONS = {"plain": dict(columns=["item_id", "dwell_ms"]),
               "rare-type": dict(columns=["item_id", "surface"], actions=[3]),
               "window": dict(columns=["item_id"], window_us=DAY // 2),
               "types-window": dict(columns=["item_id"], actions=[1, 3], window_us=DAY),
               "seq": dict(columns=["seq"])}


@needs_advice
@pytest.mark.parametrize("cache", [1 << 16, 1 << 30])  # blocks evicted and read again, or kept and skipped
@pytest.mark.parametrize("off", [None, "users", "rows", "columns", "types"])
@pytest.mark.parametrize("name", PROJECTIONS)
def test_each_chunk_is_advised_exactly_what_it_decodes(small_groups_store, monkeypatch, name, off, cache):
    """Through the reconstructor, as prefetching calls it: per chunk, the advised bytes are the decoded
    column chunks, whatever the projection (sidecars, windows, seqs), the pushdown dimensions and what
    the arena already holds."""
    store, thin = small_groups_store
    p = engine.Projection(max_len=40, **PROJECTIONS[name])
    rec = engine.Reconstructor(store, p, device="cpu", pushdown=engine.Reconstructor.PUSHDOWN - {off},
                               cache_bytes=cache)
    decoded = []
    read = rec.backend.read_groups

    def recording(pf, path, groups, cols, name):
        decoded.append((path, list(groups), list(cols)))
        return read(pf, path, groups, cols, name)
    monkeypatch.setattr(rec.backend, "read_groups", recording)
    advised = _advice(monkeypatch)
    parts = set()
    for lo in range(0, len(thin), 8):
        advised.clear()
        decoded.clear()
        rec._prepare(rec._plan(rec._checker.table(thin.slice(lo, 8)), hint=True))  # private steps: one chunk
        want, have = {}, {}
        for path, groups, cols in decoded:
            want.setdefault(os.path.basename(path), set()).update(_chunk_bytes(path, groups, cols))
            parts.add(os.path.basename(path))
        for f, a, b in advised:
            have.setdefault(f, set()).update(range(a, b))
        assert want == have, (name, off, lo)
    assert parts  # every case decoded something
    if cache > 1 << 20:  # the arena held what later chunks needed: not decoded again, not advised
        assert rec.stats["chunks"] > 1
    if name == "rare-type" and off != "types":
        assert any("rare" in f for f in parts)  # the sidecars were read, and advised


def test_advice_that_fails_never_fails_the_job(small_groups_store, monkeypatch):
    store, thin = small_groups_store

    real = os.posix_fadvise

    def broken(fd, offset, length, advice):
        if advice == os.POSIX_FADV_WILLNEED:
            raise OSError(22, "read-ahead advice not supported here")
        return real(fd, offset, length, advice)
    monkeypatch.setattr(os, "posix_fadvise", broken)
    p = engine.Projection(["item_id"], max_len=50)
    want = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    got = list(engine.Reconstructor(store, p, device="cpu", prefetch=2).iter_batches(thin, batch_size=8))
    np.testing.assert_array_equal(np.concatenate([b["item_id"] for b in got]), want["item_id"])


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_with_advice_changes_no_batch(small_groups_store, prefetch):
    store, thin = small_groups_store
    p = engine.Projection(["item_id", "action", "dwell_ms"], max_len=300)
    want = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    rec = engine.Reconstructor(store, p, device="cpu", chunk_batches=2, prefetch=prefetch)
    batches = list(rec.iter_batches(thin, batch_size=7))
    for c in want:
        np.testing.assert_array_equal(np.concatenate([b[c] for b in batches]), want[c])


def test_a_bad_chunk_fails_typed_after_the_good_ones_with_prefetch(small_groups_store):
    """The planning thread checks the thin rows now; its errors still reach the caller in chunk order."""
    store, thin = small_groups_store
    bad = thin.slice(0, 5).set_column(thin.schema.get_field_index("imm_hw"), "imm_hw",
                                      pa.array(np.full(5, 10 ** 9, np.int64)))
    rows = pa.concat_tables([thin.slice(0, 10), bad])
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=50), device="cpu", prefetch=2)
    it = rec.iter_batches(rows, batch_size=5, chunk_rows=10)
    assert [b.size for b in (next(it), next(it))] == [5, 5]
    with pytest.raises(engine.VersionError, match="imm_hw"):
        next(it)


def test_leaving_early_stops_both_prefetch_threads(small_groups_store):
    import gc
    import threading
    import time

    store, thin = small_groups_store
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=50), device="cpu", prefetch=2)
    it = rec.iter_batches(pa.concat_tables([thin] * 20), batch_size=4, chunk_rows=8)
    next(it)
    assert {"uih-plan", "uih-prefetch"} <= {t.name for t in threading.enumerate()}
    it.close()
    del it
    gc.collect()
    deadline = time.monotonic() + 10
    while any(t.name in ("uih-plan", "uih-prefetch") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a prefetch thread outlived its iterator"
        time.sleep(0.02)


def test_a_seal_between_planning_steps_never_fails_a_chunk(small_groups_store):
    """A chunk is planned against one view, at least as new as its rows: rows logged right after a seal
    must not be checked against the store's new version and then planned against the view before it."""
    store, _ = small_groups_store
    rng = np.random.default_rng(11)
    ev = random_events(rng, range(60), 3000, t0=3 * DAY, span=DAY)
    store.append(ev)
    stale = store.view
    store.seal(4 * DAY)  # a new version: the rows below point at events only its view has sealed
    thin = store.snapshot({"user_id": np.arange(60), "request_ts": np.full(60, 4 * DAY)})
    p = engine.Projection(["item_id"], max_len=300)
    want = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)

    class Racing:
        """The store, whose first look at ``view`` still sees the view from before the seal."""

        def __init__(self):
            self.looks = [stale]

        def __getattr__(self, name):
            return getattr(store, name)

        @property
        def view(self):
            return self.looks.pop() if self.looks else store.view

    rec = engine.Reconstructor(store, p, device="cpu")
    rec.store = Racing()
    got = rec.reconstruct(thin)
    np.testing.assert_array_equal(got["item_id"], want["item_id"])


@pytest.mark.parametrize("hint", [False, True])
def test_a_chunk_looks_up_its_runs_once_for_advice_and_decoding(small_groups_store, monkeypatch, hint):
    """Planning finds a chunk's runs and block cuts once per segment part; the advice and the decoding
    both use them, so asking for read-ahead costs no second pass over the index."""
    from engine.serving import _segment_index

    store, thin = small_groups_store
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=50), device="cpu")
    t = rec._checker.table(thin.slice(0, 8))
    rec._prepare(rec._plan(t))  # warm: indexes and footers open
    calls = {"select_runs": 0, "cut_at_blocks": 0}
    for mod, name in ((_segment_index, "select_runs"), (_reads, "cut_at_blocks")):
        real = getattr(mod, name)

        def counting(*a, _real=real, _name=name):
            calls[_name] += 1
            return _real(*a)
        monkeypatch.setattr(mod, name, counting)
    parts = len(rec._plan(t).reads.parts)
    calls.update(select_runs=0, cut_at_blocks=0)
    rec._prepare(rec._plan(t, hint=hint))
    assert parts > 0
    assert calls["cut_at_blocks"] == parts
    assert calls["select_runs"] == len(store.view.segments)


def test_runs_refuse_an_arena_of_other_blocks_than_planned(small_groups_store):
    """Planned block cuts index an arena of the same slot size; any other would place runs wrongly."""
    store, _ = small_groups_store
    reads = _reads.plan(store.view, np.array([1, 5], np.int64), 64)
    arena = GroupArena(np, 1, 0, 128, budget=1 << 20)
    with pytest.raises(engine.InvalidArgument, match="blocks of 64 rows"):
        _reads.runs(store.view, reads, arena, (["item_id"], []), ["item_id"])
    assert arena.slots == 0  # nothing pinned
