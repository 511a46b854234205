"""Thin-row sources: Parquet path(s) or a Table, read with column projection, re-cut into chunks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._errors import InvalidArgument, SchemaError
from .._types import ThinSource
from ..serving import _fs
from ..serving._schema import as_table, cast_array, check_int, check_path

THIN_META = ("user_id", "request_ts", "store_id", "version", "imm_hw")


def parquet_files(source: str | Path | _fs.RemotePath | Iterable) -> list[Path | _fs.RemotePath]:
    """The Parquet files of a path, a folder, a URI (``s3://bucket/thin/``: one ``pyarrow.fs`` listing;
    options such as ``?endpoint_override=...`` go in the URI) or a list of them, each folder sorted by name."""
    if isinstance(source, (str, Path, _fs.RemotePath)):
        p = _fs.resolve(check_path(source, "thin_source"))  # a Path, or a RemotePath for a URI
        if not _fs.exists(p):
            raise SchemaError(f"thin-row source {p} does not exist; pass a Parquet file, a folder of them (local "
                              "or a URI such as s3://bucket/thin/) or a Table")
        if not _fs.is_dir(p):
            return [p]
        return [p / n for n in sorted(_fs.sizes(p)) if n.endswith(".parquet")]
    if not isinstance(source, Iterable) or isinstance(source, (bytes, Mapping)):
        raise InvalidArgument(f"thin_source must be a Parquet file, a folder of them, a URI, a list of those or a "
                              f"pyarrow.Table, got {type(source).__name__}")
    return [q for s in source for q in parquet_files(s)]


def thin_batches(source, columns: list):
    """Record batches of only ``columns`` from a Table, a Parquet file, a folder or a list of files."""
    if isinstance(source, (pa.Table, pa.RecordBatch, Mapping)):
        t = as_table(source, "thin rows")
        missing = [c for c in columns if c not in t.column_names]
        if missing:
            raise SchemaError(f"thin rows lack column(s) {missing}; make them with UIHStore.snapshot()")
        yield from t.select(columns).to_batches()
        return
    for path, pf in _parquet(source):
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise SchemaError(f"{path} lacks thin-row column(s) {missing}; make them with UIHStore.snapshot()")
        yield from pf.iter_batches(batch_size=65_536, columns=columns)


def _parquet(source):
    """``(path, ParquetFile)`` of each file of a Parquet thin source, opened for random access (no readahead
    past the projected columns)."""
    paths = parquet_files(source)
    if not paths:
        raise SchemaError(f"no Parquet thin-row files found in {source!r}")
    for path in paths:
        try:
            yield path, pq.ParquetFile(_fs.open_input(path))
        except pa.ArrowInvalid as e:
            raise SchemaError(f"thin-row source {path} is not a Parquet file ({e}); pass the files that "
                              "UIHStore.snapshot()'s rows were written to") from e


def thin_table(source, columns: list) -> pa.Table:
    """The whole thin source's ``columns`` as one Table (empty, with those columns, when it has no rows)."""
    batches = list(thin_batches(source, columns))
    if batches:
        return pa.Table.from_batches(batches)
    if isinstance(source, (pa.Table, pa.RecordBatch, Mapping)):
        return as_table(source, "thin rows").select(columns).slice(0, 0)
    _, pf = next(_parquet(source))
    return pf.schema_arrow.empty_table().select(columns)


def count_rows(source) -> int:
    """The thin source's rows, from the Parquet footers (no row read) or the Table."""
    if isinstance(source, (pa.Table, pa.RecordBatch, Mapping)):
        return as_table(source, "thin rows").num_rows
    return sum(pf.metadata.num_rows for _, pf in _parquet(source))


def pass_through_columns(source) -> list:
    """The columns ``snapshot`` copied from the requests (ids, labels...): neither thin metadata nor tails."""
    if isinstance(source, (pa.Table, pa.RecordBatch)):
        names = source.schema.names
    else:
        paths = parquet_files(source)
        if not paths:
            raise SchemaError(f"no Parquet thin-row files found in {source!r}")
        names = pq.read_schema(_fs.open_input(paths[0])).names
    return [c for c in names if c not in THIN_META and not c.startswith("tail_")]


def rechunk(batches, rows: int):
    """Tables of exactly ``rows`` rows (the last may be shorter) from a stream of record batches."""
    pending, have = [], 0
    for b in batches:
        pending.append(b)
        have += b.num_rows
        while have >= rows:
            t = pa.Table.from_batches(pending)
            yield t.slice(0, rows)
            rest = t.slice(rows)
            pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending) if pending else None


def user_hash(user_id: np.ndarray) -> np.ndarray:
    """splitmix64 of the user id: a stable, well-mixed hash for sharding."""
    z = np.asarray(user_id).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard(thin: ThinSource, num_shards: int, index: int) -> pa.Table:
    """The thin rows of shard ``index`` of ``num_shards``, split by user hash (order kept).

    Every user lands in exactly one shard, so each trainer rank reads a disjoint set of users.
    """
    num_shards = check_int(num_shards, "num_shards", lo=1)
    index = check_int(index, "index", lo=0, hi=num_shards - 1)
    t = as_table(thin, "thin rows")
    if "user_id" not in t.column_names:
        raise SchemaError(f"thin rows need a user_id column to shard by; got {t.column_names}")
    h = user_hash(cast_array(t.column("user_id"), np.int64, "thin column user_id").to_numpy())
    return t.filter(pa.array(h % np.uint64(num_shards) == np.uint64(index)))
