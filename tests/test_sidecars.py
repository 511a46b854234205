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
