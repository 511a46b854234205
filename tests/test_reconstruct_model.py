"""Reconstruction against a plain NumPy model of the store that shares no code with any reader.

``tests/test_reconstruct.py`` compares reconstruction with fat rows; both read sealed events through the
engine's read path, so a bug there cancels out. Here the expected sequences come from a model fed the
same appends, updates and seals (as ``test_store_model.py`` does), recorded at each snapshot instant,
at sizes where users' runs cross row groups (1000 rows each here) and span several segments, before and
after compaction.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.serving import _segments

COLS = {"item_id": "int64", "action": "int32", "surface": "int32", "dwell_ms": "int32"}
USERS = np.arange(8)
DAY = 86_400_000_000
GROUP_ROWS = 1000  # segments of several row groups at test sizes (the store writes 16384-row groups)


class Model:
    """Per user: columns ``seq, ts, item_id, action, surface, dwell_ms`` as growing NumPy arrays, plus
    how many of the user's events are sealed (a prefix: seal moves the oldest mutable events first)."""

    def __init__(self):
        self.ev = {}
        self.sealed = {}

    def append(self, rows: dict):
        for i, u in enumerate(rows["user_id"].tolist()):
            d = self.ev.setdefault(u, {c: [] for c in ["seq", "ts", *COLS]})
            d["seq"].append(len(d["seq"]))
            for c in ["ts", *COLS]:
                d[c].append(rows[c][i].item())

    def update(self, u, seq, col, value):
        self.ev[u][col][seq] = value

    def seal(self, cutoff):
        for u, d in self.ev.items():
            k = self.sealed.get(u, 0)
            while k < len(d["ts"]) and d["ts"][k] < cutoff:
                k += 1
            self.sealed[u] = k

    def mutable(self, u):
        return range(self.sealed.get(u, 0), len(self.ev.get(u, {"ts": []})["ts"]))

    def visible(self, u) -> dict:
        """A copy of everything ``u`` has at this instant (sealed prefix, then its mutable tail)."""
        d = self.ev.get(u, {c: [] for c in ["seq", "ts", *COLS]})
        return {c: np.array(v, np.int64) for c, v in d.items()}


def project(vis: dict, request_ts: int, p: engine.Projection, dtypes: dict) -> dict:
    """docs/semantics.md on one visible sequence, in plain NumPy."""
    keep = np.ones(len(vis["seq"]), bool)
    if p.actions is not None:
        keep &= np.isin(vis["action"], list(p.actions))
    if p.window_us is not None:
        keep &= vis["ts"] >= request_ts - p.window_us
    idx = np.flatnonzero(keep)[-p.max_len:]
    n = len(idx)
    off = p.max_len - n if p.align == "right" else 0
    out = {}
    for c in p.columns:
        row = np.full(p.max_len, p.pad_value, dtypes[c])
        row[off:off + n] = vis[c][idx]
        out[c] = row
    out["lengths"] = n
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store and its model driven through the same operations; snapshots recorded from the model."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_segments, "ROW_GROUP_ROWS", GROUP_ROWS)  # every segment this store writes
        yield from _world(tmp_path_factory)


def _world(tmp_path_factory):
    rng = np.random.default_rng(2024)
    store = engine.UIHStore.create(tmp_path_factory.mktemp("model") / "s", columns=COLS,
                                   event_type_column="action")
    model = Model()
    thins, expected = [], []
    t = 0
    for rnd in range(7):
        n = 2600  # per round; each seal writes a few row groups, and user 0 alone fills most of one
        uid = rng.choice(USERS, n, p=np.r_[0.3, 0.2, np.full(6, 0.5 / 6)])
        ts = t + np.sort(rng.integers(0, DAY, n))
        late = rng.random(n) < 0.05
        ts[late] = np.maximum(ts[late] - DAY // 2, 0)
        ev = {"user_id": uid, "ts": ts, "item_id": rng.integers(0, 1 << 40, n),
              "action": rng.choice(4, n, p=[0.55, 0.3, 0.11, 0.04]).astype(np.int32),
              "surface": rng.integers(0, 8, n).astype(np.int32),
              "dwell_ms": rng.integers(0, 60_000, n).astype(np.int32)}
        store.append(ev)
        model.append(ev)
        for u in rng.choice(USERS, 5):  # rewrite a few mutable values: logged tails must not see it later
            mut = list(model.mutable(int(u)))
            if mut:
                s = int(rng.choice(mut))
                v = int(rng.integers(-100, 0))
                store.update({"user_id": [int(u)], "seq": [s], "item_id": [v]})
                model.update(int(u), s, "item_id", v)
        req_ts = t + DAY - DAY // 8
        users = np.r_[USERS, [99]]  # user 99 never has events
        thins.append(store.snapshot({"user_id": users, "request_ts": np.full(len(users), req_ts)}))
        expected += [(model.visible(int(u)), req_ts) for u in users]
        store.seal(t + DAY // 2 + rnd * DAY // 16)
        model.seal(t + DAY // 2 + rnd * DAY // 16)
        if rnd % 2:  # right after a seal the tails are short: short max_len then reaches sealed events
            store.seal(t + DAY)
            model.seal(t + DAY)
            thins.append(store.snapshot({"user_id": users, "request_ts": np.full(len(users), t + DAY)}))
            expected += [(model.visible(int(u)), t + DAY) for u in users]
        if rnd == 4:
            store.compact(full=True)
        t += DAY
    store.append({c: v[:50] for c, v in ev.items()})  # the store moves on after the last snapshot
    store.seal(t + 10 * DAY)
    yield store, thins, expected
    store.close()


PROJECTIONS = {
    "item-action-ts": engine.Projection(["item_id", "action", "ts"], max_len=64),
    "long-right-pad": engine.Projection(["seq", "dwell_ms", "item_id"], max_len=5000, align="right",
                                        pad_value=-3),
    "rare-type": engine.Projection(["surface", "item_id"], max_len=300, actions=[3]),
    "types-window-right": engine.Projection(["item_id", "action", "ts"], max_len=2000, actions=[0, 2],
                                            window_us=3 * DAY, align="right", pad_value=7),
    "window": engine.Projection(["ts", "item_id"], max_len=20_000, window_us=2 * DAY),
    "len-1": engine.Projection(["dwell_ms"], max_len=1),
    "rare-seq-right": engine.Projection(["seq", "item_id"], max_len=50, actions=[3], align="right"),
    "filter-only-lanes": engine.Projection(["dwell_ms"], max_len=700, actions=[1, 2], window_us=2 * DAY),
}


def expected_batch(expected, p, dtypes) -> dict:
    rows = [project(vis, rts, p, dtypes) for vis, rts in expected]
    out = {c: np.stack([r[c] for r in rows]) for c in p.columns}
    out["lengths"] = np.array([r["lengths"] for r in rows], np.int32)
    return out


@pytest.mark.parametrize("name", PROJECTIONS)
def test_reconstruction_equals_the_model(world, name):
    store, thins, expected = world
    p = PROJECTIONS[name]
    dtypes = {c: store.schema.dtype(c) for c in p.columns}
    thin = pa.concat_tables(thins)
    got = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    want = expected_batch(expected, p, dtypes)
    assert sorted(got) == sorted(want)
    for c in want:
        assert got[c].dtype == want[c].dtype, c
        np.testing.assert_array_equal(got[c], want[c], err_msg=f"column {c}")


@pytest.mark.parametrize("off", sorted(engine.Reconstructor.PUSHDOWN))
def test_each_pushdown_switched_off_still_equals_the_model(world, off):
    store, thins, expected = world
    p = PROJECTIONS["types-window-right"] if off != "types" else PROJECTIONS["rare-seq-right"]
    rec = engine.Reconstructor(store, p, device="cpu", pushdown=engine.Reconstructor.PUSHDOWN - {off})
    got = rec.reconstruct(pa.concat_tables(thins))
    want = expected_batch(expected, p, {c: store.schema.dtype(c) for c in p.columns})
    for c in want:
        np.testing.assert_array_equal(got[c], want[c], err_msg=f"column {c}")


def test_the_model_world_crosses_row_groups_and_segments(world):
    """The fixture is only worth its name if users' runs really cross groups and segments: read from the
    segments' Parquet footers (a group's last user is the next group's first: a run across the boundary)."""
    store, _, _ = world
    segs = store.view.segments
    assert len(segs) >= 3
    crossings, several, in_segments = 0, 0, {}
    for s in segs:
        md = pq.ParquetFile(store.root / s["main"]["file"]).metadata
        assert md.num_row_groups == -(-s["main"]["rows"] // GROUP_ROWS), s["main"]["file"]
        several += md.num_row_groups >= 2
        users = [md.row_group(g).column(0).statistics for g in range(md.num_row_groups)]
        assert md.schema.column(0).name == "user_id" and all(u.has_min_max for u in users)
        crossings += sum(a.max == b.min for a, b in zip(users, users[1:]))
        for u in np.unique(pq.read_table(store.root / s["main"]["file"], columns=["user_id"])["user_id"]):
            in_segments[int(u)] = in_segments.get(int(u), 0) + 1
    assert several >= 3 and crossings >= 2 * several
    assert max(in_segments.values()) >= 3


@pytest.mark.parametrize("name", ["item-action-ts", "types-window-right"])
def test_simulated_cuda_equals_the_model(world, name):
    store, thins, expected = world
    p = PROJECTIONS[name]
    p = engine.Projection(p.columns, max_len=12, actions=p.actions, window_us=p.window_us, align=p.align,
                          pad_value=p.pad_value)
    dtypes = {c: store.schema.dtype(c) for c in p.columns}
    k = len(USERS) + 1  # the snapshot right after the 6th round's seal: short tails
    thin = thins[-2].slice(0, 4)  # the simulator runs every CUDA thread in Python: a few rows
    got = engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)
    want = expected_batch(expected[-2 * k:-2 * k + 4], p, dtypes)
    for c in want:
        np.testing.assert_array_equal(got[c], want[c], err_msg=f"column {c}")


def jagged_of(p: engine.Projection) -> engine.Projection:
    return engine.Projection(p.columns, max_len=p.max_len, actions=p.actions, window_us=p.window_us,
                             align=p.align, pad_value=p.pad_value, layout="jagged")


@pytest.mark.parametrize("name", PROJECTIONS)
def test_jagged_layout_holds_the_padded_rows_values(world, name):
    store, thins, expected = world
    p = PROJECTIONS[name]
    thin = pa.concat_tables(thins)
    want = expected_batch(expected, p, {c: store.schema.dtype(c) for c in p.columns})
    got = engine.Reconstructor(store, jagged_of(p), device="cpu").reconstruct(thin)
    lengths, offsets = got["lengths"], got["offsets"]
    assert lengths.dtype == np.int32 and offsets.dtype == np.int64 and offsets.shape == (len(thin) + 1,)
    np.testing.assert_array_equal(lengths, want["lengths"])
    np.testing.assert_array_equal(np.diff(offsets), lengths)
    assert offsets[0] == 0
    for c in p.columns:
        assert got[c].ndim == 1 and got[c].dtype == want[c].dtype and len(got[c]) == offsets[-1]
        for b in range(len(thin)):
            n = lengths[b]
            row = want[c][b, p.max_len - n:] if p.align == "right" else want[c][b, :n]
            np.testing.assert_array_equal(got[c][offsets[b]:offsets[b + 1]], row, err_msg=f"{c} row {b}")
    t = got.to_torch()
    assert t["offsets"].shape == (len(thin) + 1,) and t[p.columns[0]].data_ptr() == got[p.columns[0]].ctypes.data


def test_jagged_simulated_cuda_equals_cpu(world):
    store, thins, _ = world
    p = jagged_of(PROJECTIONS["types-window-right"])
    p = engine.Projection(p.columns, max_len=12, actions=p.actions, window_us=p.window_us, layout="jagged")
    thin = thins[-2].slice(0, 4)
    cpu = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    sim = engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)
    assert sorted(cpu) == sorted(sim)
    for c in cpu:
        np.testing.assert_array_equal(sim[c], cpu[c])


@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_tiny_arena_never_evicts_what_a_chunk_in_use_reads(world, prefetch):
    """With a 1-byte budget every slot is evicted as soon as it is free: prefetched chunks must still
    read their own rows (pinned), and batches must equal one whole reconstruct."""
    store, thins, expected = world
    p = PROJECTIONS["long-right-pad"]
    thin = pa.concat_tables(thins)
    want = expected_batch(expected, p, {c: store.schema.dtype(c) for c in p.columns})
    rec = engine.Reconstructor(store, p, device="cpu", chunk_batches=1, cache_bytes=1)
    batches = list(rec.iter_batches(thin, batch_size=5, prefetch=prefetch))
    for c in want:
        np.testing.assert_array_equal(np.concatenate([b[c] for b in batches]), want[c])
    assert rec._arena.slots < 200  # slots of released chunks are reused, not leaked


def test_concurrent_preparations_share_the_arena_safely(world):
    """Two threads reconstructing with one reconstructor (a prefetch thread and a direct call): the
    second must not read slots the first has claimed but not yet filled (the first's decode is slowed)."""
    import threading
    import time
    store, thins, expected = world
    p = PROJECTIONS["window"]
    want = expected_batch(expected, p, {c: store.schema.dtype(c) for c in p.columns})
    rec = engine.Reconstructor(store, p, device="cpu")
    read = rec.backend.read_groups

    def slow_read(*args):
        time.sleep(0.3)
        return read(*args)

    rec.backend.read_groups = slow_read
    thin = pa.concat_tables(thins)
    got = []
    first = threading.Thread(target=lambda: got.append(rec.reconstruct(thin)))
    first.start()
    time.sleep(0.1)  # the first is now decoding into slots it has claimed
    got.append(rec.reconstruct(thin))
    first.join()
    for g in got:
        for c in want:
            np.testing.assert_array_equal(g[c], want[c])
