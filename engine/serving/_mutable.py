"""The in-memory image of the mutable tier, rebuilt from the log on open.

Rows are kept sorted by ``(user_id, seq)``. Because seal always takes a per-user prefix, each user's
mutable seqs are a dense run ``[imm_count, next_seq)``, so an event is found by arithmetic, not search.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from .._ragged import find, group_starts, lookup


@njit(cache=True)
def _take_seqs(slot, nxt):
    """seq of each event = its user's next seq, advanced in input order (one pass, no sort)."""
    out = np.empty(len(slot), np.int64)
    for i in range(len(slot)):
        out[i] = nxt[slot[i]]
        nxt[slot[i]] += 1
    return out


@njit(cache=True)
def _slot_order(slot, n_slots):
    """Rows in slot order, input order within a slot: a counting sort, O(rows + slots). With slots into
    sorted users and seqs assigned in input order, that is (user_id, seq) order."""
    start = np.zeros(n_slots + 1, np.int64)
    for i in range(len(slot)):
        start[slot[i] + 1] += 1
    for k in range(n_slots):
        start[k + 1] += start[k]
    out = np.empty(len(slot), np.int64)
    for i in range(len(slot)):
        out[start[slot[i]]] = i
        start[slot[i]] += 1
    return out


def _slots(users: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """Position of each uid in ``users`` or -1; a hash probe, several times faster than searchsorted."""
    idx = pc.index_in(uid, value_set=pa.array(users))
    return idx.fill_null(-1).to_numpy().astype(np.int64)


class SeqCounter:
    """Next seq per user, as sorted parallel arrays, updated without re-sorting the mutable tier."""

    def __init__(self, users: np.ndarray, next_seq: np.ndarray):
        self.users, self.next = users, next_seq

    def assign(self, uid: np.ndarray) -> tuple:
        """(seqs for a batch of events (input order within a user), the rows' (user_id, seq) order);
        ``commit`` makes the seqs count."""
        users, nxt = self.users, self.next
        slot = _slots(users, uid)
        if (slot < 0).any():
            users = np.union1d(users, uid[slot < 0])
            nxt = lookup(self.users, self.next, users)
            slot = _slots(users, uid)
        nxt = nxt.copy()
        seq = _take_seqs(slot, nxt)
        self._pending = (users, nxt)
        return seq, _slot_order(slot, len(users))

    def commit(self) -> None:
        """Apply the counters of the last ``assign`` (call once the batch is durable)."""
        self.users, self.next = self._pending


class MutableTier:
    def __init__(self, columns: list, dtypes: dict):
        self.columns = columns  # user_id, seq, ts, declared...
        self.dtypes = dtypes
        self.data = {c: np.zeros(0, dtypes[c]) for c in columns}
        self._pending: list = []
        self._users = None  # cached per-user runs of the sorted data

    def __len__(self):
        return len(self.sorted()["user_id"])

    def add(self, rows: dict) -> None:
        self._pending.append(rows)
        self._users = None

    def sorted(self) -> dict:
        if self._pending:
            merged = {c: np.concatenate([self.data[c], *(p[c] for p in self._pending)]) for c in self.columns}
            order = np.lexsort((merged["seq"], merged["user_id"]))
            self.data = {c: merged[c][order] for c in self.columns}
            self._pending = []
        return self.data

    def runs(self):
        """(users, starts, counts, first_seq) of the sorted data, one entry per user."""
        if self._users is None:
            d = self.sorted()
            starts = group_starts(d["user_id"])
            counts = np.diff(np.r_[starts, len(d["user_id"])]).astype(np.int64)
            self._users = (d["user_id"][starts], starts.astype(np.int64), counts, d["seq"][starts])
        return self._users

    def positions(self, user_id: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Row of each (user, seq) in the sorted data, or -1 where it is not a mutable event."""
        users, starts, counts, first = self.runs()
        if not len(users):
            return np.full(len(user_id), -1, np.int64)
        k, found = find(users, user_id)
        off = seq - first[k]
        ok = found & (off >= 0) & (off < counts[k])
        return np.where(ok, starts[k] + off, -1)

    def set(self, pos: np.ndarray, values: dict) -> None:
        d = self.sorted()
        for c, v in values.items():
            d[c][pos] = v

    def split(self, keep: np.ndarray):
        """(kept, removed) row dicts of the sorted data; ``keep`` is a boolean mask."""
        d = self.sorted()
        return {c: d[c][keep] for c in self.columns}, {c: d[c][~keep] for c in self.columns}

    def replace(self, rows: dict) -> None:
        self.data = {c: rows[c] for c in self.columns}
        self._pending = []
        self._users = None
