"""``Unassembled``: a batch planned and staged but not yet written, for a consumer that writes it itself.

``Reconstructor.iter_unassembled`` yields these in ``iter_batches``' order. A consumer runs the two
kernels (``kernels.slice_*`` then ``kernels.assemble_*``) on them into memory of its own: a DALI operator
writes each batch straight into DALI's output buffers, so the batch is written once, where the training
loop reads it, instead of written by the engine and copied by DALI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import kernels


class Lane(NamedTuple):
    """One lane of a chunk's decoded events: row ``index`` of the 8-byte (``width`` 8, ``w8``) or the
    4-byte (``width`` 4, ``w4``) lanes of ``Unassembled.stored`` and ``.logged``."""

    width: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, which no caller uses on a Lane


class Column(NamedTuple):
    """A projected column of an ``Unassembled`` batch: its values are ``lane`` of the stored and logged
    events, and its pad word is the ``lane.index`` of ``Unassembled.pad``'s words of that width."""

    name: str
    dtype: np.dtype
    lane: Lane


class FilterLanes(NamedTuple):
    """Where the lanes that slicing and filtering read (``kernels.Source.seq``, ``.ts``, ``.etype``) sit in
    the stored and logged events; None where nothing reads one (the kernels then get an empty array)."""

    seq: Lane | None
    ts: Lane | None
    event_type: Lane | None


@dataclass(frozen=True, eq=False, slots=True)
class Unassembled:
    """Everything the kernels read to write one batch of ``rows`` padded rows of ``max_len`` events.

    ``assemble()`` writes it with the CPU kernels: what a consumer's own writes must equal.
    """

    #: examples (rows) of this batch
    rows: int
    #: the chunk's decoded stored (immutable) events, read in place, with the lanes ``filter_lanes`` names
    stored: kernels.Source
    #: the stored events as per-user runs of positions of ``stored``, in ``seq`` order
    runs: kernels.Runs
    #: the chunk's logged tail events (the thin rows' own), laid out as ``stored``
    logged: kernels.Source
    #: the projection's event-type set and time window
    event_filter: kernels.Filter
    #: per row of this batch: its user's runs, versioned cut, logged tail and window start
    examples: kernels.Examples
    #: each lane's pad word (the projection's pad value in the column's dtype)
    pad: kernels.Words
    max_len: int
    #: True: rows are right-aligned (``align="right"``), their padding first
    right_aligned: bool
    #: the projected columns, in the projection's order
    columns: tuple[Column, ...]
    filter_lanes: FilterLanes
    #: the batch's pass-through thin-row columns, ``[rows]`` each
    extras: dict
    #: the staged chunk ``stored`` points into: hold it until the writes are done (it pins the decoded row
    #: groups). The same object for every batch of a chunk, so per-chunk work can be done once
    chunk: object

    def assemble(self) -> dict:
        """The batch written by the CPU kernels into fresh NumPy arrays (what a consumer's own writes must
        equal): ``{column: [rows, max_len], "lengths": [rows], **extras}``."""
        n, L = self.rows, self.max_len
        sel = np.empty((n, kernels.SEL_COLUMNS), np.int64)
        kernels.slice_cpu(self.stored, self.runs, self.logged, self.event_filter, self.examples, L, sel)
        w8 = np.empty((len(self.pad.w8), n * L), np.int64)
        w4 = np.empty((len(self.pad.w4), n * L), np.int32)
        lengths = np.empty(n, np.int32)
        out = kernels.Output(w8, w4, lengths, np.arange(n, dtype=np.int64) * L, L)
        kernels.assemble_cpu(self.stored, self.runs, self.logged, self.event_filter, self.examples, sel, L,
                             self.right_aligned, self.pad, out)
        words: dict[int, np.ndarray] = {8: w8, 4: w4}
        arrays = {c.name: words[c.lane.width][c.lane.index].view(c.dtype).reshape(n, L) for c in self.columns}
        return {**arrays, "lengths": lengths, **self.extras}
