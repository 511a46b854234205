"""Long rows: feed DALI the events without their padding, and pad after DALI or in it.

A DALI CPU pipeline never hands out memory it was fed: every output is written into DALI's own buffers
(DALI 2.4 copies external data on the way out even with ``no_copy=True``). For a padded ``[B, max_len]``
batch of long, sparse rows that is a second full write of mostly padding on top of the engine's. Two ways
around it, both fed by the projection's jagged twin (the same rows, no padding):

* ``padding="after_dali"`` (the automatic choice for long rows): the jagged batch crosses DALI as one packed
  input, which DALI copies in one piece (a few percent of the padded bytes), and ``UIHIterator`` pads it
  with the engine's assembly kernel (``Reconstructor.pad``) into the engine's pooled buffers: the padded
  batch is written once, as on the direct path.
* ``padding="dali_slice"``: each row is a DALI sample of its own and DALI's ``slice`` writes the padded batch
  (``JaggedSource`` and ``pad_graph``), at a few microseconds per row and a fill rate below the engine's.

Of the three ways through DALI for long sparse rows, padding after DALI comes closest to the direct
path, DALI's slice next, and the padded batch copied by DALI last (figures: docs/design-measurements.md).
"""

from __future__ import annotations

import numpy as np

from engine import Projection, Reconstructor

from ._progress import STREAM
from ._source import EpochSource, output_names

# padded bytes per row (all columns) from which long rows cross DALI unpadded; below it the padded batch
# crosses as it is. Unpadded rows pay off only for long sparse rows (the longseq tenant's); for shorter,
# fuller ones (ranking, purchase) crossing padded was faster (docs/design-measurements.md). Padding after
# DALI (the module docstring) costs an extra pass over the events, which only sparse rows repay, so it
# keeps this line.
MIN_ROW_BYTES = 256 << 10


def _float_exact(value: np.ndarray) -> bool:
    """Whether DALI's fill value, a float32 argument, carries the pad value exactly."""
    f = np.float32(value)
    return bool(np.isfinite(f)) and float(f) == value.item()  # Python compares int with float exactly


def padded_row_bytes(rec: Reconstructor) -> int:
    """Bytes of one padded row of ``rec``'s projection, all its columns."""
    p = rec.projection
    return p.max_len * sum(rec.store.schema.dtype(c).itemsize for c in p.columns)


def long_rows(rec: Reconstructor) -> bool:
    """Whether ``rec``'s padded rows are long enough to cross DALI unpadded (CPU pipelines only)."""
    return rec.device == "cpu" and padded_row_bytes(rec) >= MIN_ROW_BYTES


def dali_can_pad(rec: Reconstructor) -> bool:
    """Whether DALI's ``slice`` can write ``rec``'s pad values exactly (``padding="dali_slice"``)."""
    return all(_float_exact(rec.projection.pad_for(rec.store.schema.dtype(c))) for c in rec.projection.columns)


def jagged_twin(rec: Reconstructor) -> Reconstructor:
    """A reconstructor of the same rows as ``rec`` in the jagged layout, counting into ``rec.stats``."""
    p = rec.projection
    twin = Reconstructor(rec.store, Projection(p.columns, max_len=p.max_len, actions=p.actions,
                                               window_us=p.window_us, align=p.align, pad_value=p.pad_value,
                                               layout="jagged"),
                         device=rec.device, prefetch=rec.prefetch, chunk_batches=rec.chunk_batches,
                         pushdown=rec.pushdown, cache_bytes=rec.cache_bytes)
    twin.stats = rec.stats  # one job, one set of counters: the caller reads its own reconstructor's
    return twin


class JaggedSource(EpochSource):
    """``rec``'s batches in order, rows unpadded, for DALI to pad (``padding="dali_slice"``).

    Yields each column's rows (one view per row, read in place), ``lengths``, the extra columns, then each
    row's slice start: the index of its events that lands at padded position 0 (0 for ``align="left"``;
    ``n - max_len`` for "right", negative, so the first ``max_len - n`` positions fall before the events
    and are padding).
    """

    no_copy = True
    whole_batches = False  # DALI's slice pads row by row: the rows are the samples
    # DALI's threads write the padded batch, the bulk of the work: the engine's kernels, which here only
    # gather events, run on one thread beside them rather than competing for the same cores
    kernel_threads = 1

    def __init__(self, rec: Reconstructor, thin_source, batch_size: int, extra=()):
        super().__init__(output_names(rec, extra))
        self.twin = jagged_twin(rec)
        self.thin_source, self.batch_size, self.extra = thin_source, batch_size, list(extra)
        self.columns, self.max_len = rec.projection.columns, rec.projection.max_len
        self.right = rec.projection.align == "right"

    @property
    def num_inputs(self) -> int:
        return len(self.names) + 1  # each row's slice start, after the outputs, to pad

    def batches(self, reading=STREAM):
        # each row wrapped as a DALI tensor here (it references the view, so the batch stays alive while DALI
        # reads it): DALI's own per-sample checks of a list of arrays cost more (docs/design-measurements.md)
        from nvidia.dali.backend import TensorCPU, TensorListCPU
        for b in self.twin.iter_batches(self.thin_source, self.batch_size, extra_columns=self.extra,
                                        resume=reading.resume, **reading.kwargs):
            bounds = b["offsets"].tolist()
            rows = range(len(bounds) - 1)
            lengths = b["lengths"]
            cols = [TensorListCPU([TensorCPU(v[bounds[i]:bounds[i + 1]]) for i in rows], contiguous=False)
                    for v in (b[c] for c in self.columns)]
            start = (lengths.astype(np.int32) - np.int32(self.max_len) if self.right
                     else np.zeros(len(lengths), np.int32)).reshape(-1, 1)
            yield (*cols, lengths, *(b[c] for c in self.extra), start)


def pad_graph(fn, inputs, rec: Reconstructor) -> list:
    """The DALI graph over ``JaggedSource``'s inputs: the padded columns, ``lengths``, the extra columns."""
    p, ncol = rec.projection, len(rec.projection.columns)
    start = inputs[-1]
    padded = [fn.slice(x, start=start, shape=[p.max_len], axes=[0], out_of_bounds_policy="pad",
                       fill_values=float(p.pad_for(rec.store.schema.dtype(c))))
              for x, c in zip(inputs[:ncol], p.columns)]
    return [*padded, *inputs[ncol:-1]]
