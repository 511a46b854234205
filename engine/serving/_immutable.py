"""Reads of the immutable tier at one pinned store version, with pushdown of users, rows and columns.

Two reads share the index arithmetic (``_user_runs``) and read only the segments whose index holds a
user, only the row groups that hold the needed rows, only the named columns:

* ``runs`` (reconstruction): each user's events as runs of a ``GroupArena``, decoded row groups left
  where they were decoded; per call, work is per user, segment and block, never per event;
* ``gather`` (fat rows, ``to_table``): a *user-major buffer*, the requested columns of the users' events
  copied together in ``seq`` order (segments concatenated in seal order), plus per-user offsets.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
from numba import njit

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


@dataclass
class RunSet:
    """Events of ``users`` as runs of a ``GroupArena`` (see ``kernels.Runs``): run ``j`` holds arena
    positions ``pos[j] + k`` for ``k < start[j+1] - start[j]`` with seqs ``seq0[j] + k`` (or, where
    ``seq0[j] < 0``, read from the arena's seq lane); user ``u`` owns runs ``user_runs[u]:user_runs[u+1]``,
    in seq order. ``w8``/``w4`` are the arena arrays the runs point into; ``slots`` stay pinned until
    the arena releases them."""

    start: np.ndarray
    pos: np.ndarray
    seq0: np.ndarray
    user_runs: np.ndarray
    w8: object
    w4: object
    slots: np.ndarray

    @property
    def num_events(self) -> int:
        return int(self.start[-1])


_FILE_KEYS: dict = {}
_FILE_KEYS_LOCK = threading.Lock()


def _file_key(file: str) -> int:
    """The arena key base of a segment file: its blocks' keys are ``base + block``. Integer keys, because
    every chunk looks up each block it reads, and ints hash faster than ``(file, block)`` tuples."""
    k = _FILE_KEYS.get(file)
    if k is None:
        with _FILE_KEYS_LOCK:
            k = _FILE_KEYS.setdefault(file, len(_FILE_KEYS) << 32)
    return k


def _bounds(users, seq_lo, seq_hi) -> tuple:
    users = np.asarray(users, np.int64)
    seq_lo = np.zeros(len(users), np.int64) if seq_lo is None else np.asarray(seq_lo, np.int64)
    seq_hi = np.full(len(users), np.iinfo(np.int64).max, np.int64) if seq_hi is None else np.asarray(seq_hi)
    return users, seq_lo, seq_hi


@njit(cache=True, nogil=True)
def cut_at_blocks(bstart, r0, cnt):
    """The row ranges ``[r0[i], r0[i] + cnt[i])`` cut where arena blocks start (``bstart``: sorted block
    starts, then the row count), ranges with ``cnt <= 0`` dropped: per piece its range ``i``, block, first
    row and row count, in range order; then the distinct blocks, increasing, and each piece's index among
    them. One compiled pass over the ranges and pieces instead of a dozen NumPy calls: this is per-call
    overhead on every chunk, not per event."""
    n = len(r0)
    b0 = np.empty(n, np.int64)
    nb = np.zeros(n, np.int64)
    total = 0
    for i in range(n):
        if cnt[i] > 0:
            b0[i] = np.searchsorted(bstart, r0[i], side="right") - 1
            nb[i] = np.searchsorted(bstart, r0[i] + cnt[i] - 1, side="right") - b0[i]
            total += nb[i]
    run = np.empty(total, np.int64)
    blk = np.empty(total, np.int64)
    lo = np.empty(total, np.int64)
    num = np.empty(total, np.int64)
    k = 0
    for i in range(n):
        for b in range(b0[i], b0[i] + nb[i]):
            first = max(r0[i], bstart[b])
            run[k], blk[k], lo[k], num[k] = i, b, first, min(r0[i] + cnt[i], bstart[b + 1]) - first
            k += 1
    need = np.unique(blk)
    return run, blk, lo, num, need, np.searchsorted(need, blk)


@njit(cache=True, nogil=True)
def place_pieces(slots, which, blk, lo, run, bstart, ranks, r0, q0, slot_rows, dense):
    """Per piece of ``cut_at_blocks``, once its blocks have ``slots``: its user's rank, its arena position
    and its first seq (dense seqs of a main part; -1 where they are sparse and read from the seq lane).
    One compiled pass instead of ten NumPy calls per segment of every chunk."""
    n = len(run)
    rank, pos, seq0 = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        r = run[i]
        rank[i] = ranks[r]
        pos[i] = slots[which[i]] * slot_rows + (lo[i] - bstart[blk[i]])
        seq0[i] = q0[r] + (lo[i] - r0[r]) if dense else -1
    return rank, pos, seq0


@njit(cache=True, nogil=True)
def place_runs(slots, which, blk, lo, run, bstart, ranks, r0, q0, slot_rows, dense, num, users):
    """``place_pieces`` (same arguments) then ``run_offsets`` of the pieces' counts ``num`` in one pass, for
    the pieces of one part (already in user order): ``(start, pos, seq0, user_runs)``. A chunk's users
    usually sit in one segment, so this is the usual path: one compiled call where there were two."""
    n = len(run)
    pos, seq0 = np.empty(n, np.int64), np.empty(n, np.int64)
    start = np.zeros(n + 1, np.int64)
    per = np.zeros(users + 1, np.int64)
    for i in range(n):
        r = run[i]
        pos[i] = slots[which[i]] * slot_rows + (lo[i] - bstart[blk[i]])
        seq0[i] = q0[r] + (lo[i] - r0[r]) if dense else -1
        start[i + 1] = start[i] + num[i]
        per[ranks[r] + 1] += 1
    for u in range(users):
        per[u + 1] += per[u]
    return start, pos, seq0, per


@njit(cache=True, nogil=True)
def run_offsets(count, rank, users):
    """``(start, user_runs)`` of runs of ``count`` events owned by users ``rank`` (sorted): the runs'
    offsets, and each of ``users`` users' first run."""
    start = np.zeros(len(count) + 1, np.int64)
    per = np.zeros(users + 1, np.int64)
    for j in range(len(count)):
        start[j + 1] = start[j] + count[j]
        per[rank[j] + 1] += 1
    for u in range(users):
        per[u + 1] += per[u]
    return start, per


def put_blocks(words, lane, col, dst, src, n):
    """``words[lane, dst[i]:dst[i] + n[i]] = col[src[i]:src[i] + n[i]]`` for each block (host arrays)."""
    for d, a, k in zip(dst.tolist(), src.tolist(), n.tolist()):
        words[lane, d:d + k] = col[a:a + k]


class ImmutableView:
    """The immutable tier as of one manifest. Indexes load lazily and are kept."""

    def __init__(self, root, manifest: dict, schema, cache_bytes: int = 1 << 30):
        self.root = _fs.at(root)  # a local Path or a _fs.RemotePath (object storage): opened alike
        self.manifest = manifest
        self.schema = schema
        self.segments = manifest["segments"]
        self._idx = {}
        self._pf = {}
        self._blocks = {}
        self._ranges = {}
        self._open_lock = threading.Lock()
        self._opening = {}  # (what, (segment, part)) -> the lock its first opening holds
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

    def _user_runs(self, users, seq_lo, seq_hi, ts_min, rare_types):
        """Per segment (seal order) holding some of ``users``: ``(s, part, ranks, r0, cnt, q0)``, the rows
        ``[r0, r0 + cnt)`` of each user ``users[ranks]`` to read, their first seqs ``q0`` (dense in the
        main part), cut to the seq range and the time window by the index alone, before any I/O."""
        for s, seg in enumerate(self.segments):
            part = _segments.part_for(seg, rare_types)
            idx = self.index(s, part)
            if not len(idx["user_id"]):
                continue
            ranks, r0, cnt, q0 = _segment_index.select_runs(idx, users, seq_lo, seq_hi, ts_min, part == "main")
            if len(ranks):
                yield s, part, ranks, r0, cnt, q0

    def blocks(self, s: int, part: str, slot_rows: int) -> tuple:
        """``(start, group)``: the file rows where each arena block of a part begins (plus the row count
        at the end) and the row group holding it; a block is at most ``slot_rows`` rows of one group."""
        key = (s, part, slot_rows)
        if key not in self._blocks:
            rg = _segments.row_group_rows(self.parquet(s, part))
            rg_start = offsets_of(rg)
            per = np.maximum(-(-rg // slot_rows), 1)
            group = np.repeat(np.arange(len(rg)), per)
            start = rg_start[group] + range_indices(np.zeros(len(rg), np.int64), per) * slot_rows
            self._blocks[key] = (np.r_[start, rg.sum()].astype(np.int64), group, rg_start)
        return self._blocks[key]

    def _chunk_ranges(self, s: int, part: str) -> tuple:
        """``(names, start, size)``: each column chunk's first byte and compressed bytes, ``[groups, columns]``,
        from the footer (dictionary page included), once per part."""
        key = (s, part)
        if key not in self._ranges:
            md = self.parquet(s, part).metadata
            start = np.zeros((md.num_row_groups, md.num_columns), np.int64)
            size = np.zeros_like(start)
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for j in range(md.num_columns):
                    cc = rg.column(j)
                    start[g, j] = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
                    size[g, j] = cc.total_compressed_size
            self._ranges[key] = ([md.schema.column(j).name for j in range(md.num_columns)], start, size)
        return self._ranges[key]

    def will_need(self, users, read_columns: list, seq_lo=None, seq_hi=None, ts_min=None, rare_types=None,
                  all_groups=False, arena=None) -> int:
        """Ask the OS to start reading the bytes a ``runs`` call with the same arguments will decode, and
        return at once (``posix_fadvise(WILLNEED)``): called a chunk ahead, the reads overlap the decoding
        of earlier chunks instead of stalling it. Only the ``read_columns`` chunks of the row groups holding
        needed rows are asked for, ranges merged only where they touch, so nothing beyond what ``runs``
        reads is fetched; given the ``arena`` it will fill, only the groups of blocks it lacks, found as
        ``runs`` finds them. Local stores only (object storage is read in coalesced ranged requests
        instead). Returns the bytes asked for."""
        if _fs.is_remote(self.root) or not hasattr(os, "posix_fadvise"):
            return 0
        users, seq_lo, seq_hi = _bounds(users, seq_lo, seq_hi)
        total = 0
        for s, part, _, r0, cnt, _ in self._user_runs(users, seq_lo, seq_hi, ts_min, rare_types):
            file = self.segments[s][part]["file"]
            if arena is not None:  # the blocks ``runs`` will find missing, as it finds them
                bstart, bgroup, _ = self.blocks(s, part, arena.slot_rows)
                need = np.arange(len(bgroup)) if all_groups else cut_at_blocks(bstart, r0, cnt)[4]
                groups = np.unique(bgroup[need[~arena.holds((need + _file_key(file)).tolist())]])
            else:  # the row groups holding needed rows
                rows = _segments.row_group_rows(self.parquet(s, part))
                groups = np.arange(len(rows)) if all_groups else cut_at_blocks(offsets_of(rows), r0, cnt)[4]
            if not len(groups):
                continue
            names, start, size = self._chunk_ranges(s, part)
            cols = [names.index(c) for c in read_columns if c in names]
            lo, n = start[groups][:, cols].ravel(), size[groups][:, cols].ravel()
            order = np.argsort(lo, kind="stable")
            lo, hi = lo[order], lo[order] + n[order]
            # merge ranges that touch or overlap: one request per contiguous run of column chunks
            new = np.r_[True, lo[1:] > np.maximum.accumulate(hi)[:-1]]
            first = np.flatnonzero(new)
            los, his = lo[first], np.maximum.reduceat(hi, first)
            try:  # advice only: a file that cannot be opened here fails typed when it is read
                fd = os.open(str(self.root / file), os.O_RDONLY)
            except OSError:
                continue
            try:
                for a, b in zip(los.tolist(), his.tolist()):
                    os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
            total += int((his - los).sum())
        return total

    def runs(self, users, arena, lanes: tuple, read_columns: list, seq_lo=None, seq_hi=None, ts_min=None,
             rare_types=None, read_groups=None, put=None, all_groups=False) -> RunSet:
        """Events of sorted unique ``users`` with ``seq_lo[u] <= seq < seq_hi[u]`` (the upper cut is exact
        in main parts; sidecar runs may hold newer seqs, which the slicing kernel cuts), as runs of
        ``arena`` (a ``GroupArena`` whose lanes hold the columns ``lanes = (names8, names4)``).

        Work here is per user, segment and arena block, never per event: runs come from the segment
        index by arithmetic, blocks already in the arena are not read again, missing ones are decoded
        (``read_columns`` of their row groups, ``read_groups`` as in ``gather``) into their slots, each
        block copied once by ``put(words, lane, column, dst, src, n)`` (host slices by default; a device
        backend passes its own, which may copy asynchronously).
        """
        read_groups = read_groups or _segments.read_groups_arrow
        put = put or put_blocks
        users, seq_lo, seq_hi = _bounds(users, seq_lo, seq_hi)
        R = arena.slot_rows
        pieces, pinned = [], []
        try:
            for s, part, ranks, r0, cnt, q0 in self._user_runs(users, seq_lo, seq_hi, ts_min, rare_types):
                bstart, bgroup, rg_start = self.blocks(s, part, R)
                # one piece per (run, block); every run has rows (``_user_runs`` yields only those)
                run, blk, lo, num, need, which = cut_at_blocks(bstart, r0, cnt)
                if all_groups:
                    need, which = np.arange(len(bgroup)), blk
                file = self.segments[s][part]["file"]
                slots, missing = arena.acquire((need + _file_key(file)).tolist())
                pinned.append(slots)
                if missing:
                    self._fill(arena, s, part, need[missing], slots[missing], lanes, read_columns, read_groups, put)
                pieces.append(((slots, which, blk, lo, run, bstart, ranks, r0, q0, R, part == "main"), num))
            return self._placed(pieces, pinned, len(users), arena)
        except BaseException:
            for p in pinned:
                arena.release(p)
            raise

    @staticmethod
    def _placed(pieces: list, pinned: list, users: int, arena) -> RunSet:
        """The ``RunSet`` of each part's pinned, filled pieces (``runs``): ``(place_pieces' arguments,
        counts)`` per part."""
        if len(pieces) == 1:  # one part: placed in user order as they are
            args, num = pieces[0]
            start, pos, seq0, user_runs = place_runs(*args, num, users)
            return RunSet(start, pos, seq0, user_runs, arena.w8, arena.w4, pinned[0])
        slots = np.concatenate(pinned) if pinned else np.zeros(0, np.int64)
        if not pieces:
            z = np.zeros(0, np.int64)
            return RunSet(np.zeros(1, np.int64), z, z, np.zeros(users + 1, np.int64), arena.w8, arena.w4, slots)
        placed = [(*place_pieces(*args), num) for args, num in pieces]  # (rank, pos, seq0, count) per part
        # stable: keeps seal order (= seq order) within each user
        rank, pos, seq0, count = (np.concatenate(c) for c in zip(*placed))
        order = np.argsort(rank, kind="stable")
        rank, pos, count, seq0 = rank[order], pos[order], count[order], seq0[order]
        start, user_runs = run_offsets(count, rank, users)
        return RunSet(start, pos, seq0, user_runs, arena.w8, arena.w4, slots)

    def _fill(self, arena, s, part, blocks, slots, lanes, read_columns, read_groups, put):
        """Decode the row groups holding ``blocks`` and copy each block into its arena slot."""
        bstart, bgroup, rg_start = self.blocks(s, part, arena.slot_rows)
        groups = np.unique(bgroup[blocks])
        name = str(self.root / self.segments[s][part]["file"])
        try:
            got = read_groups(self.parquet(s, part), name, groups.tolist(), read_columns, name)
            local = offsets_of(rg_start[groups + 1] - rg_start[groups])  # group starts in ``got``
            at = local[np.searchsorted(groups, bgroup[blocks])] + bstart[blocks] - rg_start[bgroup[blocks]]
            n = bstart[blocks + 1] - bstart[blocks]
            for words, names in ((arena.w8, lanes[0]), (arena.w4, lanes[1])):
                for lane, c in enumerate(names):
                    put(words, lane, got[c].view(words.dtype), slots * arena.slot_rows, at, n)
            arena.filled(slots)  # on a device: readers on other streams wait for these copies
        except BaseException:
            arena.forget(slots)
            raise

    def gather(self, users: np.ndarray, columns: list, seq_lo=None, seq_hi=None, ts_min=None,
               rare_types=None) -> UserBuffer:
        """Events of sorted unique ``users`` with ``seq_lo[u] <= seq < seq_hi[u]``, as host arrays (fat rows,
        ``to_table`` and report floors; reconstruction reads through ``runs``).

        ``ts_min[u]``: segments whose newest event of ``u`` is older are skipped (time-window pushdown).
        ``rare_types``: when every wanted event type is in a segment's sidecar, read the sidecar instead.
        """
        users, seq_lo, seq_hi = _bounds(users, seq_lo, seq_hi)
        n_u = len(users)
        want = [c for c in columns if c != "seq"]
        pieces = []  # (user rank per row, columns) per segment, in seal order
        for s, part, ranks, r0, cnt, q0 in self._user_runs(users, seq_lo, seq_hi, ts_min, rare_types):
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
