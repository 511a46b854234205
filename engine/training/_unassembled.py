"""``Unassembled``: a batch planned and staged but not yet written, for a consumer that writes it itself.

``Reconstructor.iter_unassembled`` yields these in ``iter_batches``' order. A consumer runs the two
kernels (``kernels.slice_*`` then ``kernels.assemble_*``) on them into memory of its own: a DALI operator
writes each batch straight into DALI's output buffers, so the batch is written once, where the training
loop reads it, instead of written by the engine and copied by DALI.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import kernels


class Unassembled(NamedTuple):
    """Everything the kernels read to write one batch of ``rows`` padded rows.

    The kernels' argument groups (``src``, ``runs``, ``tail``, ``flt``, ``examples`` already cut to this
    batch's rows, ``pad``, ``max_len``, ``right``) plus ``columns``: per projected column, in the
    projection's order, ``(name, dtype, width, lane)``: the column is lane ``lane`` of ``src.w8``/``tail.w8``
    (``width`` 8) or of ``src.w4``/``tail.w4`` (``width`` 4), and its pad word is ``pad.w8[lane]`` or
    ``pad.w4[lane]``. ``lanes``: where ``Source.seq``, ``.ts`` and ``.etype`` sit, ``(width, lane)`` as for
    columns (None: an empty array, nothing reads it). ``extras``: the batch's pass-through columns,
    ``[rows]`` each. ``keep``: hold it until the kernels are done (it pins the decoded row groups ``src``
    reads).
    """

    rows: int
    src: kernels.Source
    runs: kernels.Runs
    tail: kernels.Source
    flt: kernels.Filter
    examples: kernels.Examples
    pad: kernels.Words
    max_len: int
    right: bool
    columns: tuple
    lanes: tuple  # ``src``'s and ``tail``'s seq, ts and event-type lanes: ``(width, lane)`` each, or None
    extras: dict
    keep: object

    def assemble(self) -> dict:
        """The batch written by the CPU kernels into fresh NumPy arrays (what a consumer's own writes must
        equal): ``{column: [rows, max_len], "lengths": [rows], **extras}``."""
        n, L = self.rows, self.max_len
        sel = np.empty((n, 5), np.int64)
        kernels.slice_cpu(self.src, self.runs, self.tail, self.flt, self.examples, L, sel)
        w8 = np.empty((len(self.pad.w8), n * L), np.int64)
        w4 = np.empty((len(self.pad.w4), n * L), np.int32)
        lengths = np.empty(n, np.int32)
        out = kernels.Output(w8, w4, lengths, np.arange(n, dtype=np.int64) * L, L)
        kernels.assemble_cpu(self.src, self.runs, self.tail, self.flt, self.examples, sel, L, self.right,
                             self.pad, out)
        arrays = {name: (w8 if width == 8 else w4)[lane].view(dtype).reshape(n, L)
                  for name, dtype, width, lane in self.columns}
        return {**arrays, "lengths": lengths, **self.extras}
