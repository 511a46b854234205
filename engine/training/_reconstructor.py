"""``Reconstructor``: rebuilds each thin row's sequence just in time, bit-exact with serving (SPEC §3).

Per chunk of thin rows: validate them against the store, find each needed user's immutable events as
runs of decoded row groups (pushing columns, users/row groups, row ranges and event types down to
storage; the row groups stay in this reconstructor's arena, decoded once), lay the logged tails out as
raw 8- and 4-byte words, then run the two kernels per batch: slicing on the runs, and assembly copying
straight from the arena and the tails into the padded or jagged output. Host work per chunk is per
example, user, segment and row group, never per event.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import threading
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import kernels

from .._errors import InvalidArgument, SchemaError, VersionError
from ..serving._group_cache import GroupArena
from ..serving._schema import as_table, cast_array, check_bool, check_int, check_names
from ..serving._segments import ROW_GROUP_ROWS
from ..serving._store import UIHStore
from . import _backends, _order, _plan
from ._batch import PACK_ALIGN, Batch
from ._epoch import BatchIterator, Epoch
from ._prefetch import prefetch as background
from ._projection import Projection
from ._thin_source import THIN_META, pass_through_columns, thin_batches
from ._unassembled import Column, FilterLanes, Lane, Unassembled

PUSHDOWN = frozenset({"columns", "users", "rows", "types"})


@dataclass
class _Chunk:
    """A chunk of thin rows, laid out on the device, ready for the kernels."""

    n: int
    src: kernels.Source  # the arena's lanes: decoded row groups, read in place
    runs: kernels.Runs  # the users' immutable events as runs of the arena
    tail: kernels.Source  # the logged tails as raw words, same lanes
    examples: kernels.Examples  # per example: its user's runs, cut, tail and window
    events_read: int
    extras: dict  # pass-through columns carried into the batches
    life: _Life

    def rows(self, a: int, b: int) -> kernels.Examples:
        """The examples of rows ``[a, b)`` (a batch of the chunk)."""
        return self.examples if (a, b) == (0, self.n) else kernels.Examples(*(v[a:b] for v in self.examples))


class _Planned(NamedTuple):
    """A chunk's thin rows, checked and planned, before any store data is decoded (``Reconstructor._plan``)."""

    t: pa.Table
    plan: _plan.UserPlan
    imm_hw: np.ndarray
    ts_min: np.ndarray  # per example: the window's first ts
    tails: dict | None  # per tail lane column: the values of all rows' tails (None: no tail events)
    t_off: np.ndarray  # the rows' offsets into the tails
    view: object  # the store's immutable tier as the chunk was planned against it
    seq_lo: np.ndarray | None  # per user: the pushed-down seq range and window, None where not pushed down
    ts_min_u: np.ndarray | None
    rare: list | None  # the event types whose sidecars may be read instead of the main parts


class _Pack(NamedTuple):
    """How a batch of one shape is packed (``Reconstructor._pack_plan``)."""

    parts: list  # per part (word matrices, lengths, offsets, extras): dtype, shape, byte range
    size: int  # buffer bytes
    layout: tuple  # ``Batch.packed``'s layout
    picks: list  # per layout entry: its name, part, lane (None: the whole part) and dtype
    starts: object  # padded, on the host: each row's first output position (``kernels.Output``), else None


class _Life:
    """When a chunk's memory may be reused: after ``ready`` (the producer's copies) for readers, and after
    ``done`` (the last kernel that read it) for writers. ``keep`` holds what must outlive the chunk until
    then (its device arrays, pinned staging)."""

    def __init__(self, ready, keep: list):
        self.ready, self.done, self.keep = ready, None, keep


def _list_parts(col: pa.ChunkedArray) -> tuple:
    """``(offsets [n + 1] from 0, values)`` of a list column without null lists, read from the list
    arrays' own offsets (``_tails``' general path; the values as Arrow, a single chunk's without a copy)."""
    if col.null_count:
        raise SchemaError(f"a thin tail column ({col.type}) has null lists; an empty tail is an empty list")
    if col.num_chunks == 1:  # a few pyarrow calls: this runs per tail column of every chunk
        c = col.chunk(0)
        o = c.offsets.to_numpy()
        lo, hi = int(o[0]), int(o[-1])
        return (o - lo if lo else o), _values(c, lo, hi)
    offs, vals, end = [np.zeros(1, np.int64)], [], 0
    for chunk in col.chunks:
        o = chunk.offsets.to_numpy()
        offs.append((o[1:] - o[0]).astype(np.int64) + end)  # each chunk continues the previous one's
        end += int(o[-1] - o[0])
        vals.append(chunk.values.slice(o[0], o[-1] - o[0]))
    return np.concatenate(offs), pa.chunked_array(vals, col.type.value_type)


def _values(arr: pa.ListArray, lo: int, hi: int) -> pa.Array:
    """The values of list array ``arr`` between raw offsets ``lo`` and ``hi`` (its lists' whole extent, when
    they are its offsets' ends), without copying a value."""
    v = arr.values
    return v.slice(lo, hi - lo) if lo or hi != len(v) else v


def _release(backend, arena, slots, life):
    # runs when the chunk is collected; on a GPU its kernels may still be running: the slots go back to
    # the arena, and the arrays to CuPy's pool, only once the event after its last kernel completes
    backend.retire(life.done or life.ready, life.keep, lambda: arena.release(slots))


class Reconstructor:
    """Rebuilds batches of a projection from thin rows (SPEC §2).

    Parameters
    ----------
    store : UIHStore
        The store the thin rows point into (any later version of it).
    projection : Projection
    device : {"auto", "cpu", "cuda"}
    prefetch : int
        Chunks prepared ahead in a background thread by ``iter_batches`` (0: none).
    chunk_batches : int
        Batches per chunk: each user's rows are read once per chunk (data affinity).
    pushdown : iterable of str
        Storage pushdown dimensions to use, a subset of ``{"columns", "users", "rows", "types"}``
        (all by default; switch some off only to measure what they buy).
    cache_bytes : int
        Budget of the arena that keeps decoded row groups for reuse across chunks (soft: chunks in use
        are never evicted).
    """

    PUSHDOWN = PUSHDOWN

    def __init__(self, store, projection, device="auto", prefetch=2, chunk_batches=8, pushdown=PUSHDOWN,
                 cache_bytes=1 << 30):
        if not isinstance(store, UIHStore) or not isinstance(projection, Projection):
            raise InvalidArgument(f"Reconstructor(store, projection) needs a UIHStore and an engine.Projection, got "
                                  f"{type(store).__name__} and {type(projection).__name__}")
        self.store = store
        self.projection = p = projection
        self.prefetch = check_int(prefetch, "prefetch", lo=0)
        self.chunk_batches = check_int(chunk_batches, "chunk_batches", lo=1)
        self.pushdown = frozenset(check_names(pushdown, "pushdown"))
        self.backend = _backends.resolve(device)
        self.device = "cuda" if self.backend.name == "cuda" else "cpu"
        if not self.pushdown <= PUSHDOWN:
            raise SchemaError(f"unknown pushdown dimension(s) {sorted(self.pushdown - PUSHDOWN)}")
        schema = store.schema
        self._dtypes = {c: schema.dtype(c) for c in p.columns}  # SchemaError for unknown columns
        self._cols8 = [c for c in p.columns if self._dtypes[c].itemsize == 8]
        self._cols4 = [c for c in p.columns if self._dtypes[c].itemsize == 4]
        self._use_types = p.actions is not None
        self._use_window = p.window_us is not None
        self._etype = schema.event_type_column
        need = set(p.columns) | ({"ts"} if self._use_window else set()) | ({self._etype} if self._use_types else set())
        self._need = [c for c in ["seq", "ts", *schema.columns] if c in need]
        self.thin_columns = [*THIN_META, "tail_seq", *(f"tail_{c}" for c in self._need if c != "seq")]
        # arena lanes: the output columns first, then what only the filter (or a sidecar's sparse seqs) reads
        rare = self._use_types and "types" in self.pushdown
        extra = [c for c in dict.fromkeys([*(["ts"] if self._use_window else []),
                                           *([self._etype] if self._use_types else []),
                                           *(["seq"] if rare else [])]) if c not in p.columns]
        width = {c: self._schema_dtype(c).itemsize for c in extra}
        self._lanes = ([*self._cols8, *(c for c in extra if width[c] == 8)],
                       [*self._cols4, *(c for c in extra if width[c] == 4)])
        self._tail_cols = list(dict.fromkeys([*self._lanes[0], *self._lanes[1]]))  # thin tail_<c> per lane column
        self._tail_names = [f"tail_{c}" for c in self._tail_cols]
        self._read = list(self._tail_cols) if "columns" in self.pushdown else ["seq", "ts", *schema.columns]
        # the kernels' seq, ts and event-type lanes: (8- or 4-byte lanes, index, dtype), or an empty array
        xp = self.backend.xp
        self._source_lanes = [(0, self._lanes[0].index(c), dt, None) if c in self._lanes[0] else
                              (1, self._lanes[1].index(c), dt, None) if c in self._lanes[1] else
                              (None, None, dt, xp.zeros(0, dt))
                              for c, dt in (("seq", np.int64), ("ts", np.int64),
                                            (self._etype, self._schema_dtype(self._etype)))]
        self._no_tail = None  # the tail source of a chunk without tail events, made once
        self._mine = pa.array([store.store_id], pa.string())  # snapshot()'s store_id dictionary
        self.cache_bytes = check_int(cache_bytes, "cache_bytes", lo=0)
        self._fill_lock = threading.Lock()
        self._arena = GroupArena(self.backend.xp, len(self._lanes[0]), len(self._lanes[1]), ROW_GROUP_ROWS,
                                 self.cache_bytes)
        pad8 = np.array([p.pad_for(self._dtypes[c]).view(np.int64) for c in self._cols8], np.int64)
        pad4 = np.array([p.pad_for(self._dtypes[c]).view(np.int32) for c in self._cols4], np.int32)
        flt = kernels.make_filter(p.actions_for(self._schema_dtype(self._etype)), self._use_window)
        self._filter = flt._replace(type_ok=self.backend.to_device(flt.type_ok))
        self._pad = kernels.Words(self.backend.to_device(pad8), self.backend.to_device(pad4))
        self.stats = {"chunks": 0, "examples": 0, "users_read": 0, "events_read": 0}
        self._pack_plans = {}  # padded (rows, max_len, extras) -> how a batch is packed

    def clear_cache(self):
        """Forget the decoded row groups this reconstructor keeps (a cold start, for measurements)."""
        a = self._arena
        self._arena = GroupArena(a.xp, a.w8.shape[0], a.w4.shape[0], a.slot_rows, self.cache_bytes)

    def __repr__(self):
        return f"Reconstructor({self.store!r}, {self.projection!r}, device={self.device!r})"

    # ---- public -----------------------------------------------------------------------------------
    def reconstruct(self, thin, extra_columns=()) -> Batch:
        """One batch holding every row of ``thin`` (a thin-row table), in its order.

        ``extra_columns``: pass-through columns of the thin rows (labels, ids...) to carry along, ``[B]``.
        """
        extra = check_names(extra_columns, "extra_columns")
        chunk = self._prepare(self._plan(self._as_thin(thin, extra)), extra)
        return self._assemble(chunk, 0, chunk.n)

    def iter_batches(self, thin_source, batch_size: int, prefetch=None, affinity: bool = True,
                     extra_columns=(), chunk_rows=None, order="stream", seed=0, epoch=0, shuffle_window=None,
                     resume=None, share=None) -> BatchIterator:
        """Batches of ``batch_size`` rows (the last may be smaller) over Parquet path(s) or a Table.

        The next chunk is read and laid out in a background thread while the current one is assembled.
        ``extra_columns`` carries pass-through columns (labels, ids...) into each batch as ``[B]`` arrays.
        ``chunk_rows``: thin rows per chunk, whose users are read once (data affinity), a multiple of
        ``batch_size``; by default ``batch_size * chunk_batches``, or ``batch_size`` with ``affinity=False``
        (given, it sets the chunks whatever ``affinity`` says).

        Training order: ``order="stream"`` (the thin rows' own order) or ``"shuffle"``, fixed by ``seed``
        and ``epoch``, each example exactly once, permuted within windows of ``shuffle_window`` rows of
        randomly ordered blocks (``engine.training._order``). ``resume``: a ``state_dict()`` of an earlier
        iterator with the same keywords; this one yields exactly the batches that one had left.
        ``share=(index, count)``: only global batches ``index, index + count, ...`` of the epoch (a rank
        or worker's share; adapters set it); the order does not depend on it.
        """
        extra = check_names(extra_columns, "extra_columns")
        batch_size, depth, rows = self._batching(batch_size, prefetch, affinity, chunk_rows)
        ep = Epoch(thin_source, self.thin_columns + extra, batch_size, rows,
                   _order.Order(order, seed, epoch, shuffle_window), resume, share)
        return BatchIterator(self._batches(ep, batch_size, depth, extra), ep)

    def _batches(self, ep: Epoch, batch_size: int, depth: int, extra: list):
        busy = threading.Event()  # set while the prefetch thread prepares a chunk
        for chunk in self._chunks(ep.tables, depth, extra, busy):
            for a in range(0, chunk.n, batch_size):
                with self.backend.sharing_cores(busy.is_set()):
                    batch = self._assemble(chunk, a, min(a + batch_size, chunk.n))
                yield batch  # outside: the caller's own work between batches keeps its thread settings

    def iter_unassembled(self, thin_source, batch_size: int, prefetch=None, extra_columns=(), chunk_rows=None,
                         first_sizes=(), order="stream", seed=0, epoch=0, shuffle_window=None, resume=None,
                         share=None):
        """``iter_batches``' batches (same rows, same order, same arguments), planned and staged but not
        written: an ``Unassembled`` per batch, for a consumer that runs the kernels into memory of its own
        (``dali_plugin``'s DALI operator writes each batch straight into DALI's output buffers). CPU
        reconstructors of padded projections; ``Unassembled.assemble()`` gives what the writes must equal.

        ``first_sizes``: rows of the first batches, before batches of ``batch_size`` (each cut at the end of
        its chunk, as every batch is): a consumer that queues whole batches ahead (DALI's prefetching)
        gets its first rows sooner. ``order``, ``seed``, ``epoch``, ``shuffle_window``, ``resume`` and
        ``share`` as ``iter_batches``.
        """
        if self.device != "cpu" or self.projection.layout != "padded":
            raise SchemaError(f"iter_unassembled needs a CPU reconstructor of a padded projection; this one is "
                              f"{self.device!r}, {self.projection}: use iter_batches")
        extra = check_names(extra_columns, "extra_columns")
        batch_size, depth, rows = self._batching(batch_size, prefetch, True, chunk_rows)
        try:
            first_sizes = [check_int(x, "first_sizes' entries", lo=1) for x in first_sizes]
        except TypeError:
            raise InvalidArgument(f"first_sizes must be a list of ints >= 1, got {first_sizes!r}") from None
        p = self.projection
        columns = tuple(Column(c, self._dtypes[c], Lane(8, self._cols8.index(c))) if c in self._cols8 else
                        Column(c, self._dtypes[c], Lane(4, self._cols4.index(c))) for c in p.columns)
        lanes = FilterLanes(*(None if k is None else Lane((8, 4)[k], i) for k, i, _, _ in self._source_lanes))
        sizes = iter(first_sizes)
        ep = Epoch(thin_source, self.thin_columns + extra, batch_size, rows,
                   _order.Order(order, seed, epoch, shuffle_window), resume, share)
        for chunk in self._chunks(ep.tables, depth, extra, threading.Event()):
            a = 0
            while a < chunk.n:
                b = min(a + next(sizes, batch_size), chunk.n)
                yield Unassembled(b - a, chunk.src, chunk.runs, chunk.tail, self._filter, chunk.rows(a, b), self._pad,
                                  p.max_len, p.align == "right", columns, lanes,
                                  {c: v[a:b] for c, v in chunk.extras.items()}, chunk)
                a = b

    def _batching(self, batch_size, prefetch, affinity, chunk_rows) -> tuple:
        """``(batch_size, prefetch depth, rows per chunk)`` of ``iter_batches``' arguments, checked."""
        batch_size = check_int(batch_size, "batch_size", lo=1)
        depth = self.prefetch if prefetch is None else check_int(prefetch, "prefetch", lo=0)
        affinity = check_bool(affinity, "affinity")
        rows = batch_size * (self.chunk_batches if affinity else 1) if chunk_rows is None else chunk_rows
        if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < batch_size or rows % batch_size:
            raise InvalidArgument(f"chunk_rows must be a positive multiple of batch_size ({batch_size}), got "
                                  f"{chunk_rows!r}: a batch never spans two chunks")
        return batch_size, depth, int(rows)

    def _chunks(self, thin_tables, depth: int, extra: list, busy: threading.Event):
        """Prepared chunks of the thin-row tables ``thin_tables()`` yields, ``depth`` ahead in background
        threads (0: none); ``busy`` is set while the decoding thread prepares one."""
        def tables():
            for table in thin_tables():
                yield self._plan(table, hint=depth > 0)

        def produce():
            # two stages ahead of the kernels when prefetching: one thread reads and checks the thin rows and
            # asks the OS for the store bytes they need (I/O in flight, little CPU), the other decodes and
            # stages chunks; without prefetch, all in this thread
            planned = background(tables, depth, name="uih-plan") if depth > 0 else tables()
            with contextlib.closing(planned):
                for ready in planned:
                    yield self._prepare(ready, extra)

        return background(produce, depth, busy=busy)

    def pad(self, jagged) -> Batch:
        """The padded batch of a jagged one: ``jagged`` maps this projection's columns to the values of all
        rows end to end, plus ``offsets`` ``[B + 1]`` and ``lengths`` ``[B]`` (what a ``layout="jagged"``
        projection of the same columns, order and ``max_len`` yields); its other ``[B]`` arrays (extra
        columns) pass through. The result equals the padded projection's batch of the same rows: rows
        aligned and padded as this projection says, by the same assembly kernel, in one packed buffer.
        """
        p, be, xp = self.projection, self.backend, self.backend.xp
        if p.layout != "padded":
            raise SchemaError(f"pad() makes padded batches; {p} is jagged already")
        missing = [c for c in [*p.columns, "offsets", "lengths"] if c not in jagged]
        if missing:
            raise SchemaError(f"pad() needs a jagged batch with {missing}; make it with layout='jagged'")
        lengths, offsets = xp.asarray(jagged["lengths"]), xp.asarray(jagged["offsets"], np.int64)
        n, L = len(lengths), p.max_len
        if len(offsets) != n + 1 or (n and int(lengths.max()) > L):
            raise SchemaError(f"pad() got {n} rows with {len(offsets)} offsets and rows up to "
                              f"{int(lengths.max()) if n else 0} events; max_len is {L}")
        # the kernel trusts these bounds (the CUDA twin reads unchecked): rows must tile each column's values
        sizes = [len(jagged[c]) for c in p.columns]
        if int(offsets[0]) != 0 or bool((offsets[1:] - offsets[:-1] != lengths).any()) or \
                any(k != int(offsets[-1]) for k in sizes):
            raise SchemaError(f"pad() needs offsets from 0 whose steps are the lengths and whose end is each "
                              f"column's length ({sizes} values, offsets end at {int(offsets[-1])})")
        words = [xp.stack([xp.asarray(jagged[c]).view(w) for c in cols]) if cols else xp.empty((0, 0), w)
                 for cols, w in ((self._cols8, np.int64), (self._cols4, np.int32))]
        none, zeros = xp.empty(0, np.int64), xp.zeros(n, np.int64)
        # every row is one run of the tail; the lanes' types are _source's, so no kernel compiles anew
        tail = kernels.Source(*words, none, none, xp.empty(0, self._schema_dtype(self._etype)))
        ex = kernels.Examples(zeros, zeros, zeros, offsets[:-1], offsets[1:], zeros)
        sel = xp.zeros((n, 5), np.int64)
        sel[:, 3], sel[:, 4] = offsets[:-1], lengths
        extras = {k: xp.asarray(v) for k, v in jagged.items() if k not in (*p.columns, "offsets", "lengths")}
        blob, pack, views = self._packed_views(n, L, {k: v.dtype for k, v in extras.items()})
        out8, out4, lens, *ext = views
        out = kernels.Output(out8.reshape(len(self._cols8), n * L), out4.reshape(len(self._cols4), n * L), lens,
                             self._row_starts(pack, n, L), L)
        flt = self._filter._replace(use_types=False, use_window=False)
        be.assemble(tail, kernels.Runs(xp.zeros(1, np.int64), none, none), tail, flt, ex, sel, L,
                    p.align == "right", self._pad, out, stream=be.launch_stream())
        for v, dst in zip(extras.values(), ext):
            dst[...] = v
        return self._batch(blob, pack, views)

    def epoch_rows(self, thin_source, batch_size: int, order="stream", seed=0, epoch=0, shuffle_window=None,
                   share=None, extra_columns=()) -> pa.Table:
        """The thin rows one reader reads in an epoch, in the epoch's order: share ``(index, count)`` of its
        global batches (``iter_batches``' keywords). ``iter_batches(rows, batch_size)`` of the result yields
        exactly those batches, for a reader (a Ray actor or rank) that reconstructs them elsewhere."""
        bs = self._batching(batch_size, 0, True, None)[0]
        cols = self.thin_columns + list(extra_columns)
        ep = Epoch(thin_source, cols, bs, bs * 64, _order.Order(order, seed, epoch, shuffle_window), None, share)
        parts = list(ep.tables())
        return pa.concat_tables(parts) if parts else pa.Table.from_batches([], ep.schema)

    @staticmethod
    def pass_through_columns(thin_source) -> list:
        """The thin rows' pass-through columns (what ``snapshot`` copied from the requests: ids, labels...),
        the ``extra_columns`` a training batch usually carries."""
        return pass_through_columns(thin_source)

    def read_thin(self, thin_source, extra_columns=()) -> pa.Table:
        """The thin rows of ``thin_source`` (Parquet path(s) or a Table), only the columns this
        projection reads plus ``extra_columns``: what a worker or shard needs to hold."""
        cols = [*self.thin_columns, *check_names(extra_columns, "extra_columns")]
        return pa.Table.from_batches(list(thin_batches(thin_source, cols)))

    # ---- chunk preparation (host side, may run in the prefetch thread) ----------------------------
    def _as_thin(self, thin, extra=()) -> pa.Table:
        t = as_table(thin, "thin rows")
        have = set(t.schema.names)  # a fresh list per access: read once
        missing = [c for c in [*self.thin_columns, *extra] if c not in have]
        if missing:
            raise SchemaError(f"thin rows lack column(s) {missing} needed by {self.projection}; "
                              "make them with UIHStore.snapshot()")
        return t  # read by name from here on: no need to pay for a select of the columns it uses

    def _extras(self, t: pa.Table, extra, keep=None) -> dict:
        out = {}
        for c in extra:
            if c in self.projection.columns or c in ("lengths", "offsets"):
                raise SchemaError(f"extra column {c!r} clashes with a projected output; rename it")
            col = t.column(c)
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or
                    pa.types.is_boolean(col.type)) or col.null_count:
                raise SchemaError(f"extra column {c!r} must be a non-null numeric or boolean scalar column, "
                                  f"got {col.type}")
            out[c] = self.backend.to_device(col.to_numpy(zero_copy_only=False), keep)
        return out

    def _other_store_ids(self, col: pa.ChunkedArray) -> list:
        """Store ids in ``col`` other than this store's, sorted (the same one is named every run)."""
        mine = self.store.store_id
        if isinstance(col.type, pa.DictionaryType) and not col.null_count and (
                col.chunk(0).dictionary.equals(self._mine) if col.num_chunks == 1 else
                all(c.dictionary.equals(self._mine) for c in col.chunks)):
            return []  # snapshot()'s usual form: every chunk's dictionary is this one id, no row read
        try:
            ids = pc.unique(col)  # distinct first: casting every row's id costs a string each
            ids = (ids.dictionary_decode() if pa.types.is_dictionary(ids.type) else ids).cast(pa.string())
            ids = set(ids.to_pylist())
        except pa.ArrowException as e:
            raise SchemaError(f"thin column store_id has type {col.type}; expected the store ids snapshot() writes "
                              "(strings)") from e
        return sorted((i for i in ids if i != mine), key=str)

    def _validate(self, t: pa.Table) -> tuple:
        """``(plan, imm_hw, ts_min, view)``: the chunk's users planned against ``view``, the store's
        immutable tier at a version no older than any row's, and each row's window start, once the thin
        rows are known to point into this store's sealed events."""
        other = self._other_store_ids(t.column("store_id"))
        if other:
            raise VersionError(f"thin rows of store {other[0]!r} cannot be reconstructed by store "
                               f"{self.store.store_id!r} ({self.store.root}); open the store they were logged from")
        version, uid, imm_hw, rts = (self._pointer(t, c) for c in ("version", "user_id", "imm_hw", "request_ts"))
        # the view the chunk is planned against must be no older than any row (a seal may land at any time,
        # and a view older than a row lacks its sealed events): planning finds the rows' newest version, and
        # a view found too old is replaced once and the chunk planned again (rare: a seal in between). That
        # first plan reads the old view's sealed counts, which the store's current view has in memory
        # already in all but its first chunk, and which the view it replaces held a moment ago.
        view = self.store.view
        plan, ts_min = self._plan_rows(uid, imm_hw, rts, version, view)
        if plan.newest > int(view.manifest["version"]):
            view = self.store.view
            if plan.newest > int(view.manifest["version"]):
                raise VersionError(f"thin row logged at store version {plan.newest}, but the store is at version "
                                   f"{int(view.manifest['version'])}; reopen the store (UIHStore.open) to see it")
            plan, ts_min = self._plan_rows(uid, imm_hw, rts, version, view)
        if plan.imm_min < 0:  # found by the planning pass: no NumPy reduction of its own
            raise SchemaError("thin rows have a negative imm_hw; they were not made by UIHStore.snapshot()")
        if plan.bad >= 0:
            b = plan.bad
            raise VersionError(f"thin row {b} (user {uid[b]}) points at imm_hw {imm_hw[b]}, but the store "
                               f"(version {int(view.manifest['version'])}) has only {plan.bad_sealed} sealed events "
                               "for that user; it was logged against another store")
        return plan, imm_hw, ts_min, view

    @staticmethod
    def _pointer(t: pa.Table, c: str):
        """Thin column ``c`` (an integer pointer column) as int64 NumPy, refusing nulls (Arrow would hand them
        over as floats) and unsafe casts (a float ``user_id`` 0.9 is not user 0)."""
        col = t.column(c)
        if col.null_count:
            raise SchemaError(f"thin column {c} has {col.null_count} null(s); every thin row needs a {c}: make "
                              "thin rows with UIHStore.snapshot()")
        return cast_array(col, np.int64, f"thin column {c}").to_numpy()

    def _plan_rows(self, uid, imm_hw, rts, version, view) -> tuple:
        return _plan.plan_chunk(uid, imm_hw, rts, self.projection.window_us if self._use_window else None,
                                self.projection.max_len, *view.user_counts(), version=version)

    def _tails(self, t: pa.Table):
        """``(values, offsets)``: each tail lane column's values of all rows end to end (None when there
        are no tail events), and the rows' offsets into them (``[n + 1]``, from 0), after checking every
        tail column's lists match ``tail_seq``'s."""
        seq, cols = t.column("tail_seq"), [t.column(name) for name in self._tail_names]
        for name, col in (("tail_seq", seq), *zip(self._tail_names, cols)):
            if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                raise SchemaError(f"thin column {name} has type {col.type}; expected a list column: make thin rows "
                                  "with UIHStore.snapshot()")
        if not pa.types.is_integer(seq.type.value_type):
            raise SchemaError(f"thin column tail_seq holds {seq.type.value_type}; expected integer seqs")
        if seq.num_chunks == 1 and not seq.null_count and all(
                c.num_chunks == 1 and not c.null_count for c in cols):
            # snapshot()'s form, read as is: one chunk per column, every column's lists at tail_seq's offsets
            # (compared in Arrow, not in NumPy: this runs per chunk and per tail column)
            o = seq.chunk(0).offsets
            if all(c.chunk(0).offsets.equals(o) for c in cols):
                o = o.to_numpy()
                lo, hi = int(o[0]), int(o[-1])
                if lo == hi:
                    return None, (o - lo if lo else o)  # no tail events (all sealed): no values to read
                out = {c: self._tail_values(_values(col.chunk(0), lo, hi), c) for c, col in zip(self._tail_cols, cols)}
                return out, (o - lo if lo else o)
        offsets, _ = _list_parts(seq)
        out = {}
        for c, col in zip(self._tail_cols, cols):
            off, flat = _list_parts(col)
            if len(off) != len(offsets) or (off != offsets).any():  # np.array_equal's checks cost more
                raise SchemaError(f"thin column tail_{c} has list lengths that disagree with tail_seq")
            out[c] = self._tail_values(flat, c)
        return out, offsets

    def _tail_values(self, values, c: str) -> np.ndarray:
        """Tail values of column ``c`` as its dtype, cast only when no value changes (an int64 action beyond
        int32 or a fractional item id is a SchemaError), without a copy when the type matches."""
        return cast_array(values, self._schema_dtype(c), f"thin column tail_{c} (its list values)").to_numpy()

    def _schema_dtype(self, c):
        return self.store.schema.dtype(c)

    def _plan(self, t: pa.Table, hint: bool = False) -> _Planned:
        """A chunk's thin rows checked and planned (host only, no decoding); ``hint``: ask the OS now for
        the store bytes its decoding will read, so that the reads run while earlier chunks are decoded."""
        plan, imm_hw, ts_min, view = self._validate(t)  # one version for the chunk, from plan to runs
        tails, t_off = self._tails(t)
        p, rows = self.projection, "rows" in self.pushdown
        ready = _Planned(t, plan, imm_hw, ts_min, tails, t_off, view,
                         seq_lo=plan.seq_lo if rows and not (self._use_types or self._use_window) else None,
                         ts_min_u=plan.ts_lo if rows and self._use_window else None,
                         rare=p.actions if (self._use_types and "types" in self.pushdown) else None)
        if hint:
            try:
                view.will_need(plan.users, self._read, ready.seq_lo, plan.seq_hi, ready.ts_min_u, ready.rare,
                               all_groups="users" not in self.pushdown, arena=self._arena)
            except Exception:  # noqa: BLE001 - advice only: the chunk's own reads raise any real error, in order
                pass
        return ready

    def _prepare(self, ready: _Planned, extra=()) -> _Chunk:
        self.backend.reap()  # slots and buffers of chunks whose kernels have finished
        with self.backend.producer_stream():
            return self._prepare_on_stream(ready, extra)

    def _prepare_on_stream(self, ready: _Planned, extra) -> _Chunk:
        be, t, plan, imm_hw, t_off = self.backend, ready.t, ready.plan, ready.imm_hw, ready.t_off
        users, inv = plan.users, plan.inv
        arena = self._arena  # the one these runs pin, even if clear_cache() swaps it meanwhile
        keep = []  # host staging of asynchronous copies (GPU), held until the chunk's kernels are done
        put = lambda *a: be.put_blocks(*a, keep=keep)  # noqa: E731
        # one filler at a time: a slot another preparation is still filling must not be read as filled
        with self._fill_lock:
            rs = ready.view.runs(users, arena, self._lanes, self._read, seq_lo=ready.seq_lo, seq_hi=plan.seq_hi,
                                 ts_min=ready.ts_min_u, rare_types=ready.rare, read_groups=be.read_groups, put=put,
                                 all_groups="users" not in self.pushdown)
        try:
            # the runs' and examples' arrays are the planners' own int64 arrays, moved where the kernels read them
            dev = functools.partial(be.index_arrays, keep=keep)
            per = _plan.examples(rs.user_runs, inv, imm_hw, t_off, ready.ts_min)
            parts = dict(src=self._source(rs.w8, rs.w4), runs=kernels.Runs(*dev((rs.start, rs.pos, rs.seq0))),
                         tail=self._tail_source(ready.tails, int(t_off[-1]), keep),
                         examples=kernels.Examples(*dev(per)), extras=self._extras(t, extra, keep))
        except BaseException:
            be.synchronize()  # copies already queued may still read the staging or write the slots
            arena.release(rs.slots)
            raise
        # the producer's copies are ordered before the consumer's kernels by this event, not a host wait
        life = _Life(be.record(), [*keep, *parts.values()])
        chunk = _Chunk(n=len(imm_hw), events_read=rs.num_events, life=life, **parts)
        # the arena slots stay pinned while anything can still read them: until the chunk is collected
        # and, on a GPU, its last kernels have finished
        weakref.finalize(chunk, _release, be, arena, rs.slots, life)
        self.stats["chunks"] += 1
        self.stats["examples"] += chunk.n
        self.stats["users_read"] += len(users)
        self.stats["events_read"] += chunk.events_read
        return chunk

    def _source(self, w8, w4) -> kernels.Source:
        """The kernels' view of lanes ``w8``/``w4``: the filter's ts and event type, the seq lane."""
        words = (w8, w4)  # a column sits in the lanes of its width, so each view is exact
        return kernels.Source(w8, w4, *(words[k][i].view(dt) if k is not None else empty
                                        for k, i, dt, empty in self._source_lanes))

    def _tail_source(self, tails, n: int, keep=None) -> kernels.Source:
        """The logged tails laid out as the arena's lanes (one copy of the tail events, which are few)."""
        be, (l8, l4) = self.backend, self._lanes
        if n == 0:  # no tail events (all sealed): one empty source, made once, which kernels only read
            if self._no_tail is None:
                self._no_tail = self._source(be.xp.empty((len(l8), 0), np.int64), be.xp.empty((len(l4), 0), np.int32))
            return self._no_tail
        w8 = be.xp.empty((len(l8), n), np.int64)
        w4 = be.xp.empty((len(l4), n), np.int32)
        for words, names in ((w8, l8), (w4, l4)):
            for i, c in enumerate(names):
                words[i] = be.to_device(tails[c].view(words.dtype), keep)
        return self._source(w8, w4)

    # ---- assembly (device side) -------------------------------------------------------------------
    def _assemble(self, ch: _Chunk, a: int, b: int) -> Batch:
        p, be, xp = self.projection, self.backend, self.backend.xp
        n, L = b - a, p.max_len
        ex = ch.rows(a, b)
        be.wait(ch.life.ready)  # this thread's stream runs after the producer's copies of the chunk
        stream = be.launch_stream()
        sel = xp.empty((n, 5), np.int64)
        c8, c4 = len(self._cols8), len(self._cols4)
        extras = {c: v.dtype for c, v in ch.extras.items()}
        if p.layout == "jagged":  # rows packed end to end: offsets from the slicing's counts
            be.slice(ch.src, ch.runs, ch.tail, self._filter, ex, L, sel, stream=stream)
            offsets = xp.zeros(n + 1, np.int64)
            offsets[1:] = xp.cumsum(sel[:, 2] + sel[:, 4])
            total = int(offsets[-1])
            blob, pack, views = self._packed_views(n, L, extras, total)
            out8, out4, lengths, offs, *ext = views
            offs[...] = offsets
            out = kernels.Output(out8, out4, lengths, offs[:-1], 0)
        else:
            blob, pack, views = self._packed_views(n, L, extras)
            out8, out4, lengths, *ext = views
            out = kernels.Output(out8.reshape(c8, n * L), out4.reshape(c4, n * L), lengths,
                                 self._row_starts(pack, n, L), L)
        # padded rows start where the plan says, so slicing and assembly run as one call
        run = be.assemble if p.layout == "jagged" else be.slice_assemble
        run(ch.src, ch.runs, ch.tail, self._filter, ex, sel, L, p.align == "right", self._pad, out, stream=stream)
        for v, dst in zip(ch.extras.values(), ext):
            dst[...] = v[a:b]  # on this thread's stream, like the kernels
        ch.life.done = be.record()
        return self._batch(blob, pack, views)

    def _row_starts(self, pack: _Pack, n: int, L: int):
        """Each padded row's first output position: the plan's on the host, a fresh array on a device."""
        return pack.starts if pack.starts is not None else self.backend.xp.arange(n, dtype=np.int64) * L

    def _batch(self, blob, pack: _Pack, views: list) -> Batch:
        """The ``Batch`` of one packed buffer: every array a view of it, taken from the part views
        (the same arrays ``Batch.unpack`` gives from the layout, without recomputing each byte range)."""
        arrays = {}
        for name, part, lane, dt in pack.picks:
            v = views[part] if lane is None else views[part][lane]
            arrays[name] = v if v.dtype == dt else v.view(dt)
        return Batch(arrays, self.device, (blob, pack.layout))

    def _packed_views(self, n: int, L: int, extras: dict, total=None) -> tuple:
        """One byte buffer for a batch of ``n`` rows, its ``_Pack`` plan and the plan's part views: the
        int64 and int32 word matrices (``[C, n, L]`` padded, ``[C, total]`` jagged), ``lengths``, jagged
        ``offsets``, one array per extra column."""
        if total is not None:  # jagged: the event total differs batch to batch, nothing to reuse
            pack = self._pack_plan(n, L, extras, total)
        else:  # padded: a few shapes per job (full batches, the last one), each planned once
            key = (n, L, tuple(extras.items()))
            pack = self._pack_plans.get(key)
            if pack is None:
                if len(self._pack_plans) >= 64:  # keep the cache small whatever the batch sizes
                    self._pack_plans.clear()
                pack = self._pack_plans[key] = self._pack_plan(n, L, extras, None)
        blob = self.backend.empty((pack.size,), np.uint8)
        return blob, pack, [blob[a:b].view(dt).reshape(shape) for dt, shape, a, b in pack.parts]

    def _pack_plan(self, n: int, L: int, extras: dict, total) -> _Pack:
        """How ``_packed_views`` packs a batch of ``n`` rows (``total`` events if jagged)."""
        c8, c4 = len(self._cols8), len(self._cols4)
        rows = (n, L) if total is None else (total,)
        shapes = [(np.dtype(np.int64), (c8, *rows)), (np.dtype(np.int32), (c4, *rows)), (np.dtype(np.int32), (n,)),
                  *([] if total is None else [(np.dtype(np.int64), (n + 1,))]),
                  *((np.dtype(d), (n,)) for d in extras.values())]
        parts, end = [], 0
        for dt, shape in shapes:
            nbytes = dt.itemsize * math.prod(shape)
            parts.append((dt, shape, end, end + nbytes))
            end += -(-nbytes // PACK_ALIGN) * PACK_ALIGN  # aligned starts
        lane = math.prod(rows)  # words per column

        def at(c):
            return parts[0][2] + self._cols8.index(c) * lane * 8 if c in self._cols8 else \
                parts[1][2] + self._cols4.index(c) * lane * 4
        layout = [(c, self._dtypes[c], rows, at(c)) for c in self.projection.columns]
        layout.append(("lengths", np.dtype(np.int32), (n,), parts[2][2]))
        if total is not None:
            layout.append(("offsets", np.dtype(np.int64), (n + 1,), parts[3][2]))
        extra_parts = parts[len(shapes) - len(extras):]
        layout += [(c, np.dtype(d), (n,), part[2]) for (c, d), part in zip(extras.items(), extra_parts)]
        picks = [(c, 0, self._cols8.index(c), self._dtypes[c]) if c in self._cols8 else
                 (c, 1, self._cols4.index(c), self._dtypes[c]) for c in self.projection.columns]
        picks += [(name, k, None, dt) for k, (name, dt, _, _) in enumerate(layout[len(picks):], start=2)]
        # host only: a device array made once would be read by kernels on other streams than the one that
        # made it (and freed to its stream's pool while they might), so on a GPU each batch makes its own
        starts = np.arange(n, dtype=np.int64) * L if total is None and self.backend.xp is np else None
        layout = tuple(layout)  # shared by every batch of this shape
        return _Pack(parts, Batch.packed_nbytes(layout), layout, picks, starts)
