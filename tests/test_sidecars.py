"""Sidecars: a tenant reads the smallest one holding its event types, with the same result as the main file."""

import numpy as np
import pytest

import engine
from engine.serving._segments import part_for
from uih.workload import random_events as make_events


@pytest.mark.parametrize("actions,part", [([3], "rare"), ([2, 3], "rare"), ([1, 3], "uncommon"), ([0, 1], "main")])
def test_the_smallest_sidecar_holding_the_types_is_read_and_gives_the_same_rows(store, rng, actions, part):
    ev = make_events(rng, range(30), 30_000, t0=0, span=10_000)
    ev["action"] = rng.choice(4, len(ev["ts"]), p=[0.77, 0.15, 0.05, 0.03]).astype(np.int32)
    store.append(ev)
    store.seal(10**9)
    entry = store._manifest["segments"][0]
    assert entry["rare_types"] == [2, 3] and entry["uncommon_types"] == [1, 2, 3]
    assert part_for(entry, actions) == part and part_for(entry, None) == "main"
    assert part_for({"main": {}, "rare": None, "rare_types": []}, [1]) == "main"  # an entry of an older store
    req = {"user_id": np.arange(30, dtype=np.int64), "request_ts": np.full(30, 10**9, np.int64)}
    thin = store.snapshot(req)
    p = engine.Projection(["item_id", "ts", "action"], max_len=100, actions=actions)
    got = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    ref = engine.Reconstructor(store, p, device="cpu",
                               pushdown=engine.Reconstructor.PUSHDOWN - {"types"}).reconstruct(thin)
    assert got["lengths"].sum() > 0
    assert all(np.array_equal(got[c], ref[c]) for c in ["item_id", "ts", "action", "lengths"])


def _typed_store(store, rng):
    """Four seals of 10 users with four event types (one dominant; sidecars: rare [3], uncommon [2, 3]) and
    thin rows logged after each of the last two: users' examples point at different sealed counts, and
    their last events of a type span segments."""
    import pyarrow as pa
    thins = []
    req = {"user_id": np.arange(10, dtype=np.int64), "request_ts": np.full(10, 10**9, np.int64)}
    for k in range(4):
        ev = make_events(rng, range(10), 6_000, t0=k * 10_000, span=10_000)
        ev["action"] = rng.choice(4, len(ev["ts"]), p=[0.7, 0.15, 0.1, 0.05]).astype(np.int32)
        store.append(ev)
        store.seal(10**9)
        if k >= 2:
            thins.append(store.snapshot(req))
    return pa.concat_tables(thins)


@pytest.mark.parametrize("actions,part", [([3], "rare"), ([2], "uncommon"), ([2, 3], "uncommon"), ([1, 2], "main")])
def test_a_typed_read_reads_only_the_strides_holding_each_users_last_events_of_its_types(store, rng, actions,
                                                                                          part):
    thin = _typed_store(store, rng)
    p = engine.Projection(["item_id", "ts", "action"], max_len=10, actions=actions)
    cut = engine.Reconstructor(store, p, device="cpu")
    whole = engine.Reconstructor(store, p, device="cpu", pushdown=engine.Reconstructor.PUSHDOWN - {"rows"})
    ref = engine.Reconstructor(store, p, device="cpu", pushdown={"columns"})
    got, want, plain = cut.reconstruct(thin), whole.reconstruct(thin), ref.reconstruct(thin)
    assert got["lengths"].min() == 10  # every example has more than max_len events of those types
    for c in ["item_id", "ts", "action", "lengths"]:
        assert np.array_equal(got[c], want[c]) and np.array_equal(got[c], plain[c]), c
    assert {part_for(e, actions) for e in store._manifest["segments"]} == {part}
    if part == "main":  # main files' indexes carry no type counts: each user's whole run, as before
        assert cut.stats["events_read"] == whole.stats["events_read"]
    else:  # each user's last seal and a stride or two of the one before, of four seals
        assert cut.stats["events_read"] < 0.6 * whole.stats["events_read"]


def test_after_compaction_and_without_type_counts_typed_reads_stay_exact(store, rng, monkeypatch):
    from engine.serving import _segment_index
    thin = _typed_store(store, rng)
    store.compact(full=True)  # seqs below some examples' sealed counts now share one segment with newer ones
    p = engine.Projection(["item_id", "action"], max_len=25, actions=[2, 3])
    ref = engine.Reconstructor(store, p, device="cpu", pushdown={"columns"}).reconstruct(thin)
    got = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    assert all(np.array_equal(got[c], ref[c]) for c in ["item_id", "action", "lengths"])
    monkeypatch.setattr(_segment_index, "typed", lambda idx: False)  # an index written before type counts
    old = engine.Reconstructor(store, p, device="cpu")
    assert all(np.array_equal(old.reconstruct(thin)[c], ref[c]) for c in ["item_id", "action", "lengths"])


def test_type_checkpoints_round_trip_through_the_index_file(tmp_path, rng):
    import zlib

    from engine.serving import _segment_index as si
    uid = np.sort(rng.integers(0, 7, 2_000))
    seq = np.concatenate([np.sort(rng.choice(10**6, c, replace=False)) for c in np.bincount(uid, minlength=7)])
    types = rng.choice([2, 5, 9], len(uid))
    raw = si.to_bytes(si.build(uid, seq, np.zeros(len(uid), np.int64), types))
    (tmp_path / "i.arrow").write_bytes(raw)
    idx = si.load(tmp_path, {"index": "i.arrow", "index_crc": zlib.crc32(raw)})
    assert list(idx["types"]) == [2, 5, 9]
    for u, (a, c) in enumerate(zip(idx["row_start"], idx["row_count"])):
        s0 = idx["type_ckpt_offsets"][u]
        for j, lo in enumerate(range(a, a + c, si.TYPE_STRIDE)):
            hi = min(lo + si.TYPE_STRIDE, a + c)
            assert idx["seq_ckpt"][s0 + j] == seq[hi - 1] - seq[a]
            counts = idx["type_ckpt"][(s0 + j) * 3:(s0 + j + 1) * 3]
            assert list(counts) == [int((types[lo:hi] == t).sum()) for t in (2, 5, 9)]
