"""``GroupArena``: decoded row groups kept where reconstruction's kernels read them, in fixed-size slots
of per-width word arenas (host or device memory), pinned while a chunk uses them and reused across
chunks. It lives with the reconstructor's read path (``_reads``), its only user: the serving side's
reads (``gather``) keep plain column arrays instead (``engine.serving._group_cache``).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from numba import njit

from ._buffer_pool import host_empty


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

    On a device (``xp`` is CuPy) slots are filled and read on several streams (one per preparing
    thread): ``filled`` records an event after a slot's copies, and ``acquire`` makes the calling
    thread's stream wait for the events of every slot it returns that another stream wrote (a cached
    slot, or one a growth copied), so whatever that stream queues next reads finished slots.
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
        self._slot: dict = {}  # key -> slot
        self._key: list = []  # slot -> key, None when the slot holds nothing reusable
        self._keyed = np.zeros(0, bool)
        self._pins = np.zeros(0, np.int64)  # pin count per slot
        self._used = np.zeros(0, np.int64)  # when each slot was last acquired: least recently used goes first
        self._tick = 0
        self._free: list = []
        self._lock = threading.Lock()
        # releases not yet done: ``release`` may run from a finalizer that a garbage collection started
        # inside this thread's own locked section (mid-update, the lock held), so it never waits for the
        # lock; whoever holds it next does them (see ``_settle``)
        self._later: deque = deque()
        self._cuda = getattr(xp, "cuda", None)  # CuPy's: streams and events; None on the host
        self._written = np.zeros(0, np.int64)  # per slot: the number of the event after its last write (0: none)
        self._events: dict = {}  # event number -> (stream pointer, event), until the event is known complete
        self._n_events = 0

    @property
    def slots(self) -> int:
        return len(self._pins)

    def acquire(self, keys: list) -> tuple:
        """Pin a slot for each of distinct ``keys``: ``(slots, missing)``, ``missing`` the indexes of ``keys``
        whose slot is new (the caller fills it before any reader uses it, then calls ``filled``). On a
        device the current stream is ordered after every other stream's writes to the slots (a miss's
        too: its new contents must land after the old ones)."""
        try:
            with self._lock:
                self._drain()  # slots freed first, so this request reuses them rather than growing
                slots, missing = self._acquire(keys)
                if self._cuda is not None:
                    self._wait(slots)
                return slots, missing
        finally:
            self._settle()

    def _acquire(self, keys: list) -> tuple:
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

    def filled(self, slots) -> None:
        """The copies into ``slots`` are queued on the current stream: readers on other streams wait for
        them (nothing to do on the host, where a copy is done when it returns)."""
        if self._cuda is None:
            return
        stream = self._cuda.get_current_stream()
        ev = self._record(stream)
        try:
            with self._lock:
                self._mark(np.asarray(slots, np.int64), stream, ev)
        finally:
            self._settle()

    def holds(self, keys: list) -> np.ndarray:
        """Whether a slot holds each of ``keys`` now (no pin: it may be evicted before it is acquired)."""
        try:
            with self._lock:
                return np.fromiter(map(self._slot.__contains__, keys), bool, len(keys))
        finally:
            self._settle()

    def release(self, slots) -> None:
        """Unpin; slots beyond the budget are freed as soon as nothing uses them (budget 0: no reuse).

        Safe from a finalizer: the unpin is queued, and done now only if the lock is free; otherwise its
        holder (maybe this very thread, interrupted by a collection) does it before it unlocks."""
        self._later.append(slots)
        self._settle()

    def forget(self, slots) -> None:
        """Drop the keys of slots whose fill failed, so no chunk trusts them (``release`` still unpins)."""
        try:
            with self._lock:
                for s in np.asarray(slots).tolist():
                    self._unkey(s)
        finally:
            self._settle()

    def _settle(self) -> None:
        """Do the queued releases if the lock is free; never waits for it. Run after each locked section:
        a release queued by another thread while the section ran is done here, not left for later."""
        while self._later and self._lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._lock.release()

    def _drain(self) -> None:
        # under the lock, so this thread is the only one taking from the queue; a release that a
        # collection queues meanwhile is taken by the same loop
        while self._later:
            self._release(np.asarray(self._later.popleft(), np.int64))

    def _release(self, slots) -> None:
        if _unpin(self._pins, self._keyed, slots) and len(self._slot) <= self.max_slots:
            return  # the usual case: every idle slot stays cached for the next chunk
        idle = np.unique(slots[self._pins[slots] == 0])  # a slot listed twice is freed once
        for s in idle.tolist():
            if self._keyed[s] and len(self._slot) <= self.max_slots:
                continue
            self._unkey(s)
            self._free.append(s)

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
        # host slots from the process-wide reserve: a new reconstructor (one per pass, often) reuses pages
        # already faulted in instead of having the kernel zero hundreds of megabytes afresh (_buffer_pool)
        empty = host_empty if self.xp is np else self.xp.empty
        w8 = empty((self.w8.shape[0], n), self.xp.int64)
        w4 = empty((self.w4.shape[0], n), self.xp.int32)
        if self._cuda is not None:  # the copy reads every slot: after every stream's writes to them
            self._wait(np.arange(old))
        w8[:, :self.w8.shape[1]] = self.w8
        w4[:, :self.w4.shape[1]] = self.w4
        self.w8, self.w4 = w8, w4
        grow = new - old
        self._key += [None] * grow
        self._keyed = np.r_[self._keyed, np.zeros(grow, bool)]
        self._pins = np.r_[self._pins, np.zeros(grow, np.int64)]
        self._used = np.r_[self._used, np.zeros(grow, np.int64)]
        self._written = np.r_[self._written, np.zeros(grow, np.int64)]
        self._free += list(range(new - 1, old - 1, -1))
        if self._cuda is not None and old:  # every slot of the new arrays was written by this copy
            stream = self._cuda.get_current_stream()
            self._mark(np.arange(new), stream, self._record(stream))

    # ---- device ordering (CuPy only) ----------------------------------------------------------------
    def _record(self, stream):
        ev = self._cuda.Event(block=False, disable_timing=True, interprocess=False)
        ev.record(stream)
        return ev

    def _mark(self, slots, stream, ev) -> None:
        """``ev`` (recorded on ``stream``) is after the last write to ``slots``; events already complete
        are forgotten (one query each), so the table holds only what may still be running."""
        self._events = {k: v for k, v in self._events.items() if not v[1].done}
        self._n_events += 1
        self._events[self._n_events] = (stream.ptr, ev)
        self._written[slots] = self._n_events

    def _wait(self, slots) -> None:
        """The current stream waits for the last writes of ``slots`` queued on other streams."""
        if not self._events or not len(slots):
            return
        assert self._cuda is not None  # events are recorded only on a device
        stream = self._cuda.get_current_stream()
        for k in np.unique(self._written[slots]).tolist():
            got = self._events.get(k)
            if got is None or got[0] == stream.ptr:
                continue  # known complete, or queued before on this very stream
            if got[1].done:
                del self._events[k]  # complete: no stream need wait for it again
            else:
                stream.wait_event(got[1])
