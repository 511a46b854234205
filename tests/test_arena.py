"""The arena that keeps decoded row groups for the kernels: pinning, eviction, budget, growth, and
releases that arrive from finalizers while the arena is mid-update."""

import faulthandler
import gc
import threading
import weakref

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Projection, Reconstructor
from engine.training._arena import GroupArena

R = 4


def arena(slots_budget):
    return GroupArena(np, 1, 1, R, budget=slots_budget * 12 * R)  # 12 bytes per row: one 8- and one 4-byte lane


def test_hits_need_no_fill_and_pinned_slots_are_never_evicted():
    a = arena(2)
    s1, miss = a.acquire(["a", "b"])
    assert miss == [0, 1]
    s2, miss = a.acquire(["c"])  # over budget, but a and b are pinned: grow instead of evicting
    assert miss == [0] and s2[0] not in s1 and a.slots >= 3
    a.release(s1)
    a.release(s2)
    _, miss = a.acquire(["b", "c"])
    assert miss == []  # both kept (within budget after a was freed)
    _, miss = a.acquire(["a"])
    assert miss == [0]


def full_two_slot_arena(recent):
    """An arena of two slots holding idle blocks ``a`` and ``b``, ``recent`` the one used last."""
    a = arena(16)
    a.max_slots = 2
    s, _ = a.acquire(["a", "b"])
    a.release(s)
    a.release(a.acquire([recent])[0])
    return a, s


def test_least_recently_used_unpinned_slot_is_evicted():
    a, _ = full_two_slot_arena(recent="a")
    s, miss = a.acquire(["c"])
    assert miss == [0]
    assert a.acquire(["a"])[1] == [] and a.acquire(["b"])[1] == [0]


def test_a_miss_never_evicts_a_hit_of_the_same_request():
    a, s = full_two_slot_arena(recent="b")  # a is the least recently used
    slot_a = int(s[0])
    got, miss = a.acquire(["c", "a"])  # c needs a slot: b must go, not a, which this request reads
    assert miss == [0] and int(got[1]) == slot_a and got[0] != got[1]
    assert a.acquire(["b"])[1] == [0]


def test_a_slot_released_twice_at_once_is_freed_once():
    """Two pins of one slot released together: both pins go, and the slot is free once, so two later
    blocks never share it."""
    a = arena(0)
    s1, _ = a.acquire(["a"])
    s2, _ = a.acquire(["a"])
    assert list(s1) == list(s2)
    a.release(np.concatenate([s1, s2]))
    got = [int(a.acquire([k])[0][0]) for k in ("x", "y")]
    assert got[0] != got[1]


def test_budget_zero_reuses_nothing():
    a = arena(0)
    s, miss = a.acquire(["a"])
    a.release(s)
    assert a.acquire(["a"])[1] == [0]


def test_growth_keeps_written_words_and_old_arrays():
    a = arena(1000)
    s, _ = a.acquire(list(range(16)))
    old = a.w8
    for k, slot in enumerate(s.tolist()):
        a.w8[0, slot * R:(slot + 1) * R] = k
    s2, _ = a.acquire(list(range(16, 40)))  # forces a new, larger array
    assert a.w8 is not old
    for k, slot in enumerate(s.tolist()):
        assert (a.w8[0, slot * R:(slot + 1) * R] == k).all() and (old[0, slot * R:(slot + 1) * R] == k).all()


def test_forgotten_slots_are_filled_again():
    a = arena(8)
    s, _ = a.acquire(["a"])
    a.forget(s)
    a.release(s)
    assert a.acquire(["a"])[1] == [0]


class _Cycle:
    """An object only the cycle collector frees (it refers to itself)."""

    def __init__(self, payload=None):
        self.me, self.payload = self, payload


def _within(seconds, fn):
    """``fn()`` in a watchdog thread: a hang fails the test instead of stalling the run."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        faulthandler.dump_traceback()  # where it hangs, in the test's captured output
    assert not t.is_alive(), f"still running after {seconds} s: deadlocked"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _collect_inside_grow(monkeypatch):
    """Every growth of an arena first runs a full collection, as an allocation there may."""
    grow = GroupArena._grow

    def collecting(self, *a):
        gc.collect()
        return grow(self, *a)
    monkeypatch.setattr(GroupArena, "_grow", collecting)


def test_a_release_from_a_collection_inside_acquire_neither_deadlocks_nor_is_lost(monkeypatch):
    """A chunk freed by the cycle collector while ``acquire`` holds the lock (mid-update) releases its
    slots from a finalizer: that release must not wait for the lock, and must still happen."""
    a = arena(1000)
    held, _ = a.acquire(["a", "b"])
    weakref.finalize(_Cycle(), a.release, held)  # unreachable at once; freed only by a collection
    _collect_inside_grow(monkeypatch)
    slots, missing = _within(30, lambda: a.acquire(list(range(40))))  # grows: collects inside the lock
    assert missing == list(range(40)) and not set(slots.tolist()) & set(held.tolist())
    assert not a._later and not a._pins[held].any(), "the finalizer's release was lost"
    assert a._pins[slots].tolist() == [1] * 40


def test_a_chunk_collected_while_the_next_one_is_prepared_releases_its_slots(monkeypatch, filled_store):
    """The reconstructor's own path: a chunk kept alive only by a cycle is collected inside the next
    chunk's ``acquire`` on the CPU backend, whose ``retire`` releases at once."""
    day = 86_400_000_000
    thin = filled_store.snapshot({"user_id": np.arange(0, 20, 2), "request_ts": np.full(10, 3 * day)})
    rec = Reconstructor(filled_store, Projection(["item_id", "ts"], max_len=16), device="cpu", cache_bytes=0)
    rec.reconstruct(thin)  # kernels compiled (and cached) outside the watchdog
    chunk = rec._prepare(rec._plan(thin))
    pinned = rec._arena._pins.copy()
    assert pinned.any()
    _Cycle(chunk)
    del chunk
    _collect_inside_grow(monkeypatch)  # budget 0: every chunk's slots are new, so its acquire grows
    batch = _within(60, lambda: rec.reconstruct(thin))
    assert batch.size == 10
    gc.collect()
    assert not rec._arena._pins.any() and not rec._arena._later


def _cut_reference(bstart, r0, cnt):
    """Plain Python: each range walked row by row, a new piece wherever a block starts."""
    run, blk, lo, num = [], [], [], []
    for i, (a, n) in enumerate(zip(r0.tolist(), cnt.tolist())):
        for row in range(a, a + n):
            b = int(np.searchsorted(bstart, row, side="right")) - 1
            if row == a or row == bstart[b]:
                run.append(i), blk.append(b), lo.append(row), num.append(0)
            num[-1] += 1
    need = sorted(set(blk))
    return run, blk, lo, num, need, [need.index(b) for b in blk]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 80), st.integers(-2, 30)), max_size=12), st.booleans())
def test_cut_at_blocks_matches_a_row_by_row_walk(sizes, ranges, ascending):
    from engine.training._reads import cut_at_blocks
    bstart = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    total = int(bstart[-1])
    ranges = [(min(a, total - 1), min(n, total - min(a, total - 1))) for a, n in ranges]
    if ascending:  # the usual order (users ascending); any order must cut the same
        ranges.sort()
    r0 = np.array([a for a, _ in ranges], np.int64)
    cnt = np.array([n for _, n in ranges], np.int64)
    got = cut_at_blocks(bstart, r0, cnt)
    for g, w in zip(got, _cut_reference(bstart, r0, cnt)):
        assert g.dtype == np.int64 and g.tolist() == list(w)
