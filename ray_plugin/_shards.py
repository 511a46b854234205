"""Framework-neutral pieces of the Ray adapter: which store, which columns, which user shard.

Data affinity without a shuffle: the thin rows are split by user hash (``engine.shard``) into
``num_shards`` parts, each read whole by one reconstruct call, so every thin row of a user lands in one
part and a reconstruct actor reads that user's events once per epoch. Read by itself, a part scans the
thin rows' needed columns: a user's rows are spread over every row group, so no row group can be
skipped. ``ShardPlan.scatter`` removes that: ``num_parts`` Ray tasks each read a contiguous run of row
groups (a ``1 / num_parts`` share of the bytes) once and cut it into every shard's rows; a shard's read
then gathers its pieces from Ray's object store, so the thin source is read from storage once per epoch,
not once per shard. Both ways a shard is the same rows in the same order every time: a retried call
re-yields exactly what the failed one did, and a lost piece is rebuilt by re-running its task.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

import engine

from . import _deps

# thin-row columns the engine writes; every other column is a pass-through column (ids, labels...)
_THIN_OWN = frozenset({"user_id", "request_ts", "store_id", "version", "imm_hw"})


@dataclass(frozen=True)
class StoreRef:
    """What a worker needs to open the store: its root and the version the driver saw (picklable)."""

    root: Any  # a local path, or the store's remote root (pickles with its pyarrow filesystem)
    version: int

    @classmethod
    def of(cls, store, version=None) -> StoreRef:
        """From a path or URI (at ``version``, default the newest), a remote store's ``root`` (which carries its
        ``filesystem=``) or an open ``UIHStore`` (at its version)."""
        if isinstance(store, engine.UIHStore):
            return cls(store.root, int(store.version if version is None else version))
        if hasattr(store, "fs") and hasattr(store, "path"):  # a remote store's root: keeps its filesystem
            return cls(store, _newest_version(store) if version is None else int(version))
        if not isinstance(store, (str, Path)):
            raise engine.InvalidArgument(f"store must be a path, a URI, an open UIHStore or its root, got "
                                         f"{type(store).__name__}")
        return cls(str(store), _newest_version(store) if version is None else int(version))

    def open(self) -> engine.UIHStore:
        """A read-only view pinned at ``version``: no lock, so any number of workers may hold one."""
        return engine.UIHStore.open(self.root, version=self.version)


def _newest_version(path) -> int:
    # a pinned open needs the number; read_only=True (docs/concepts.md) never locks or writes
    with engine.UIHStore.open(path, read_only=True) as store:
        return int(store.version)


def thin_schema(thin_source) -> pa.Schema:
    """The Arrow schema of a thin-row Table or Parquet path(s), without reading the rows."""
    if isinstance(thin_source, pa.Table):
        return thin_source.schema
    return _parquet(thin_source).schema


def pass_through_columns(schema: pa.Schema) -> list:
    """The columns ``snapshot`` copied from the requests: neither thin metadata nor tails."""
    return [c for c in schema.names if c not in _THIN_OWN and not c.startswith("tail_")]


def portable(thin_source):
    """The source as something cheap to pickle to workers: the Table itself, or path strings."""
    if isinstance(thin_source, pa.Table):
        return thin_source
    if isinstance(thin_source, (list, tuple)):
        return [str(p) for p in thin_source]
    return str(thin_source)


def _parquet(thin_source) -> pads.Dataset:
    return pads.dataset(portable(thin_source), format="parquet")


def read_shard(thin_source, columns: list, num_shards: int, index: int, by_user: bool = True) -> pa.Table:
    """Part ``index`` of ``num_shards`` of the thin rows, only ``columns``, in source order.

    ``by_user``: split by user hash (``engine.shard``: every user in one part); else contiguous row
    ranges, as a plain read splits files (a user's rows spread over many parts; the no-affinity baseline).
    Streams the source batch by batch, so memory holds one part, not the whole source.
    """
    schema = thin_schema(thin_source)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise engine.SchemaError(f"thin rows lack column(s) {missing}; make them with UIHStore.snapshot()")
    if isinstance(thin_source, pa.Table):
        batches, total = thin_source.select(columns).to_batches(), len(thin_source)
    else:
        data = _parquet(thin_source)
        # use_threads=False: batches in file and row order, every time (see the module docstring)
        batches = data.to_batches(columns=columns, use_threads=False)
        total = 0 if by_user else data.count_rows()
    lo, hi = total * index // num_shards, total * (index + 1) // num_shards
    parts, seen = [], 0
    for b in batches:
        t = pa.Table.from_batches([b])
        if by_user:
            parts.append(engine.shard(t, num_shards, index))
        else:
            a, z = max(lo - seen, 0), min(hi - seen, len(t))
            parts.append(t.slice(a, max(z - a, 0)))
            if seen + len(t) >= hi:
                break
        seen += len(t)
    parts = [p for p in parts if len(p)]
    return pa.concat_tables(parts) if parts else pa.schema([schema.field(c) for c in columns]).empty_table()


# default parts of a scattered plan, at most: every actor gets parts x shards object refs, and 16 reads at
# once already keep a node's link to object storage busy
MAX_PARTS = 16
# a scattered piece's position in the epoch's order (shuffle shares): the gather sorts by it, then drops it
_POS = "__uih_epoch_position"


def row_groups(thin_source) -> list:
    """``(file, row group, rows)`` of every row group of Parquet thin rows, in read order (footers only)."""
    out = []
    for path in engine.parquet_files(thin_source):
        md = _parquet_file(path).metadata
        out += [(path, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
    return out


def _parquet_file(path) -> pq.ParquetFile:
    # engine.parquet_files gives local Paths, or remote paths that carry their pyarrow filesystem
    return pq.ParquetFile(path.fs.open_input_file(path.path) if hasattr(path, "fs") else str(path))


def split_part(source, start: int, total: int, schema: pa.Schema, num_shards: int, by_user: bool = True,
               order: dict | None = None) -> list:
    """One part of the thin rows cut into every shard's rows: a list of ``num_shards`` Tables.

    ``source``: the part's rows, as a Table or as ``row_groups`` entries (consecutive, read here with only
    ``schema``'s columns); ``start``: the global index of its first row; ``total``: the thin rows' count.
    Concatenating shard ``i``'s pieces of all parts in part order gives ``read_shard``'s rows (stream
    order); with ``order`` (``iter_batches``' keywords and ``batch_size``), the pieces carry each row's
    position in the epoch's order, and sorting their concatenation by it gives ``Reconstructor.epoch_rows``'
    share ``i`` (``gather``).
    """
    t = source if isinstance(source, pa.Table) else _read_groups(source, schema)
    if order is not None:
        perm = engine.Order(order["order"], order["seed"], order["epoch"], order["shuffle_window"]).permutation(total)
        pos = np.arange(start, start + len(t), dtype=np.int64)
        if perm is not None:  # the inverse permutation: each row's place in the epoch
            where = np.empty(total, np.int64)
            where[perm] = np.arange(total, dtype=np.int64)
            pos = where[start:start + len(t)]
        batch = pos // int(order["batch_size"])
        if order.get("bounds") is not None:  # contiguous runs of global batches: part i holds [b[i], b[i+1])
            share = np.searchsorted(np.asarray(order["bounds"], np.int64), batch, side="right") - 1
        else:  # global batch g belongs to share g % count
            share = batch % num_shards
        return [t.filter(pa.array(share == i)).append_column(_POS, pa.array(pos[share == i]))
                for i in range(num_shards)]
    if by_user:
        return [engine.shard(t, num_shards, i) for i in range(num_shards)]
    out = []
    for i in range(num_shards):  # contiguous global ranges, as read_shard cuts them
        lo, hi = total * i // num_shards - start, total * (i + 1) // num_shards - start
        lo, hi = min(max(lo, 0), len(t)), min(max(hi, 0), len(t))
        out.append(t.slice(lo, max(hi - lo, 0)))
    return out


def _read_groups(groups: list, schema: pa.Schema) -> pa.Table:
    parts = []
    for _, same_file in itertools.groupby(groups, key=lambda u: str(u[0])):  # each file once, groups in order
        run = list(same_file)
        parts.append(_parquet_file(run[0][0]).read_row_groups([g for _, g, _ in run], columns=schema.names,
                                                             use_threads=False))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def gather(pieces: list, ordered: bool, positions: bool = False) -> pa.Table:
    """A shard's rows from its pieces of every part (``split_part``), in part order; ``ordered``: sorted by
    their place in the epoch, which ``positions`` keeps as the column ``POSITION``."""
    t = pa.concat_tables(pieces)
    if ordered:
        t = t.take(pa.array(np.argsort(t.column(_POS).to_numpy(), kind="stable")))
        if not positions:
            t = t.drop_columns([_POS])
    return t


POSITION = _POS


def _projected_schema(thin_source, columns) -> pa.Schema:
    schema = thin_schema(thin_source)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise engine.SchemaError(f"thin rows lack column(s) {missing}; make them with UIHStore.snapshot()")
    return pa.schema([schema.field(c) for c in columns])


def split_parts(thin_source, columns, num_parts: int) -> tuple:
    """``(total rows, schema of columns, [(part, its first row)])``: the thin rows in at most ``num_parts``
    contiguous parts of about equal rows, whole row groups each (a Parquet file's footer is read here, not
    its rows), for ``split_part``. A part is a Table slice, or a list of ``row_groups`` entries."""
    schema = _projected_schema(thin_source, columns)
    if isinstance(thin_source, pa.Table):
        total = len(thin_source)
        count = max(1, min(num_parts, total))
        bounds = [total * j // count for j in range(count + 1)]
        t = thin_source.select(list(columns))
        return total, schema, [(t.slice(a, b - a), a) for a, b in zip(bounds, bounds[1:]) if b > a]
    groups = row_groups(thin_source)
    rows = np.array([r for _, _, r in groups], np.int64)
    total, starts = int(rows.sum()), np.cumsum(rows) - rows
    count = max(1, min(num_parts, len(groups)))
    owner = np.minimum(starts * count // max(total, 1), count - 1)
    return total, schema, [([g for g, o in zip(groups, owner) if o == j], int(starts[owner == j][0]))
                           for j in range(count) if (owner == j).any()]


@functools.cache
def _split_task():
    return _deps.ray().remote(split_part)


@dataclass(frozen=True)
class ShardPlan:
    """How the thin rows split into ``num_shards`` parts, each read whole by one reconstruct call."""

    source: object  # a thin-row Table, or Parquet path(s) (picklable: strings)
    columns: tuple  # the thin columns the projection needs, then the pass-through columns
    num_shards: int
    by_user: bool = True
    order: dict | None = None  # iter_batches' order keywords (and batch_size): shards are shares of the epoch
    pieces: tuple | None = None  # scattered: per part of the source, the Ray object refs of its shard pieces

    def scatter(self, num_parts: int | None = None) -> ShardPlan:
        """This plan with its shards cut ahead by Ray tasks (on the driver, Ray initialized): part ``j`` of
        ``num_parts`` (default: ``num_shards``, at most ``MAX_PARTS`` and the cluster's CPUs; at most one per
        row group) reads its contiguous row groups once and returns every shard's piece of them; ``read`` then
        gathers a shard from the object store. A plan with a ``resume`` state in its order is returned as it
        is (its shards read the source)."""
        if self.pieces is not None or (self.order or {}).get("resume") is not None:
            return self
        _projected_schema(self.source, self.columns)  # a missing column is the driver's error, before any task
        ray = _deps.ray()
        if not num_parts:  # each task is a worker process to start (and import the engine) on busy cores
            num_parts = min(self.num_shards, MAX_PARTS, max(1, int(ray.cluster_resources().get("CPU", 1))))
        total, schema, parts = split_parts(self.source, self.columns, int(num_parts))
        if not total:
            return self
        # num_cpus=0: the reconstruct actors may hold every CPU while they wait for these pieces; SPREAD:
        # the reads go out over the nodes. A piece lost with its node is rebuilt by re-running its task
        # (Ray's lineage reconstruction), which reads the same row groups and cuts them the same way.
        task = _split_task().options(num_cpus=0, scheduling_strategy="SPREAD", num_returns=self.num_shards)
        refs = []
        for src, start in parts:
            got = task.remote(src, start, total, schema, self.num_shards, self.by_user, self.order)
            refs.append(tuple(got) if self.num_shards > 1 else (got,))
        # a Table source is in the pieces now: the actors get the refs, not another copy of the rows
        return replace(self, pieces=tuple(refs), source=None if isinstance(self.source, pa.Table) else self.source)

    def read(self, index: int, rec=None) -> pa.Table:
        """Shard ``index``'s thin rows: a user-hash part, or (``order`` given) share ``index`` of the epoch's
        global batches in the epoch's order, read by ``rec`` (a Reconstructor of the projection); gathered
        from the object store when the plan was scattered."""
        if self.pieces is not None:
            return gather(_deps.ray().get([p[index] for p in self.pieces]), self.order is not None)
        if self.order is None:
            return read_shard(self.source, list(self.columns), self.num_shards, index, self.by_user)
        extra = [c for c in self.columns if c not in rec.thin_columns]
        return rec.epoch_rows(self.source, share=(index, self.num_shards), extra_columns=extra, **self.order)
