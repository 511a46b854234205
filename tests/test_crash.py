"""Durability: a writer killed with SIGKILL at random instants loses no acknowledged event, duplicates none."""

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest

import engine

COLS = {"item_id": "int64", "action": "int32"}


def _writer(path, first_item, conn, seed):
    """Append batches forever, sealing and compacting now and then; report each acknowledged batch."""
    rng = np.random.default_rng(seed)
    store = engine.UIHStore.open(path)
    item, t = first_item, int(time.time() * 1e6)
    for i in range(10**9):
        n = int(rng.integers(1, 40))
        ids = np.arange(item, item + n)
        store.append({"user_id": rng.integers(0, 12, n), "ts": t + rng.integers(-1000, 1000, n),
                      "item_id": ids, "action": rng.integers(0, 5, n).astype(np.int32)})
        conn.send((item, n))  # acknowledged: append returned
        item += n
        t += 1000
        if i % 3 == 2:
            store.seal(t - int(rng.integers(0, 3000)))
        if i % 7 == 6:
            store.compact()


def _check(path, acked, next_item):
    """Open after the crash and compare with what the writer acknowledged."""
    with engine.UIHStore.open(path) as store:
        t = store.to_table()
        items = t["item_id"].to_numpy()
        assert len(np.unique(items)) == len(items), "an event is present twice"
        want = np.concatenate([np.arange(a, a + n) for a, n in acked]) if acked else np.zeros(0, np.int64)
        missing = np.setdiff1d(want, items)
        assert not len(missing), f"acknowledged events lost: {missing[:10]}"
        extra = np.setdiff1d(items, want)
        # at most the one batch in flight at the kill may be present, and then all of it
        if len(extra):
            assert extra.min() == next_item and np.array_equal(extra, np.arange(next_item, extra.max() + 1))
        u, s = t["user_id"].to_numpy(), t["seq"].to_numpy()
        for user in np.unique(u):
            assert np.array_equal(s[u == user], np.arange((u == user).sum())), f"seq gap for user {user}"
        return int(items.max()) + 1 if len(items) else next_item


def _crash_loop(tmp_path, kills, seed):
    path = tmp_path / "store"
    with engine.UIHStore.create(tmp_path / "warm", columns=COLS, event_type_column="action") as warm:
        warm.append({"user_id": [0], "ts": [0], "item_id": [0], "action": [0]})  # JIT-compile before forking
    engine.UIHStore.create(path, columns=COLS, event_type_column="action").close()
    ctx = mp.get_context("fork")
    rnd = random.Random(seed)
    acked, next_item = [], 0
    for k in range(kills):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_writer, args=(path, next_item, child, seed + k))
        p.start()
        child.close()
        deadline = time.time() + rnd.uniform(0.01, 0.25)
        while time.time() < deadline:
            if parent.poll(0.002):
                acked.append(parent.recv())
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        while parent.poll():
            try:
                acked.append(parent.recv())
            except EOFError:
                break
        parent.close()
        last = acked[-1][0] + acked[-1][1] if acked else 0
        next_item = max(_check(path, acked, last), last)
        # the next writer starts above everything ever used, so ids stay unique
        acked_set_end = next_item
        if next_item > last:  # the in-flight batch landed: it is durable, count it as acknowledged
            acked.append((last, next_item - last))
        next_item = acked_set_end
    return len(acked)


def test_sigkill_loses_nothing_acknowledged(tmp_path):
    assert _crash_loop(tmp_path, kills=50, seed=7) > 50


@pytest.mark.slow
def test_sigkill_many(tmp_path):
    assert _crash_loop(tmp_path, kills=400, seed=11) > 400
