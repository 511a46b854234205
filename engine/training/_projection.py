"""``Projection``: what one tenant reads (columns, event types, time window, length, alignment)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike

from .._errors import SchemaError

MAX_LEN = 1 << 24  # 16M events per example: far beyond any model, and a [B, max_len] batch must fit memory
# the event-type filter is a table of flags from the smallest kept code to the largest (one lookup per event)
MAX_ACTION_SPAN = 1 << 24
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
NOT_EVENT_COLUMNS = frozenset({"user_id", "request_ts", "store_id", "version", "imm_hw", "lengths", "sealed"})


class Projection:
    """A tenant's view of the shared thin rows (docs/concepts.md).

    Parameters
    ----------
    columns : list of str
        Declared columns, ``"ts"`` or ``"seq"``; one ``[B, max_len]`` output each.
    max_len : int
        Keep the last ``max_len`` kept events (>= 1).
    actions : iterable of int or None
        Event-type codes to keep; None keeps every type.
    window_us : int or None
        Keep events with ``ts >= request_ts - window_us``; None keeps all.
    align : {"left", "right"}
        Where the ``n`` events sit in the row; the rest is ``pad_value``.
    pad_value : number
        Fill value, cast exactly to each column's dtype.
    layout : {"padded", "jagged"}
        ``"padded"``: ``[B, max_len]`` per column. ``"jagged"``: the 1-D values of all rows end to end,
        with ``batch["offsets"]`` (``[B + 1]`` int64) and ``batch["lengths"]``; no padding.
    """

    columns: list[str]
    max_len: int
    actions: tuple[int, ...] | None
    window_us: int | None
    align: Literal["left", "right"]
    layout: Literal["padded", "jagged"]

    def __init__(self, columns: str | Sequence[str], max_len: int = 4096, actions: Iterable[int] | None = None,
                 window_us: int | None = None, align: Literal["left", "right"] = "left", pad_value: float = 0,
                 layout: Literal["padded", "jagged"] = "padded") -> None:
        if isinstance(columns, str):
            columns = [columns]
        try:
            self.columns = list(columns)
        except TypeError:
            raise SchemaError(f"projection columns must be a column name or a list of them, got {columns!r}") from None
        if not all(isinstance(c, str) for c in self.columns):
            raise SchemaError(f"projection columns must be column names (str), got {self.columns!r}")
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise SchemaError(f"projection columns must be non-empty and distinct, got {self.columns}")
        if "lengths" in self.columns or "offsets" in self.columns:
            raise SchemaError("'lengths' and 'offsets' are produced by the batches; do not project them")
        bad = sorted(NOT_EVENT_COLUMNS & set(self.columns))
        if bad:
            raise SchemaError(f"projection column(s) {bad} are not event columns; project declared columns, "
                              "'ts' or 'seq' (pass thin-row columns with extra_columns=)")
        if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or not 1 <= max_len <= MAX_LEN:
            raise SchemaError(f"max_len must be an integer in [1, {MAX_LEN}], got {max_len!r}")
        self.max_len = int(max_len)
        self.actions: tuple[int, ...] | None = None if actions is None else _codes(actions)
        if window_us is not None:
            if isinstance(window_us, bool) or not isinstance(window_us, numbers.Integral) or window_us < 0:
                raise SchemaError(f"window_us must be None or an integer >= 0 (microseconds), got {window_us!r}")
            window_us = min(int(window_us), INT64_MAX)  # a longer window keeps everything, like INT64_MAX
        self.window_us = window_us
        if align not in ("left", "right"):
            raise SchemaError(f"align must be 'left' or 'right', got {align!r}")
        self.align = align
        if not isinstance(pad_value, numbers.Real) or isinstance(pad_value, (bool, np.bool_)):
            raise SchemaError(f"pad_value must be a number, got {pad_value!r}")
        self.pad_value: float = pad_value
        if layout not in ("padded", "jagged"):
            raise SchemaError(f"layout must be 'padded' or 'jagged', got {layout!r}")
        self.layout = layout

    def pad_for(self, dtype: DTypeLike) -> np.ndarray:
        """The pad value as a 0-d array of ``dtype``; refuses values the dtype cannot hold exactly."""
        dtype = np.dtype(dtype)
        try:
            with np.errstate(all="ignore"):
                v = np.array(self.pad_value).astype(dtype)
        except (OverflowError, TypeError, ValueError):  # e.g. an int beyond 64 bits
            v = None
        if v is not None and not np.isfinite(float(self.pad_value)) and dtype.kind == "f":
            return v
        if v is None or v.item() != self.pad_value:
            raise SchemaError(f"pad_value {self.pad_value!r} does not fit dtype {dtype} exactly")
        return v

    def actions_for(self, dtype: DTypeLike) -> tuple[int, ...] | None:
        """The event-type codes to keep, each checked to fit the event-type column's ``dtype`` (a code it
        cannot hold would be an unsafe cast: SchemaError); None keeps every type."""
        if self.actions is None:
            return None
        info = np.iinfo(np.dtype(dtype))
        bad = [a for a in self.actions if not info.min <= a <= info.max]
        if bad:
            raise SchemaError(f"action code(s) {bad} do not fit the event-type column's dtype {np.dtype(dtype)}; "
                              "keep codes the column can hold")
        return self.actions

    def __repr__(self):
        return (f"Projection(columns={self.columns}, max_len={self.max_len}, actions={self.actions}, "
                f"window_us={self.window_us}, align={self.align!r}, pad_value={self.pad_value!r}, "
                f"layout={self.layout!r})")

    def __eq__(self, other):
        return isinstance(other, Projection) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))


def _codes(actions: Iterable[int]) -> tuple[int, ...]:
    """``actions`` as sorted distinct int64 codes; SchemaError for anything but integers (``1.5`` is not
    code 1), and for codes farther apart than the filter's table spans."""
    try:
        given: list = list(actions)
    except TypeError:
        raise SchemaError(f"actions must be None or an iterable of integer codes, got {actions!r}") from None
    bad = [a for a in given if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral)
           or not INT64_MIN <= int(a) <= INT64_MAX]
    if bad or isinstance(actions, (str, bytes)):
        raise SchemaError(f"actions must be None or an iterable of int64 codes, got {bad[:3] or actions!r}")
    codes = tuple(sorted({int(a) for a in given}))
    if codes and codes[-1] - codes[0] >= MAX_ACTION_SPAN:
        raise SchemaError(f"actions {codes[0]} to {codes[-1]} span more than {MAX_ACTION_SPAN} codes (the event-type "
                          "filter is a table from the smallest code to the largest); use codes closer together")
    return codes
