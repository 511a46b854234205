"""Thin rows checked against the store and the projection: pointers, tails and pass-through columns.

Every check is a typed error raised before any store byte is decoded: rows of another store or newer than
the store (``VersionError``), pointers that are not safe integers, tails whose lists disagree with
``tail_seq`` or whose values do not fit their column (``SchemaError``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._errors import SchemaError, VersionError
from ..serving._schema import as_table, cast_array
from . import _plan

_INT64 = pa.int64()


def _list_parts(col: pa.ChunkedArray) -> tuple:
    """``(offsets [n + 1] from 0, values)`` of a list column without null lists, read from the list
    arrays' own offsets (``tails``' general path; the values as Arrow, a single chunk's without a copy)."""
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


def _same_offsets(a: pa.ListArray, b: pa.ListArray) -> bool:
    """Whether list arrays ``a`` and ``b`` (of equal length) have the same offsets: equal offset buffers at the
    same array offset and offset width say so without making the offsets arrays (this runs per tail column of
    every chunk)."""
    if type(a) is type(b) and a.offset == b.offset and a.buffers()[1].equals(b.buffers()[1]):
        return True
    return a.offsets.equals(b.offsets)


def _values(arr: pa.ListArray, lo: int, hi: int) -> pa.Array:
    """The values of list array ``arr`` between raw offsets ``lo`` and ``hi`` (its lists' whole extent, when
    they are its offsets' ends), without copying a value."""
    v = arr.values
    return v.slice(lo, hi - lo) if lo or hi != len(v) else v


def _pointer(col: pa.ChunkedArray, c: str) -> np.ndarray:
    """Thin column ``c`` (an integer pointer column, ``col``) as int64 NumPy, refusing nulls (Arrow would hand
    them over as floats) and unsafe casts (a float ``user_id`` 0.9 is not user 0)."""
    if col.null_count:
        raise SchemaError(f"thin column {c} has {col.null_count} null(s); every thin row needs a {c}: make "
                          "thin rows with UIHStore.snapshot()")
    if col.type == _INT64:  # snapshot()'s form: nothing to cast (cast_array's checks cost microseconds per call)
        return col.to_numpy()
    return cast_array(col, np.int64, f"thin column {c}").to_numpy()


class ThinRowChecker:
    """Reads a chunk of thin rows for one reconstructor: checks them, plans their users, lays out tails.

    ``tail_columns``: the store columns whose logged tail values the kernels read (``tail_<c>``), in lane
    order; ``thin_columns``: every thin column the projection needs.
    """

    def __init__(self, store, projection, thin_columns: list, tail_columns: list, use_window: bool):
        self.store, self.projection = store, projection
        self.thin_columns, self.tail_columns = thin_columns, tail_columns
        self._tail_names = [f"tail_{c}" for c in tail_columns]
        self._window = projection.window_us if use_window else None
        self._mine = pa.array([store.store_id], pa.string())  # snapshot()'s store_id dictionary
        # the thin-row schema seen last, its columns' positions (a lookup by name costs a microsecond or two,
        # for every thin column of every chunk) and whether its tail columns' types passed ``tails``' checks:
        # one tuple, replaced whole, as the planning thread and a caller's may both read it
        self._known: tuple = (None, {}, False)

    def _columns(self, t: pa.Table, names) -> tuple:
        """``(known, columns)``: the schema facts ``_known`` of ``t``'s schema, and its columns ``names``,
        taken by position."""
        schema, known = t.schema, self._known
        if known[0] is None or not schema.equals(known[0]):
            # -1 for a duplicated name: looked up by name below, which raises as it always did
            known = self._known = (schema, {name: schema.get_field_index(name) for name in schema.names}, False)
        at = known[1]
        return known, [t.column(name) if at.get(name, -1) < 0 else t.column(at[name]) for name in names]

    def table(self, thin, extra=()) -> pa.Table:
        """``thin`` as a Table holding every column this projection needs plus ``extra``."""
        t = as_table(thin, "thin rows")
        have = set(t.schema.names)  # a fresh list per access: read once
        missing = [c for c in [*self.thin_columns, *extra] if c not in have]
        if missing:
            raise SchemaError(f"thin rows lack column(s) {missing} needed by {self.projection}; "
                              "make them with UIHStore.snapshot()")
        return t  # read by name from here on: no need to pay for a select of the columns it uses

    def extras(self, t: pa.Table, extra, to_device, keep=None) -> dict:
        """The pass-through columns ``extra`` of ``t``, each moved where the batches live by ``to_device``."""
        out = {}
        for c in extra:
            if c in self.projection.columns or c in ("lengths", "offsets"):
                raise SchemaError(f"extra column {c!r} clashes with a projected output; rename it")
            col = t.column(c)
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or
                    pa.types.is_boolean(col.type)) or col.null_count:
                raise SchemaError(f"extra column {c!r} must be a non-null numeric or boolean scalar column, "
                                  f"got {col.type}")
            out[c] = to_device(col.to_numpy(zero_copy_only=False), keep)
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

    def validate(self, t: pa.Table) -> tuple:
        """``(plan, imm_hw, ts_min, view)``: the chunk's users planned against ``view``, the store's
        immutable tier at a version no older than any row's, and each row's window start, once the thin
        rows are known to point into this store's sealed events."""
        sid, *ptrs = self._columns(t, ("store_id", "version", "user_id", "imm_hw", "request_ts"))[1]
        other = self._other_store_ids(sid)
        if other:
            raise VersionError(f"thin rows of store {other[0]!r} cannot be reconstructed by store "
                               f"{self.store.store_id!r} ({self.store.root}); open the store they were logged from")
        version, uid, imm_hw, rts = (_pointer(col, c) for col, c in zip(ptrs, ("version", "user_id", "imm_hw",
                                                                               "request_ts")))
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

    def _plan_rows(self, uid, imm_hw, rts, version, view) -> tuple:
        users, ends = view.user_counts()
        return _plan.plan_chunk(uid, imm_hw, rts, self._window, self.projection.max_len, users, ends, version=version)

    def tails(self, t: pa.Table) -> tuple:
        """``(values, offsets)``: each tail lane column's values of all rows end to end (None when there
        are no tail events), and the rows' offsets into them (``[n + 1]``, from 0), after checking every
        tail column's lists match ``tail_seq``'s."""
        known, (seq, *cols) = self._columns(t, ("tail_seq", *self._tail_names))
        if not known[2]:  # the types are the schema's: checked once per schema
            for name, col in (("tail_seq", seq), *zip(self._tail_names, cols)):
                if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                    raise SchemaError(f"thin column {name} has type {col.type}; expected a list column: make thin "
                                      "rows with UIHStore.snapshot()")
            if not pa.types.is_integer(seq.type.value_type):
                raise SchemaError(f"thin column tail_seq holds {seq.type.value_type}; expected integer seqs")
            self._known = (*known[:2], True)
        if seq.num_chunks == 1 and not seq.null_count and all(
                c.num_chunks == 1 and not c.null_count for c in cols):
            # snapshot()'s form, read as is: one chunk per column, every column's lists at tail_seq's offsets
            # (compared in Arrow, not in NumPy: this runs per chunk and per tail column)
            s0 = seq.chunk(0)
            if all(_same_offsets(c.chunk(0), s0) for c in cols):
                o = s0.offsets.to_numpy()
                lo, hi = int(o[0]), int(o[-1])
                if lo == hi:
                    return None, (o - lo if lo else o)  # no tail events (all sealed): no values to read
                out = {c: self._tail_values(_values(col.chunk(0), lo, hi), c)
                       for c, col in zip(self.tail_columns, cols)}
                return out, (o - lo if lo else o)
        offsets, _ = _list_parts(seq)
        out = {}
        for c, col in zip(self.tail_columns, cols):
            off, flat = _list_parts(col)
            if len(off) != len(offsets) or (off != offsets).any():  # np.array_equal's checks cost more
                raise SchemaError(f"thin column tail_{c} has list lengths that disagree with tail_seq")
            out[c] = self._tail_values(flat, c)
        return out, offsets

    def _tail_values(self, values, c: str) -> np.ndarray:
        """Tail values of column ``c`` as its dtype, cast only when no value changes (an int64 action beyond
        int32 or a fractional item id is a SchemaError), without a copy when the type matches."""
        return cast_array(values, self.store.schema.dtype(c), f"thin column tail_{c} (its list values)").to_numpy()
