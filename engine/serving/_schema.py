"""The store's declared schema and the validation of every table that crosses the API."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._errors import InvalidArgument, SchemaError
from ._fs import RemotePath

# Fixed-width dtypes only: the kernels copy columns as raw 4- or 8-byte words, so any other width would
# need its own kernel path for no gain in this domain (ids, codes, times, dwell, scores).
SUPPORTED_DTYPES = ("int32", "int64", "float32", "float64")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
RESERVED = frozenset({"user_id", "ts", "seq", "request_ts", "version", "imm_hw", "lengths", "sealed"})


@dataclass(frozen=True)
class StoreSchema:
    """Declared feature columns (name -> numpy dtype name) and which one holds the event type."""

    columns: dict
    event_type_column: str

    @classmethod
    def declare(cls, columns, event_type_column):
        if not isinstance(columns, Mapping) or not columns:
            raise SchemaError("declare at least one feature column as a dict, e.g. columns={'item_id': 'int64'}")
        cols = {}
        for name, dtype in columns.items():
            name = str(name)
            if name in RESERVED or name.startswith("tail_"):
                raise SchemaError(f"column name {name!r} is reserved; rename it")
            try:
                dt = np.dtype(dtype).name
            except (TypeError, ValueError):
                raise SchemaError(f"column {name!r} has dtype {dtype!r}, which is not a numpy dtype; use one of "
                                  f"{', '.join(SUPPORTED_DTYPES)}") from None
            if dt not in SUPPORTED_DTYPES:
                raise SchemaError(f"column {name!r} has dtype {dt}; use one of {', '.join(SUPPORTED_DTYPES)}")
            cols[name] = dt
        if not isinstance(event_type_column, str) or event_type_column not in cols:
            raise SchemaError(f"event_type_column {event_type_column!r} is not a declared column {list(cols)}")
        if not cols[event_type_column].startswith("int"):
            raise SchemaError(f"event_type_column {event_type_column!r} must be an integer column")
        return cls(cols, event_type_column)

    def dtype(self, name: str) -> np.dtype:
        """Dtype of any column a projection may name: a declared column, ``ts`` or ``seq``."""
        if name in ("ts", "seq", "user_id"):
            return np.dtype("int64")
        try:
            return np.dtype(self.columns[name])
        except KeyError:
            raise SchemaError(
                f"unknown column {name!r}; choose from {sorted([*self.columns, 'ts', 'seq'])}"
            ) from None

    def event_columns(self) -> list:
        """Physical column order of an event row: ``user_id, seq, ts`` then declared columns."""
        return ["user_id", "seq", "ts", *self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, pa.from_numpy_dtype(self.dtype(c))) for c in self.event_columns()])

    def to_json(self) -> dict:
        # a list of pairs, not a dict: manifests are written with sorted keys and column order matters
        return {"columns": [[c, d] for c, d in self.columns.items()], "event_type_column": self.event_type_column}

    @classmethod
    def from_json(cls, d) -> StoreSchema:
        return cls({c: t for c, t in d["columns"]}, d["event_type_column"])


def check_int(value, name: str, lo=None, hi=None, error=InvalidArgument) -> int:
    """``value`` as a Python int in ``[lo, hi]`` (None: unbounded); ``error`` for bools, strings, floats
    (even whole ones: only safe casts), None and values out of range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = " and ".join(b for b in (f">= {lo}" if lo is not None else "",
                                         f"<= {hi}" if hi is not None else "") if b)
        raise error(f"{name} must be an integer {bounds}, got {v}")
    return v


def as_int64(value, name: str) -> int:
    """``value`` as a Python int that fits int64; SchemaError for bools, strings, floats, None, overflow."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise SchemaError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if not INT64_MIN <= v <= INT64_MAX:
        raise SchemaError(f"{name} {v} does not fit int64")
    return v


def check_bool(value, name: str) -> bool:
    """``value`` if it is a bool: a string such as ``"no"`` is truthy, so it would silently mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_max_len(max_len) -> int:
    """``snapshot(materialize=True)``'s ``max_len``: an integer in ``[1, 2**63)`` (a SchemaError, as SPEC §4
    says of ``max_len < 1``)."""
    return check_int(max_len, "max_len (materialize=True)", lo=1, hi=INT64_MAX, error=SchemaError)


def check_path(path, name: str = "path"):
    """``path`` if it can name a location: a str or os.PathLike (local path or URI), or a resolved
    ``RemotePath``."""
    if isinstance(path, RemotePath):
        return path
    s = path if isinstance(path, str) else os.fspath(path) if isinstance(path, os.PathLike) else None
    if not isinstance(s, str) or not s or "\0" in s:
        raise InvalidArgument(f"{name} must be a non-empty str or os.PathLike (a folder or a URI such as "
                              f"s3://bucket/store), got {path!r} ({type(path).__name__})")
    return path


def check_names(value, name: str) -> list:
    """``value`` as a list of column names: one str, or an iterable of str."""
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        names = None
    if names is None or isinstance(value, Mapping) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument(f"{name} must be a column name or a list of them, got {value!r}")
    return names


def _table_like(data) -> bool:
    """Whether ``data`` is a kind of input ``pa.table`` takes (so a failure is about its contents)."""
    return isinstance(data, (Mapping, list, tuple)) or any(
        hasattr(data, a) for a in ("__arrow_c_stream__", "__arrow_c_array__", "__dataframe__"))


def as_table(data, what: str) -> pa.Table:
    """``data`` as a Table: InvalidArgument when it is no kind of table, SchemaError when its columns
    cannot be read (unequal lengths, mixed types, Python ints beyond 64 bits, ...)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if not _table_like(data):
        raise InvalidArgument(f"{what} must be a pyarrow.Table or a dict of equal-length columns, got "
                              f"{type(data).__name__}")
    try:
        return pa.table(data)
    except (TypeError, ValueError, OverflowError, pa.ArrowException) as e:
        raise SchemaError(f"{what} must be a pyarrow.Table or a dict of equal-length columns: "
                          f"{_unreadable(data) or e}") from e


def _unreadable(data) -> str | None:
    """Which column of a dict ``pa.table`` refused, and why (on the error path only), or None."""
    if not isinstance(data, Mapping):
        return None
    for name, values in data.items():
        try:
            if not isinstance(values, (pa.Array, pa.ChunkedArray)):
                pa.array(values)
        except OverflowError:
            return f"column {name!r} holds an integer beyond 64 bits"
        except (TypeError, ValueError, pa.ArrowException) as e:
            return f"column {name!r} cannot be read ({e})"
    return None


def cast_array(arr, dtype, what: str):
    """Arrow array ``arr`` (or a ChunkedArray) as ``dtype`` when the cast is safe (SPEC §4): integers only
    into integer columns, integers or floats into float columns, no value changed (a float64 overflowing
    float32 included), no nulls; else a SchemaError naming ``what``. No copy when the type already matches."""
    target = pa.from_numpy_dtype(np.dtype(dtype))
    src = arr.type
    ok = pa.types.is_integer(src) if pa.types.is_integer(target) else (
        pa.types.is_integer(src) or pa.types.is_floating(src))
    if not ok:
        raise SchemaError(f"{what} has type {src}; expected {target} (only safe casts: "
                          f"{'no floats into an integer column' if pa.types.is_integer(target) else 'numbers only'})")
    if arr.null_count:
        raise SchemaError(f"{what} has {arr.null_count} null(s); nulls are not allowed")
    if src == target:
        return arr
    try:
        out = pc.cast(arr, target, safe=True)
    except pa.ArrowInvalid as e:
        raise SchemaError(f"{what} does not fit {target} without loss: {e}") from e
    if pa.types.is_floating(src) and src.bit_width > target.bit_width and \
            pc.any(pc.and_(pc.is_finite(arr), pc.invert(pc.is_finite(out)))).as_py():
        raise SchemaError(f"{what} has values beyond the range of {target} (they would become infinite)")
    return out


def column(table: pa.Table, name: str, dtype, what: str) -> np.ndarray:
    """Column ``name`` as a contiguous numpy array of ``dtype``, refusing nulls and lossy casts."""
    arr = cast_array(table.column(name), dtype, f"{what} column {name!r}")
    return np.ascontiguousarray(arr.to_numpy())


def check_columns(table: pa.Table, required, optional=(), what="input") -> None:
    names = table.column_names
    missing = [c for c in required if c not in names]
    extra = [c for c in names if c not in required and c not in optional]
    if missing or extra or len(set(names)) != len(names):
        raise SchemaError(
            f"{what} columns {names} do not match: missing {missing}, unexpected {extra}; "
            f"expected {list(required)}" + (f" plus any of {list(optional)}" if optional else ""))


def coerce_events(data, schema: StoreSchema) -> dict:
    """Validate an ``append`` input; returns numpy columns ``user_id, ts, <declared...>``."""
    t = as_table(data, "append events")
    check_columns(t, ["user_id", "ts", *schema.columns], what="append events")
    out = {"user_id": column(t, "user_id", "int64", "append"), "ts": column(t, "ts", "int64", "append")}
    if len(out["ts"]) and out["ts"].min() < 0:
        raise SchemaError("append column 'ts' has negative values; ts is microseconds since the epoch")
    for c, dt in schema.columns.items():
        out[c] = column(t, c, dt, "append")
    return out


def coerce_updates(data, schema: StoreSchema) -> dict:
    """Validate an ``update`` input; returns numpy ``user_id, seq`` and the updated declared columns."""
    t = as_table(data, "update events")
    if "ts" in t.column_names:
        raise SchemaError("update may not change 'ts' (event time is fixed at append); drop that column")
    check_columns(t, ["user_id", "seq"], optional=list(schema.columns), what="update events")
    out = {"user_id": column(t, "user_id", "int64", "update"), "seq": column(t, "seq", "int64", "update")}
    for c in t.column_names:
        if c in schema.columns:
            out[c] = column(t, c, schema.columns[c], "update")
    return out


def coerce_requests(data) -> tuple:
    """Validate ``snapshot`` requests; returns (table, user_id, request_ts) with pass-through columns kept."""
    t = as_table(data, "snapshot requests")
    for c in ("user_id", "request_ts"):
        if c not in t.column_names:
            raise SchemaError(f"snapshot requests need a {c!r} column; got {t.column_names}")
    return t, column(t, "user_id", "int64", "requests"), column(t, "request_ts", "int64", "requests")
