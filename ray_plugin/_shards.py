"""Framework-neutral pieces of the Ray adapter: which store, which columns, which user shard.

Data affinity without a shuffle: the thin rows are split by user hash (``engine.shard``) into
``num_shards`` parts, each read whole by one reconstruct call, so every thin row of a user lands in one
part and a reconstruct actor reads that user's events once per epoch. The price is that each part's
read scans the thin rows' needed columns (``num_shards`` scans of the thin rows, which are small next to
the events they point at; bench/bench_ray.py measures both). Reads are sequential, so a part is the
same rows in the same order every time: a retried call re-yields exactly what the failed one did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

import engine

# thin-row columns the engine writes; every other column is a pass-through column (ids, labels...)
_THIN_OWN = frozenset({"user_id", "request_ts", "store_id", "version", "imm_hw"})


@dataclass(frozen=True)
class StoreRef:
    """What a worker needs to open the store: its root and the version the driver saw (picklable)."""

    root: Any  # a local path, or the store's remote root (pickles with its pyarrow filesystem)
    version: int

    @classmethod
    def of(cls, store, version=None) -> StoreRef:
        """From a path (at ``version``, default the newest) or an open ``UIHStore`` (at its version)."""
        if isinstance(store, engine.UIHStore):
            return cls(store.root, int(store.version if version is None else version))
        if not isinstance(store, (str, Path)):
            raise engine.InvalidArgument(f"store must be a path or an open UIHStore, got {type(store).__name__}")
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


@dataclass(frozen=True)
class ShardPlan:
    """How the thin rows split into ``num_shards`` parts, each read whole by one reconstruct call."""

    source: object  # a thin-row Table, or Parquet path(s) (picklable: strings)
    columns: tuple  # the thin columns the projection needs, then the pass-through columns
    num_shards: int
    by_user: bool = True
    order: dict | None = None  # iter_batches' order keywords (and batch_size): shards are shares of the epoch

    def read(self, index: int, rec=None) -> pa.Table:
        """Shard ``index``'s thin rows: a user-hash part, or (``order`` given) share ``index`` of the epoch's
        global batches in the epoch's order, read by ``rec`` (a Reconstructor of the projection)."""
        if self.order is None:
            return read_shard(self.source, list(self.columns), self.num_shards, index, self.by_user)
        extra = [c for c in self.columns if c not in rec.thin_columns]
        return rec.epoch_rows(self.source, share=(index, self.num_shards), extra_columns=extra, **self.order)
