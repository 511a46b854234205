"""Reads of the immutable tier at one pinned store version, with pushdown of users, rows and columns.

``ImmutableView`` opens a version's segment files and their per-user index once each and answers:

* ``user_runs``: per segment part holding some of the given users, the rows to read, cut to the seq range
  and the time window by the index alone (shared by every reader; reconstruction plans its arena reads
  from it, in ``engine.training._reads``);
* ``gather`` (fat rows, ``to_table``): a *user-major buffer*, the requested columns of the users' events
  copied together in ``seq`` order (segments concatenated in seal order), plus per-user offsets;
* ``user_counts``: each user's sealed event count (what thin rows are checked against).

Only the segments whose index holds a user are read, only the row groups that hold the needed rows, only
the named columns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .._ragged import offsets_of, range_indices
from . import _fs, _manifest, _segment_index, _segments
from ._group_cache import GroupCache


@dataclass
class UserBuffer:
    """Ragged events of ``users``: rows ``offsets[u]:offsets[u+1]`` of each column belong to user ``u``."""

    users: np.ndarray
    offsets: np.ndarray
    columns: dict  # name -> 1-D numpy array; always holds "seq"

    @property
    def num_events(self) -> int:
        return int(self.offsets[-1])


def _bounds(users, seq_lo, seq_hi) -> tuple:
    users = np.asarray(users, np.int64)
    seq_lo = np.zeros(len(users), np.int64) if seq_lo is None else np.asarray(seq_lo, np.int64)
    seq_hi = np.full(len(users), np.iinfo(np.int64).max, np.int64) if seq_hi is None else np.asarray(seq_hi)
    return users, seq_lo, seq_hi


class ImmutableView:
    """The immutable tier as of one manifest. Indexes load lazily and are kept."""

    def __init__(self, root, manifest: dict, schema, cache_bytes: int = 1 << 30):
        self.root = _fs.at(root)  # a local Path or a _fs.RemotePath (object storage): opened alike
        self.manifest = manifest
        self.schema = schema
        self.segments = manifest["segments"]
        self._idx: dict = {}
        self._pf: dict = {}
        self._open_lock = threading.Lock()
        self._opening: dict = {}  # (what, (segment, part)) -> the lock its first opening holds
        self._counts = None
        self.cache = GroupCache(cache_bytes)

    def clear_cache(self):
        """Forget decoded data and open files (a cold start, for measurements)."""
        self.cache.clear()
        self._pf.clear()

    def _cached_reader(self, s, part):
        """A PyArrow ``read_groups`` that serves decoded row groups from the cache and reads only the rest."""
        def read(pf, path, groups, columns, name):
            key = lambda g, c: (s, part, g, c)
            missing = [g for g in groups if any(self.cache.get(key(g, c)) is None for c in columns)]
            if missing:
                got = _segments.read_groups_arrow(pf, path, missing, columns, name)
                bounds = offsets_of(_segments.row_group_rows(pf)[missing])
                for i, g in enumerate(missing):
                    for c in columns:
                        self.cache.put(key(g, c), got[c][bounds[i]:bounds[i + 1]])
                if len(missing) == len(groups) or self.cache.budget <= 0:
                    return got
            return {c: np.concatenate([self.cache.get(key(g, c)) for g in groups]) for c in columns}
        return read

    def _opened(self, cache: dict, s: int, part: str, load, what: str):
        """``load(root, part_entry)`` once per segment part; a file gone since the manifest was read
        (retention) becomes the typed error readers retry on."""
        key = (s, part)
        got = cache.get(key)
        if got is None:
            with self._open_lock:  # the planning and decoding threads may both ask first: open it once,
                lock = self._opening.setdefault((what, key), threading.Lock())  # other files meanwhile
            with lock:
                got = cache.get(key)
                if got is None:
                    try:
                        got = cache[key] = load(self.root, self.segments[s][part])
                    except FileNotFoundError as e:
                        raise _manifest.gone(self.root, self.manifest["version"], e.filename, what) from None
        return got

    def index(self, s: int, part: str) -> dict:
        return self._opened(self._idx, s, part, _segment_index.load, "segment index")

    def parquet(self, s: int, part: str):
        return self._opened(self._pf, s, part, _segments.open_parquet, "segment")

    def user_counts(self):
        """(users, sealed event count) for every user with sealed events, users sorted."""
        if self._counts is None:
            if not self.segments:
                self._counts = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                idx = [self.index(s, "main") for s in range(len(self.segments))]
                u = np.concatenate([i["user_id"] for i in idx])
                end = np.concatenate([i["seq_start"] + i["row_count"] for i in idx])
                order = np.lexsort((end, u))
                u, end = u[order], end[order]
                last = np.r_[u[1:] != u[:-1], True] if len(u) else np.zeros(0, bool)
                self._counts = (u[last], end[last])
        return self._counts

    def user_runs(self, users, seq_lo=None, seq_hi=None, ts_min=None, rare_types=None, last=None):
        """Per segment (seal order) holding some of sorted unique ``users``: ``(s, part, ranks, r0, cnt,
        q0)``, the rows ``[r0, r0 + cnt)`` of each user ``users[ranks]`` to read, their first seqs ``q0``
        (dense in the main part), cut to ``seq_lo[u] <= seq < seq_hi[u]`` (exact in main parts; a sidecar's
        rows may hold newer seqs) and to the time window (``ts_min[u]``: segments whose newest event of
        ``u`` is older are skipped) by the index alone, before any I/O. ``rare_types``: when every wanted
        event type is in a segment's sidecar, that sidecar is the part read. ``last = (hw, n)`` (with
        ``rare_types`` and no window): each user needs only its events back to the ``n``-th last one of those
        types below ``hw[u]`` (its examples' smallest sealed count), so rows are cut by the index's
        event-type counts where it has them."""
        users, seq_lo, seq_hi = _bounds(users, seq_lo, seq_hi)
        if last is not None and rare_types is not None and ts_min is None:
            yield from self._typed_runs(users, seq_hi, rare_types, *last)
            return
        for s, seg in enumerate(self.segments):
            part = _segments.part_for(seg, rare_types)
            idx = self.index(s, part)
            if not len(idx["user_id"]):
                continue
            ranks, r0, cnt, q0 = _segment_index.select_runs(idx, users, seq_lo, seq_hi, ts_min, part == "main")
            if len(ranks):
                yield s, part, ranks, r0, cnt, q0

    def _typed_runs(self, users, seq_hi, types, hw, n: int):
        """``user_runs`` cut to each user's events back to its ``n``-th last one of ``types`` below ``hw[u]``:
        segments newest first, each lowering what the older ones must still supply; yielded in seal order."""
        need = np.full(len(users), n, np.int64)  # lowered segment by segment
        hw = np.asarray(hw, np.int64)
        out = []
        for s in range(len(self.segments) - 1, -1, -1):
            part = _segments.part_for(self.segments[s], types)
            idx = self.index(s, part)
            if not len(idx["user_id"]):
                continue
            if _segment_index.typed(idx):
                got = _segment_index.select_typed(idx, users, hw, seq_hi, need, types)
            else:  # an index without type counts: the users' whole runs, and nothing known to count
                got = _segment_index.select_runs(idx, users, np.zeros(len(users), np.int64), seq_hi, None,
                                                 part == "main")
                got = tuple(g[need[got[0]] > 0] for g in got)
            if len(got[0]):
                out.append((s, part, *got))
        yield from reversed(out)

    def gather(self, users: np.ndarray, columns: list, seq_lo=None, seq_hi=None, ts_min=None,
               rare_types=None) -> UserBuffer:
        """Events of sorted unique ``users`` with ``seq_lo[u] <= seq < seq_hi[u]``, as host arrays (fat rows,
        ``to_table`` and report floors; reconstruction reads into its arena instead: ``engine.training._reads``).

        ``ts_min[u]``: segments whose newest event of ``u`` is older are skipped (time-window pushdown).
        ``rare_types``: when every wanted event type is in a segment's sidecar, read the sidecar instead.
        """
        users, seq_lo, seq_hi = _bounds(users, seq_lo, seq_hi)
        n_u = len(users)
        want = [c for c in columns if c != "seq"]
        pieces = []  # (user rank per row, columns) per segment, in seal order
        for s, part, ranks, r0, cnt, q0 in self.user_runs(users, seq_lo, seq_hi, ts_min, rare_types):
            seg = self.segments[s]
            rows = range_indices(r0, cnt)
            if not len(rows):
                continue
            name = str(self.root / seg[part]["file"])
            got = _segments.read_rows(self.parquet(s, part), want + (["seq"] if part != "main" else []),
                                      rows, name, self._cached_reader(s, part))
            rank = np.repeat(ranks, cnt)
            if part == "main":
                got["seq"] = range_indices(q0, cnt)
            else:  # sparse seqs: filter after reading
                keep = (got["seq"] >= seq_lo[rank]) & (got["seq"] < seq_hi[rank])
                got = {c: v[keep] for c, v in got.items()}
                rank = rank[keep]
            pieces.append((rank, got))
        cols = ["seq", *want]
        if not pieces:
            empty = {c: np.zeros(0, self.schema.dtype(c)) for c in cols}
            return UserBuffer(users, np.zeros(n_u + 1, np.int64), empty)
        rank = np.concatenate([p[0] for p in pieces])
        data = {c: np.concatenate([p[1][c] for p in pieces]) for c in cols}
        if len(pieces) > 1:  # stable: keeps seal order (= seq order) within each user
            order = np.argsort(rank, kind="stable")
            rank = rank[order]
            data = {c: v[order] for c, v in data.items()}
        return UserBuffer(users, offsets_of(np.bincount(rank, minlength=n_u)), data)
