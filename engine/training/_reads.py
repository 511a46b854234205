"""Reconstruction's reads of the immutable tier: each user's events as runs of a ``GroupArena``.

A chunk is read in two steps, each its own thread when prefetching:

* ``plan`` (the planning thread): from the segment index alone, per segment part holding some of the
  chunk's users, the row ranges to read and their cuts at arena blocks; ``will_need`` then asks the OS
  for the column chunks of the blocks the arena lacks, so the I/O overlaps earlier chunks' decoding;
* ``runs`` (the decoding thread): pins the planned blocks' slots, decodes the missing ones' row groups
  into them (through the backend's ``read_groups`` and ``put``) and places the runs.

The plan is computed once per chunk and carried from one step to the other, so the advice and the
decoding read exactly the same blocks. Work here is per user, segment part and arena block, never per
event. The store's side (``ImmutableView``) answers index lookups and opens files; what reconstruction
derives from them (block layouts, column chunk byte ranges) is kept here, per view.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from .._errors import InvalidArgument
from .._ragged import offsets_of, range_indices
from ..serving import _fs, _segments


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


class PartRead(NamedTuple):
    """One segment part's share of a chunk: its users' row ranges cut at arena blocks (``cut_at_blocks``)."""

    s: int  # the segment (seal order)
    part: str  # "main" or a sidecar
    file: str  # the part's file, relative to the store root
    key: int  # the arena key of its block 0 (``_file_key``)
    ranks: np.ndarray  # per range: its user's rank in the chunk's users
    r0: np.ndarray  # per range: its first file row
    q0: np.ndarray  # per range: its first seq (dense in main parts)
    dense: bool  # seqs are dense (main part): run seqs are computed, not read
    bstart: np.ndarray  # the part's block layout (``_blocks``)
    bgroup: np.ndarray
    rg_start: np.ndarray
    run: np.ndarray  # per piece (a range's share of one block): its range, block, first row and row count
    blk: np.ndarray
    lo: np.ndarray
    num: np.ndarray
    need: np.ndarray  # the blocks to pin (increasing), and each piece's index among them
    which: np.ndarray


class ChunkReads(NamedTuple):
    """What a chunk reads: ``parts`` in seal order, for ``users`` users, in blocks of ``slot_rows`` rows."""

    users: int
    slot_rows: int
    parts: list


_FILE_KEYS: dict = {}
_FILE_KEYS_LOCK = threading.Lock()
# per view, what reconstruction derives from its files: freed with the view (a store version no longer read)
_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _file_key(file: str) -> int:
    """The arena key base of a segment file: its blocks' keys are ``base + block``. Integer keys, because
    every chunk looks up each block it reads, and ints hash faster than ``(file, block)`` tuples."""
    k = _FILE_KEYS.get(file)
    if k is None:
        with _FILE_KEYS_LOCK:
            k = _FILE_KEYS.setdefault(file, len(_FILE_KEYS) << 32)
    return k


def _blocks(view, s: int, part: str, slot_rows: int) -> tuple:
    """``(start, group, rg_start)``: the file rows where each arena block of a part begins (plus the row
    count at the end), the row group holding it, and each row group's first row; a block is at most
    ``slot_rows`` rows of one group."""
    cache, key = _DERIVED.get(view) or _DERIVED.setdefault(view, {}), ("blocks", s, part, slot_rows)
    got = cache.get(key)
    if got is None:
        rg = _segments.row_group_rows(view.parquet(s, part))
        rg_start = offsets_of(rg)
        per = np.maximum(-(-rg // slot_rows), 1)
        group = np.repeat(np.arange(len(rg)), per)
        start = rg_start[group] + range_indices(np.zeros(len(rg), np.int64), per) * slot_rows
        got = cache[key] = (np.r_[start, rg.sum()].astype(np.int64), group, rg_start)
    return got


def _chunk_ranges(view, s: int, part: str) -> tuple:
    """``(names, start, size)``: each column chunk's first byte and compressed bytes, ``[groups, columns]``,
    from the footer (dictionary page included), once per part."""
    cache, key = _DERIVED.get(view) or _DERIVED.setdefault(view, {}), ("ranges", s, part)
    got = cache.get(key)
    if got is None:
        md = view.parquet(s, part).metadata
        start = np.zeros((md.num_row_groups, md.num_columns), np.int64)
        size = np.zeros_like(start)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for j in range(md.num_columns):
                cc = rg.column(j)
                start[g, j] = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
                size[g, j] = cc.total_compressed_size
        got = cache[key] = ([md.schema.column(j).name for j in range(md.num_columns)], start, size)
    return got


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


def plan(view, users, slot_rows: int, seq_lo=None, seq_hi=None, ts_min=None, rare_types=None,
         all_groups=False, last=None) -> ChunkReads:
    """What reading sorted unique ``users`` with ``seq_lo[u] <= seq < seq_hi[u]`` from ``view`` takes, in
    arena blocks of ``slot_rows`` rows, before any decoding: the index lookups (``ImmutableView.user_runs``,
    which also pushes the time window ``ts_min``, the event types ``rare_types`` and, with them, ``last``,
    how many events of those types each user needs) and each range's cut at blocks. ``all_groups``: pin every block
    of each part read (users not pushed down)."""
    parts = []
    for s, part, ranks, r0, cnt, q0 in view.user_runs(users, seq_lo, seq_hi, ts_min, rare_types, last):
        bstart, bgroup, rg_start = _blocks(view, s, part, slot_rows)
        # one piece per (range, block); every range has rows (``user_runs`` yields only those)
        run, blk, lo, num, need, which = cut_at_blocks(bstart, r0, cnt)
        if all_groups:
            need, which = np.arange(len(bgroup)), blk
        file = view.segments[s][part]["file"]
        parts.append(PartRead(s, part, file, _file_key(file), ranks, r0, q0, part == "main", bstart, bgroup,
                              rg_start, run, blk, lo, num, need, which))
    return ChunkReads(len(users), slot_rows, parts)


def will_need(view, reads: ChunkReads, read_columns: list, arena=None) -> int:
    """Ask the OS to start reading the bytes ``runs`` of ``reads`` will decode, and return at once
    (``posix_fadvise(WILLNEED)``): called a chunk ahead, the reads overlap the decoding of earlier chunks
    instead of stalling it. Only the ``read_columns`` chunks of the row groups holding planned blocks are
    asked for, ranges merged only where they touch, so nothing beyond what ``runs`` reads is fetched;
    given the ``arena`` it will fill, only the groups of blocks it lacks now. Local stores only (object
    storage is read in coalesced ranged requests instead). Returns the bytes asked for."""
    if _fs.is_remote(view.root) or not hasattr(os, "posix_fadvise"):
        return 0
    total = 0
    for p in reads.parts:
        need = p.need if arena is None else p.need[~arena.holds((p.need + p.key).tolist())]
        groups = np.unique(p.bgroup[need])
        if not len(groups):
            continue
        names, start, size = _chunk_ranges(view, p.s, p.part)
        cols = [names.index(c) for c in read_columns if c in names]
        lo, n = start[groups][:, cols].ravel(), size[groups][:, cols].ravel()
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], lo[order] + n[order]
        # merge ranges that touch or overlap: one request per contiguous run of column chunks
        new = np.r_[True, lo[1:] > np.maximum.accumulate(hi)[:-1]]
        first = np.flatnonzero(new)
        los, his = lo[first], np.maximum.reduceat(hi, first)
        try:  # advice only: a file that cannot be opened here fails typed when it is read
            fd = os.open(str(view.root / p.file), os.O_RDONLY)
        except OSError:
            continue
        try:
            for a, b in zip(los.tolist(), his.tolist()):
                os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        total += int((his - los).sum())
    return total


def runs(view, reads: ChunkReads, arena, lanes: tuple, read_columns: list, read_groups=None, put=None) -> RunSet:
    """The events ``reads`` (``plan``) covers, as runs of ``arena`` (a ``GroupArena`` of ``reads.slot_rows``
    rows per slot, whose lanes hold the columns ``lanes = (names8, names4)``). The upper seq cut is exact in
    main parts; sidecar runs may hold newer seqs, which the slicing kernel cuts.

    Blocks already in the arena are not read again; missing ones are decoded (``read_columns`` of their
    row groups, by ``read_groups(parquet_file, path, groups, columns, name)``) into their slots, each block
    copied once by ``put(words, lane, column, dst, src, n)`` (host slices by default; a device backend
    passes its own, which may copy asynchronously). The slots stay pinned until ``arena.release(slots)``.
    """
    if arena.slot_rows != reads.slot_rows:
        raise InvalidArgument(f"the reads were planned in blocks of {reads.slot_rows} rows, the arena's are "
                         f"{arena.slot_rows}: plan with the arena's slot_rows")
    read_groups = read_groups or _segments.read_groups_arrow
    put = put or put_blocks
    R = reads.slot_rows
    pieces, pinned = [], []
    try:
        for p in reads.parts:
            slots, missing = arena.acquire((p.need + p.key).tolist())
            pinned.append(slots)
            if missing:
                _fill(view, arena, p, p.need[missing], slots[missing], lanes, read_columns, read_groups, put)
            pieces.append(((slots, p.which, p.blk, p.lo, p.run, p.bstart, p.ranks, p.r0, p.q0, R, p.dense), p.num))
        return _placed(pieces, pinned, reads.users, arena)
    except BaseException:
        for s in pinned:
            arena.release(s)
        raise


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


def _fill(view, arena, p: PartRead, blocks, slots, lanes, read_columns, read_groups, put):
    """Decode the row groups holding ``blocks`` of part ``p`` and copy each block into its arena slot."""
    bstart, bgroup, rg_start = p.bstart, p.bgroup, p.rg_start
    groups = np.unique(bgroup[blocks])
    name = str(view.root / p.file)
    try:
        got = read_groups(view.parquet(p.s, p.part), name, groups.tolist(), read_columns, name)
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
