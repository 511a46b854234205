"""``Reconstructor``: rebuilds each thin row's sequence just in time, bit-exact with serving (docs/semantics.md).

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
import numbers
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa

import kernels

from .._errors import InvalidArgument, SchemaError
from .._types import TableLike, ThinSource
from ..serving._schema import check_bool, check_int, check_names
from ..serving._segments import ROW_GROUP_ROWS
from ..serving._store import UIHStore
from . import _backends, _order, _padding, _plan, _reads
from ._arena import GroupArena
from ._batch import Batch
from ._epoch import BatchIterator, Epoch
from ._packing import BatchPacker
from ._prefetch import prefetch as background
from ._projection import Projection
from ._staging import Stager
from ._thin_rows import ThinRowChecker
from ._thin_source import THIN_META, pass_through_columns, thin_table
from ._unassembled import Unassembled

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
    lifetime: _Lifetime

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
    reads: _reads.ChunkReads  # the users' row ranges in it, cut at arena blocks: what decoding reads


class _Lifetime:
    """When a chunk's memory may be reused: after ``ready`` (the producer's copies) for readers, and after
    ``done`` (the last kernel that read it) for writers. ``holds`` is what must outlive the chunk until
    then (its device arrays, pinned staging)."""

    def __init__(self, ready, holds: list):
        self.ready, self.done, self.holds = ready, None, holds


def _release(backend, arena, slots, life):
    # runs when the chunk is collected; on a GPU its kernels may still be running: the slots go back to
    # the arena, and the arrays to CuPy's pool, only once the event after its last kernel completes
    backend.retire(life.done or life.ready, life.holds, lambda: arena.release(slots))


class Reconstructor:
    """Rebuilds batches of a projection from thin rows (docs/concepts.md).

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

    def __init__(self, store: UIHStore, projection: Projection, device: str = "auto", prefetch: int = 2,
                 chunk_batches: int = 8, pushdown: Iterable[str] = PUSHDOWN, cache_bytes: int = 1 << 30) -> None:
        if not isinstance(store, UIHStore) or not isinstance(projection, Projection):
            raise InvalidArgument(f"Reconstructor(store, projection) needs a UIHStore and an engine.Projection, got "
                                  f"{type(store).__name__} and {type(projection).__name__}")
        self.store = store
        self.projection = p = projection
        self.prefetch = check_int(prefetch, "prefetch", lo=0)
        self.chunk_batches = check_int(chunk_batches, "chunk_batches", lo=1)
        self.pushdown = frozenset(check_names(pushdown, "pushdown"))
        self.backend = _backends.resolve(device)
        self.device = self.backend.device  # "cpu" or "cuda": where batches live
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
        self._read = list(self._tail_cols) if "columns" in self.pushdown else ["seq", "ts", *schema.columns]
        # the kernels' seq, ts and event-type lanes: (8- or 4-byte lanes, index, dtype), or an empty array
        xp = self.backend.xp
        self._source_lanes: list[Any] = [(0, self._lanes[0].index(c), dt, None) if c in self._lanes[0] else
                              (1, self._lanes[1].index(c), dt, None) if c in self._lanes[1] else
                              (None, None, dt, xp.zeros(0, dt))
                              for c, dt in (("seq", np.int64), ("ts", np.int64),
                                            (self._etype, self._schema_dtype(self._etype)))]
        self._no_tail: kernels.Source | None = None  # the tail source of a chunk without tail events, made once
        self._arena_source: kernels.Source | None = None  # the kernels' view of the arena's arrays last read
        self._checker = ThinRowChecker(store, p, self.thin_columns, self._tail_cols, self._use_window)
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
        self._packer = BatchPacker(self.backend, list(p.columns), self._dtypes, self._cols8, self._cols4, self.device)

    @property
    def device_id(self) -> int | None:
        """The CUDA device the batches live on (what a GPU DALI pipeline must run on); None on the host."""
        return self.backend.device_id

    @property
    def cuda_stream(self) -> int | None:
        """The raw CUDA stream this thread's kernels run on (an adapter orders its work after it); None on
        the host."""
        return self.backend.stream_ptr() if self.device == "cuda" else None

    def synchronize(self) -> None:
        """Wait until the work queued so far on this thread's stream is done (no-op on the host)."""
        self.backend.synchronize()

    def clear_cache(self) -> None:
        """Forget the decoded row groups this reconstructor keeps (a cold start, for measurements)."""
        a = self._arena
        self._arena_source = None  # nor hold the old arena's arrays through their view
        self._arena = GroupArena(a.xp, a.w8.shape[0], a.w4.shape[0], a.slot_rows, self.cache_bytes)

    def __repr__(self) -> str:
        return f"Reconstructor({self.store!r}, {self.projection!r}, device={self.device!r})"

    # ---- public -----------------------------------------------------------------------------------
    def reconstruct(self, thin: TableLike, extra_columns: Sequence[str] = ()) -> Batch:
        """One batch holding every row of ``thin`` (a thin-row table), in its order.

        ``extra_columns``: pass-through columns of the thin rows (labels, ids...) to carry along, ``[B]``.
        """
        extra = check_names(extra_columns, "extra_columns")
        chunk = self._prepare(self._plan(self._checker.table(thin, extra)), extra)
        return self._assemble(chunk, 0, chunk.n)

    def iter_batches(self, thin_source: ThinSource, batch_size: int, prefetch: int | None = None,
                     affinity: bool = True, extra_columns: Sequence[str] = (), chunk_rows: int | None = None,
                     order: Literal["stream", "shuffle"] = "stream", seed: int = 0, epoch: int = 0,
                     shuffle_window: int | None = None, resume: Mapping[str, Any] | None = None,
                     share: tuple[int, int] | None = None) -> BatchIterator:
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

    def iter_unassembled(self, thin_source: ThinSource, batch_size: int, prefetch: int | None = None,
                         extra_columns: Sequence[str] = (), chunk_rows: int | None = None,
                         first_sizes: Sequence[int] = (), order: Literal["stream", "shuffle"] = "stream",
                         seed: int = 0, epoch: int = 0, shuffle_window: int | None = None,
                         resume: Mapping[str, Any] | None = None,
                         share: tuple[int, int] | None = None) -> Iterator[Unassembled]:
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
            raise InvalidArgument(f"iter_unassembled needs a CPU reconstructor of a padded projection; this one "
                                  f"is {self.device!r}, {self.projection}: use iter_batches")
        extra = check_names(extra_columns, "extra_columns")
        batch_size, depth, rows = self._batching(batch_size, prefetch, True, chunk_rows)
        try:
            first_sizes = [check_int(x, "first_sizes' entries", lo=1) for x in first_sizes]
        except TypeError:
            raise InvalidArgument(f"first_sizes must be a list of ints >= 1, got {first_sizes!r}") from None
        stager = Stager(self.projection, self._dtypes, (self._cols8, self._cols4),
                        [None if k is None else (k, i) for k, i, _, _ in self._source_lanes], (self._filter, self._pad))
        ep = Epoch(thin_source, self.thin_columns + extra, batch_size, rows,
                   _order.Order(order, seed, epoch, shuffle_window), resume, share)
        yield from stager.batches(self._chunks(ep.tables, depth, extra, threading.Event()), batch_size, first_sizes)

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

    def pad(self, jagged: Mapping[str, Any]) -> Batch:
        """The padded batch of a jagged one: ``jagged`` maps this projection's columns to the values of all
        rows end to end, plus ``offsets`` ``[B + 1]`` and ``lengths`` ``[B]`` (what a ``layout="jagged"``
        projection of the same columns, order and ``max_len`` yields); its other ``[B]`` arrays (extra
        columns) pass through. The result equals the padded projection's batch of the same rows: rows
        aligned and padded as this projection says, by the same assembly kernel, in one packed buffer.
        """
        return _padding.pad(jagged, self.projection, self.backend, self._packer, self._filter, self._pad,
                            self._schema_dtype(self._etype))

    def epoch_rows(self, thin_source: ThinSource, batch_size: int, order: Literal["stream", "shuffle"] = "stream",
                   seed: int = 0, epoch: int = 0, shuffle_window: int | None = None,
                   share: tuple[int, int] | None = None, extra_columns: Sequence[str] = (),
                   resume: Mapping[str, Any] | None = None) -> pa.Table:
        """The thin rows one reader reads in an epoch, in the epoch's order: share ``(index, count)`` of its
        global batches (``iter_batches``' keywords). ``iter_batches(rows, batch_size)`` of the result yields
        exactly those batches, for a reader (a Ray actor or rank) that reconstructs them elsewhere.
        ``resume``: a ``state_dict()`` of an iterator of this epoch (``iter_batches`` with these keywords and
        a ``share``): only the batches that share has left (another share layout: those after its
        consumed prefix), as ``iter_batches(..., resume=)`` would yield them."""
        bs = self._batching(batch_size, 0, True, None)[0]
        cols = self.thin_columns + list(extra_columns)
        ep = Epoch(thin_source, cols, bs, bs * 64, _order.Order(order, seed, epoch, shuffle_window), resume, share)
        parts = list(ep.tables())
        return pa.concat_tables(parts) if parts else thin_table(thin_source, cols).slice(0, 0)

    @staticmethod
    def pass_through_columns(thin_source: ThinSource) -> list[str]:
        """The thin rows' pass-through columns (what ``snapshot`` copied from the requests: ids, labels...),
        the ``extra_columns`` a training batch usually carries."""
        return pass_through_columns(thin_source)

    def read_thin(self, thin_source: ThinSource, extra_columns: Sequence[str] = ()) -> pa.Table:
        """The thin rows of ``thin_source`` (Parquet path(s) or a Table), only the columns this
        projection reads plus ``extra_columns``: what a worker or shard needs to hold."""
        cols = [*self.thin_columns, *check_names(extra_columns, "extra_columns")]
        return thin_table(thin_source, cols)

    # ---- chunk preparation (host side, may run in the prefetch thread) ----------------------------
    def _schema_dtype(self, c):
        return self.store.schema.dtype(c)

    def _plan(self, t: pa.Table, hint: bool = False) -> _Planned:
        """A chunk's thin rows checked and planned (host only, no decoding); ``hint``: ask the OS now for
        the store bytes its decoding will read, so that the reads run while earlier chunks are decoded."""
        plan, imm_hw, ts_min, view = self._checker.validate(t)  # one version for the chunk, from plan to runs
        tails, t_off = self._checker.tails(t)
        p, rows = self.projection, "rows" in self.pushdown
        # the runs and block cuts, once per chunk: the read-ahead advice and the decoding both follow them
        reads = _reads.plan(view, plan.users, self._arena.slot_rows,
                            seq_lo=plan.seq_lo if rows and not (self._use_types or self._use_window) else None,
                            seq_hi=plan.seq_hi, ts_min=plan.ts_lo if rows and self._use_window else None,
                            rare_types=p.actions if (self._use_types and "types" in self.pushdown) else None,
                            all_groups="users" not in self.pushdown,
                            # filtered to event types: back to each user's max_len-th last event of those
                            # types below its smallest sealed count (seq_lo + max_len), counted in the index
                            last=(plan.seq_lo + p.max_len, p.max_len) if rows and self._use_types else None)
        ready = _Planned(t, plan, imm_hw, ts_min, tails, t_off, view, reads)
        if hint:
            try:
                _reads.will_need(view, reads, self._read, arena=self._arena)
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
        staging: list = []  # host staging of asynchronous copies (GPU), held until the chunk's kernels are done
        put = lambda *a: be.put_blocks(*a, keep=staging)  # noqa: E731
        # one filler at a time: a slot another preparation is still filling must not be read as filled
        with self._fill_lock:
            rs = _reads.runs(ready.view, ready.reads, arena, self._lanes, self._read, read_groups=be.read_groups,
                             put=put)
        try:
            # the runs' and examples' arrays are the planners' own int64 arrays, moved where the kernels read them
            dev = functools.partial(be.index_arrays, keep=staging)
            per = _plan.examples(rs.user_runs, inv, imm_hw, t_off, ready.ts_min)
            src = self._arena_source  # the arena's arrays change only when it grows: their view is reused
            if src is None or src.w8 is not rs.w8 or src.w4 is not rs.w4:
                src = self._arena_source = self._source(rs.w8, rs.w4)
            parts: dict[str, Any] = dict(src=src,
                                         runs=kernels.Runs(*dev((rs.start, rs.pos, rs.seq0))),
                         tail=self._tail_source(ready.tails, int(t_off[-1]), staging),
                         examples=kernels.Examples(*dev(per)),
                         extras=self._checker.extras(t, extra, be.to_device, staging))
        except BaseException:
            be.synchronize()  # copies already queued may still read the staging or write the slots
            arena.release(rs.slots)
            raise
        # the producer's copies are ordered before the consumer's kernels by this event, not a host wait
        life = _Lifetime(be.record(), [*staging, *parts.values()])
        chunk = _Chunk(n=len(imm_hw), events_read=rs.num_events, lifetime=life, **parts)
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
        seq, ts, etype = (words[k][i].view(dt) if k is not None else empty for k, i, dt, empty in self._source_lanes)
        return kernels.Source(w8, w4, seq, ts, etype)

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
        be.wait(ch.lifetime.ready)  # this thread's stream runs after the producer's copies of the chunk
        stream = be.launch_stream()
        sel = xp.empty((n, kernels.SEL_COLUMNS), np.int64)  # per row: what slicing kept (kernels.SEL_*)
        c8, c4 = len(self._cols8), len(self._cols4)
        extras = {c: v.dtype for c, v in ch.extras.items()}
        if p.layout == "jagged":  # rows packed end to end: offsets from the slicing's counts
            be.slice(ch.src, ch.runs, ch.tail, self._filter, ex, L, sel, stream=stream)
            offsets = xp.zeros(n + 1, np.int64)
            offsets[1:] = xp.cumsum(sel[:, kernels.SEL_N_IMM] + sel[:, kernels.SEL_N_TAIL])
            total = int(offsets[-1])
            blob, pack, views = self._packer.views(n, L, extras, total)
            out8, out4, lengths, offs, *ext = views
            offs[...] = offsets
            out = kernels.Output(out8, out4, lengths, offs[:-1], 0)
        else:
            blob, pack, views = self._packer.views(n, L, extras)
            out8, out4, lengths, *ext = views
            out = kernels.Output(out8.reshape(c8, n * L), out4.reshape(c4, n * L), lengths,
                                 self._packer.row_starts(pack, n, L), L)
        # padded rows start where the plan says, so slicing and assembly run as one call
        run = be.assemble if p.layout == "jagged" else be.slice_assemble
        run(ch.src, ch.runs, ch.tail, self._filter, ex, sel, L, p.align == "right", self._pad, out, stream=stream)
        for v, dst in zip(ch.extras.values(), ext):
            dst[...] = v[a:b]  # on this thread's stream, like the kernels
        ch.lifetime.done = be.record()
        return self._packer.batch(blob, pack, views)
