"""Durability: a writer killed with SIGKILL at random instants, in the middle of append, update, seal,
compact or expire, loses no acknowledged event or update and duplicates none; in-flight batches land
all or nothing. Checked against the writer's own journal, sent over a pipe as each call returns."""

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest

import engine
from engine.serving import _manifest, _retention

COLS = {"item_id": "int64", "action": "int32", "score": "int64"}


def _writer(path, first_item, conn, seed):
    """Append batches forever, updating, sealing, compacting and expiring now and then; journal each call."""
    rng = np.random.default_rng(seed)
    store = engine.UIHStore.open(path)
    item, t = first_item, int(time.time() * 1e6)
    for i in range(10**9):
        n = int(rng.integers(1, 40))
        ids = np.arange(item, item + n)
        users = rng.integers(0, 12, n)
        seqs = store.append({"user_id": users, "ts": t + rng.integers(-1000, 1000, n), "item_id": ids,
                             "action": rng.integers(0, 5, n).astype(np.int32), "score": np.zeros(n, np.int64)})
        conn.send(("append", item, n))  # acknowledged: append returned
        item += n
        t += 1000
        if i % 2 == 1:  # the batch just appended is still mutable: update part of it
            pick = rng.choice(n, max(1, n // 3), replace=False)
            value = (seed << 32) + i
            conn.send(("intent", ids[pick].tolist(), value))
            store.update({"user_id": users[pick], "seq": seqs[pick], "score": np.full(len(pick), value)})
            conn.send(("ack",))
        if i % 3 == 2:
            store.seal(t - int(rng.integers(0, 3000)))
        if i % 7 == 6:
            store.compact()
        if i % 5 == 4:
            store.expire(keep_versions=2, grace_s=0)


class Journal:
    """What the writers acknowledged: event ids, and the last acknowledged score of each updated event."""

    def __init__(self):
        self.appended, self.next_item, self.score, self.intent = [], 0, {}, None

    def take(self, msg):
        if msg[0] == "append":
            self.appended.append(msg[1:])
            self.next_item = msg[1] + msg[2]
        elif msg[0] == "intent":
            self.intent = msg[1:]
        else:
            self.score.update(dict.fromkeys(self.intent[0], self.intent[1]))
            self.intent = None

    def check(self, path):
        """Open after the crash (as the next writer), compare with the journal, adopt what landed."""
        with engine.UIHStore.open(path) as store:
            t = store.to_table()
        items, score = t["item_id"].to_numpy(), t["score"].to_numpy()
        assert len(np.unique(items)) == len(items), "an event is present twice"
        want = np.concatenate([np.arange(a, a + n) for a, n in self.appended]) if self.appended else np.zeros(0, int)
        missing = np.setdiff1d(want, items)
        assert not len(missing), f"acknowledged events lost: {missing[:10]}"
        extra = np.setdiff1d(items, want)
        if len(extra):  # only the batch in flight at the kill, and then all of it
            assert extra.min() == self.next_item and np.array_equal(extra, np.arange(self.next_item, extra.max() + 1))
            self.appended.append((self.next_item, len(extra)))
            self.next_item = int(extra.max()) + 1
        got = dict(zip(items.tolist(), score.tolist()))
        if self.intent is not None:  # an update in flight: all of it or none of it
            landed = [got.get(x) == self.intent[1] for x in self.intent[0]]
            assert all(landed) or not any(landed), "an in-flight update landed partly"
            if all(landed) and self.intent[0]:
                self.score.update(dict.fromkeys(self.intent[0], self.intent[1]))
            self.intent = None
        wrong = [(x, v, got.get(x)) for x, v in self.score.items() if got.get(x) != v]
        assert not wrong, f"acknowledged updates lost: {wrong[:5]}"
        assert not (score[~np.isin(items, list(self.score))] != 0).any(), "an update nobody acknowledged"
        u, s = t["user_id"].to_numpy(), t["seq"].to_numpy()
        for user in np.unique(u):
            assert np.array_equal(s[u == user], np.arange((u == user).sum())), f"seq gap for user {user}"
        live = _retention.referenced(path)  # expire killed midway never leaves a manifest naming a lost file
        assert live is not None and all((path / rel).exists() for rel in live)
        assert _manifest.versions(path)


def _crash_loop(tmp_path, kills, seed):
    path = tmp_path / "store"
    with engine.UIHStore.create(tmp_path / "warm", columns=COLS, event_type_column="action") as warm:
        warm.append({"user_id": [0], "ts": [0], "item_id": [0], "action": [0], "score": [0]})  # JIT before fork
    engine.UIHStore.create(path, columns=COLS, event_type_column="action").close()
    ctx = mp.get_context("fork")
    rnd = random.Random(seed)
    journal = Journal()
    for k in range(kills):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_writer, args=(path, journal.next_item, child, seed + k))
        p.start()
        child.close()
        deadline = time.time() + rnd.uniform(0.01, 0.25)
        while time.time() < deadline:
            if parent.poll(0.002):
                journal.take(parent.recv())
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        while parent.poll():
            try:
                journal.take(parent.recv())
            except EOFError:
                break
        parent.close()
        journal.check(path)
    return journal


def test_sigkill_loses_nothing_acknowledged(tmp_path):
    j = _crash_loop(tmp_path, kills=50, seed=7)
    assert len(j.appended) > 50 and len(j.score) > 50


@pytest.mark.slow
def test_sigkill_many(tmp_path):
    j = _crash_loop(tmp_path, kills=1000, seed=11)
    print(f"\nSIGKILL loop: 1000 kills, {sum(n for _, n in j.appended)} events in {len(j.appended)} acknowledged "
          f"batches, {len(j.score)} updated events, 0 problems")
    assert len(j.appended) > 1000
