"""Reads of the immutable tier at one pinned store version, with pushdown of users, rows and columns.

``gather`` returns a *user-major buffer*: for a sorted set of users, the requested columns of their
events in ``seq`` order (segments concatenated in seal order), plus per-user offsets. It reads only the
segments whose index holds a user, only the row groups that hold the needed rows, only the named columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._ragged import find, offsets_of, range_indices
from . import _manifest, _segment_index, _segments
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


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


class ImmutableView:
    """The immutable tier as of one manifest. Indexes load lazily and are kept."""

    def __init__(self, root: Path, manifest: dict, schema, cache_bytes: int = 1 << 30):
        self.root = Path(root)
        self.manifest = manifest
        self.schema = schema
        self.segments = manifest["segments"]
        self._idx = {}
        self._pf = {}
        self._counts = None
        self.cache = GroupCache(cache_bytes)

    def clear_cache(self):
        """Forget decoded data and open files (a cold start, for measurements)."""
        self.cache.clear()
        self._pf.clear()

    def _cached_reader(self, s, part, read_groups, xp):
        """``read_groups`` that serves decoded row groups from the cache and reads only the rest."""
        def read(pf, path, groups, columns, name):
            key = lambda g, c: (s, part, g, c, xp.__name__)  # a CPU and a CUDA reader may share a view
            missing = [g for g in groups if any(self.cache.get(key(g, c)) is None for c in columns)]
            if missing:
                got = read_groups(pf, path, missing, columns, name)
                md = pf.metadata
                bounds = np.r_[0, np.cumsum([md.row_group(g).num_rows for g in missing])]
                for i, g in enumerate(missing):
                    for c in columns:
                        self.cache.put(key(g, c), got[c][bounds[i]:bounds[i + 1]])
                if len(missing) == len(groups) or self.cache.budget <= 0:
                    return got
            return {c: xp.concatenate([self.cache.get(key(g, c)) for g in groups]) for c in columns}
        return read

    def index(self, s: int, part: str) -> dict:
        key = (s, part)
        if key not in self._idx:
            try:
                self._idx[key] = _segment_index.load(self.root, self.segments[s][part])
            except FileNotFoundError as e:
                raise _manifest.gone(self.root, self.manifest["version"], e.filename, "segment index") from None
        return self._idx[key]

    def parquet(self, s: int, part: str):
        key = (s, part)
        if key not in self._pf:
            try:
                self._pf[key] = _segments.open_parquet(self.root, self.segments[s][part])
            except FileNotFoundError as e:
                raise _manifest.gone(self.root, self.manifest["version"], e.filename, "segment") from None
        return self._pf[key]

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

    def gather(self, users: np.ndarray, columns: list, seq_lo=None, seq_hi=None, ts_min=None,
               rare_types=None, backend=None, all_groups=False) -> UserBuffer:
        """Events of sorted unique ``users`` with ``seq_lo[u] <= seq < seq_hi[u]``.

        ``ts_min[u]``: segments whose newest event of ``u`` is older are skipped (time-window pushdown).
        ``rare_types``: when every wanted event type is in a segment's sidecar, read the smallest such one.
        ``backend``: where the columns land (``engine.training._backends``); default numpy via PyArrow.
        """
        xp = np if backend is None else backend.xp
        read_groups = _segments.read_groups_arrow if backend is None else backend.read_groups
        users = np.asarray(users, np.int64)
        n_u = len(users)
        seq_lo = np.zeros(n_u, np.int64) if seq_lo is None else np.asarray(seq_lo, np.int64)
        seq_hi = np.full(n_u, np.iinfo(np.int64).max, np.int64) if seq_hi is None else np.asarray(seq_hi)
        want = [c for c in columns if c != "seq"]
        pieces = []  # (user rank per row, columns) per segment, in seal order
        for s, seg in enumerate(self.segments):
            part = _segments.part_for(seg, rare_types)
            idx = self.index(s, part)
            if not len(idx["user_id"]):
                continue
            kc, has = find(idx["user_id"], users)
            if ts_min is not None:
                has &= idx["ts_max"][kc] >= ts_min
            ranks = np.flatnonzero(has)
            if not len(ranks):
                continue
            j = kc[ranks]
            r0, cnt, q0 = idx["row_start"][j], idx["row_count"][j], idx["seq_start"][j]
            if ts_min is not None:  # skip leading strides that hold only events older than the window
                skip = _segment_index.window_skip(idx, j, ts_min[ranks])
                r0, cnt = r0 + skip, cnt - skip
                if part == "main":
                    q0 = q0 + skip
            if part == "main":  # seqs are dense inside a user's run: cut by arithmetic before reading
                lo = np.clip(seq_lo[ranks] - q0, 0, cnt)
                hi = np.clip(seq_hi[ranks] - q0, 0, cnt)
                r0, q0, cnt = r0 + lo, q0 + lo, np.maximum(hi - lo, 0)
            rows = range_indices(r0, cnt)
            if not len(rows):
                continue
            name = str(self.root / seg[part]["file"])
            got = _segments.read_rows(self.parquet(s, part), want + (["seq"] if part != "main" else []),
                                      rows, name, self._cached_reader(s, part, read_groups, xp), xp, all_groups)
            rank = np.repeat(ranks, cnt)
            if part == "main":
                got["seq"] = xp.asarray(range_indices(q0, cnt))
            else:  # sparse seqs: filter after reading
                seq = _host(got["seq"])
                keep = (seq >= seq_lo[rank]) & (seq < seq_hi[rank])
                dkeep = xp.asarray(keep)
                got = {c: v[dkeep] for c, v in got.items()}
                rank = rank[keep]
            pieces.append((rank, got))
        cols = ["seq", *want]
        if not pieces:
            empty = {c: xp.zeros(0, self.schema.dtype(c)) for c in cols}
            return UserBuffer(users, np.zeros(n_u + 1, np.int64), empty)
        rank = np.concatenate([p[0] for p in pieces])
        data = {c: xp.concatenate([p[1][c] for p in pieces]) for c in cols}
        if len(pieces) > 1:  # stable: keeps seal order (= seq order) within each user
            order = np.argsort(rank, kind="stable")
            rank = rank[order]
            d_order = xp.asarray(order)
            data = {c: v[d_order] for c, v in data.items()}
        return UserBuffer(users, offsets_of(np.bincount(rank, minlength=n_u)), data)
