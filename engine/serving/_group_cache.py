"""Decoded row groups kept for reuse: ``GroupCache`` (an LRU of column arrays, for ``gather``) and
``GroupArena`` (fixed-size slots of word arenas that reconstruction kernels read in place)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from numba import njit


class GroupCache:
    """Decoded row-group columns, least recently used evicted beyond ``budget`` bytes.

    This is what makes data affinity hold across chunks: a user's rows are decoded once per job (per
    shard) while they fit the budget, however often the user comes back in the thin rows.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._d = OrderedDict()

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value):
        if key in self._d or self.budget <= 0:
            return
        self._d[key] = value
        self.used += value.nbytes
        while self.used > self.budget and self._d:
            _, old = self._d.popitem(last=False)
            self.used -= old.nbytes

    def clear(self):
        self._d.clear()
        self.used = 0


@njit(cache=True, nogil=True)
def _pin(pins, used, slots, tick):
    for s in slots:
        pins[s] += 1
        used[s] = tick


@njit(cache=True, nogil=True)
def _unpin(pins, keyed, slots):
    """Unpin ``slots``; True when every slot this leaves idle still holds a keyed (reusable) block."""
    cached = True
    for s in slots:
        pins[s] -= 1
        if pins[s] == 0 and not keyed[s]:
            cached = False
    return cached


class GroupArena:
    """Decoded row groups of a fixed list of columns, kept where they were decoded: every block of up to
    ``slot_rows`` rows of a row group lives in one slot of per-width word arenas, ``w8 [C8, slots *
    slot_rows]`` and ``w4 [C4, ...]``, so kernels read runs of events straight from them.

    Slots a prepared chunk uses are *pinned* (``acquire``) until the chunk is released; only unpinned
    slots are evicted (least recently used first) once ``budget`` bytes are used. Growing the arenas
    allocates new arrays: chunks keep reading the arrays they were prepared with, which are never
    written again, so a background thread may prepare the next chunk while the current one is read.
    """

    def __init__(self, xp, n8: int, n4: int, slot_rows: int, budget: int):
        self.xp = xp
        self.slot_rows = slot_rows
        self.row_bytes = 8 * n8 + 4 * n4
        self.max_slots = max(0, budget // max(self.row_bytes * slot_rows, 1))
        self.w8 = xp.empty((n8, 0), xp.int64)
        self.w4 = xp.empty((n4, 0), xp.int32)
        # bookkeeping per slot in arrays, so that pinning and unpinning a chunk's slots is one compiled loop
        # rather than Python work per slot (it runs twice per chunk)
        self._slot = {}  # key -> slot
        self._key = []  # slot -> key, None when the slot holds nothing reusable
        self._keyed = np.zeros(0, bool)
        self._pins = np.zeros(0, np.int64)  # pin count per slot
        self._used = np.zeros(0, np.int64)  # when each slot was last acquired: least recently used goes first
        self._tick = 0
        self._free = []
        self._lock = threading.Lock()

    @property
    def slots(self) -> int:
        return len(self._pins)

    def acquire(self, keys: list) -> tuple:
        """Pin a slot for each of distinct ``keys``: ``(slots, missing)``, ``missing`` the indexes of ``keys``
        whose slot is new (the caller fills it with ``write`` before any reader uses it)."""
        with self._lock:
            self._tick += 1
            found = list(map(self._slot.get, keys))
            missing = [i for i, s in enumerate(found) if s is None] if None in found else []
            hits = np.array([s for s in found if s is not None] if missing else found, np.int64)
            _pin(self._pins, self._used, hits, self._tick)  # before any miss takes a slot: a miss never evicts a hit
            if not missing:
                return hits, missing  # every key held: the slots are the hits, in order
            new = len(missing) - len(self._free)
            if new > 0 and self.slots < self.max_slots:  # one growth for the whole request
                self._grow(min(self.slots + new, self.max_slots))
            for i in missing:
                s = found[i] = self._take()
                self._slot[keys[i]] = s
                self._key[s], self._keyed[s] = keys[i], True
                self._pins[s] += 1
                self._used[s] = self._tick
        return np.array(found, np.int64), missing

    def holds(self, keys: list) -> np.ndarray:
        """Whether a slot holds each of ``keys`` now (no pin: it may be evicted before it is acquired)."""
        with self._lock:
            return np.fromiter(map(self._slot.__contains__, keys), bool, len(keys))

    def release(self, slots) -> None:
        """Unpin; slots beyond the budget are freed as soon as nothing uses them (budget 0: no reuse)."""
        with self._lock:
            slots = np.asarray(slots, np.int64)
            if _unpin(self._pins, self._keyed, slots) and len(self._slot) <= self.max_slots:
                return  # the usual case: every idle slot stays cached for the next chunk
            idle = np.unique(slots[self._pins[slots] == 0])  # a slot listed twice is freed once
            for s in idle.tolist():
                if self._keyed[s] and len(self._slot) <= self.max_slots:
                    continue
                self._unkey(s)
                self._free.append(s)

    def forget(self, slots) -> None:
        """Drop the keys of slots whose fill failed, so no chunk trusts them (``release`` still unpins)."""
        with self._lock:
            for s in np.asarray(slots).tolist():
                self._unkey(s)

    def _unkey(self, s: int) -> None:
        if self._keyed[s]:
            del self._slot[self._key[s]]
            self._key[s], self._keyed[s] = None, False

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        if self.slots >= self.max_slots:
            idle = np.flatnonzero((self._pins == 0) & self._keyed)
            if len(idle):  # the least recently used unpinned slot
                s = int(idle[np.argmin(self._used[idle])])
                self._unkey(s)
                return s
        self._grow()
        return self._free.pop()

    def _grow(self, at_least: int = 0):
        # geometric growth, so copying on growth costs O(1) per slot over the arena's life; past the
        # budget only when every slot is pinned by chunks still in use
        old = self.slots
        new = min(max(16, 2 * old, at_least), self.max_slots) if old < self.max_slots else old + max(old // 4, 1)
        n = new * self.slot_rows
        w8 = self.xp.empty((self.w8.shape[0], n), self.xp.int64)
        w4 = self.xp.empty((self.w4.shape[0], n), self.xp.int32)
        w8[:, :self.w8.shape[1]] = self.w8
        w4[:, :self.w4.shape[1]] = self.w4
        self.w8, self.w4 = w8, w4
        grow = new - old
        self._key += [None] * grow
        self._keyed = np.r_[self._keyed, np.zeros(grow, bool)]
        self._pins = np.r_[self._pins, np.zeros(grow, np.int64)]
        self._used = np.r_[self._used, np.zeros(grow, np.int64)]
        self._free += list(range(new - 1, old - 1, -1))
