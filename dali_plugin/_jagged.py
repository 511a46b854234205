"""Feed DALI the events without their padding, and let DALI pad: for long ``max_len``.

A DALI CPU pipeline never hands out memory it was fed: every output is written into DALI's own buffers
(DALI 2.4 copies external data on the way out even with ``no_copy=True``). For a padded ``[B, max_len]``
batch that is a second full write of mostly padding on top of the engine's. Fed the rows' events only
(the engine's jagged layout, each row a view of one buffer, read in place), DALI's ``slice`` writes the
padded batch once, which is the write the engine no longer does: the same bytes written as the direct
path, plus the events read once more. What this costs instead is per row: DALI takes a ragged batch as
one tensor per row, a few microseconds each, which only pays off when rows are long.
"""

from __future__ import annotations

import numpy as np

from engine import Projection, Reconstructor

from ._source import EpochSource, output_names

# padded bytes per row (all columns) from which feeding events and padding in DALI beats copying the
# padded batch; below it the per-row cost of a ragged feed outweighs the padding it saves. Measured on
# 2 cores (bench/bench_dali.py --pad-in-dali true|false): padding in DALI made ranking (4K x 20 B, rows
# 45% full) 2.2-3.2x of direct instead of 1.8x, purchase (1K x 16 B) 1.5x instead of 1.2x, and longseq
# (64K x 12 B, rows 4% full) 1.4-1.6x instead of 2.2x (warm, one process)
MIN_ROW_BYTES = 256 << 10


def _float_exact(value: np.ndarray) -> bool:
    """DALI's fill value is a float32 argument: pad in DALI only if it carries the pad value exactly."""
    f = np.float32(value)
    return bool(np.isfinite(f)) and float(f) == value.item()  # Python compares int with float exactly


def dali_pads(rec: Reconstructor) -> bool:
    """Whether ``rec``'s batches are worth feeding as events and padding in DALI (CPU pipelines only)."""
    p, dtypes = rec.projection, [rec.store.schema.dtype(c) for c in rec.projection.columns]
    row_bytes = p.max_len * sum(d.itemsize for d in dtypes)
    return (rec.device == "cpu" and row_bytes >= MIN_ROW_BYTES
            and all(_float_exact(p.pad_for(d)) for d in dtypes))


def _jagged_twin(rec: Reconstructor) -> Reconstructor:
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
    """``rec``'s batches in order, each column as one view per row (read in place).

    Yields the columns' row lists, ``lengths``, the extra columns, then, for a padded projection (to be
    padded by ``pad_graph``), each row's slice start: the index of its events that lands at padded
    position 0 (0 for ``align="left"``; ``n - max_len`` for "right", negative, so the first
    ``max_len - n`` positions fall before the events and are padding). A jagged projection's rows are
    the pipeline's outputs as they are (``UIHIterator`` joins them into values and offsets).
    """

    no_copy = True
    whole_batches = False  # DALI's slice pads row by row, and a jagged batch's rows are its samples
    # DALI's threads write the padded batch, the bulk of the work: the engine's kernels, which now only
    # gather events, run on one thread beside them rather than competing for the same two cores
    kernel_threads = 1

    def __init__(self, rec: Reconstructor, thin_source, batch_size: int, extra=()):
        super().__init__(output_names(rec, extra))
        self.pads = rec.projection.layout == "padded"
        self.twin = _jagged_twin(rec) if self.pads else rec
        self.thin_source, self.batch_size, self.extra = thin_source, batch_size, list(extra)
        self.columns, self.max_len = rec.projection.columns, rec.projection.max_len
        self.right = rec.projection.align == "right"

    @property
    def num_inputs(self) -> int:
        return len(self.names) + self.pads  # each row's slice start, after the outputs, to pad

    def batches(self):
        # each row wrapped as a DALI tensor here (it references the view, so the batch stays alive while DALI
        # reads it): DALI's own per-sample checks of a list of arrays cost more. A batch of 256 rows of 1K
        # events took 2.4-3.0 ms per DALI iteration fed as arrays, 1.7 ms as tensors (2 cores)
        from nvidia.dali.backend import TensorCPU, TensorListCPU
        for b in self.twin.iter_batches(self.thin_source, self.batch_size, extra_columns=self.extra):
            bounds = b["offsets"].tolist()
            rows = range(len(bounds) - 1)
            lengths = b["lengths"]
            cols = [TensorListCPU([TensorCPU(v[bounds[i]:bounds[i + 1]]) for i in rows], contiguous=False)
                    for v in (b[c] for c in self.columns)]
            start = [(lengths.astype(np.int32) - np.int32(self.max_len) if self.right
                      else np.zeros(len(lengths), np.int32)).reshape(-1, 1)] if self.pads else []
            yield (*cols, lengths, *(b[c] for c in self.extra), *start)


def pad_graph(fn, inputs, rec: Reconstructor) -> list:
    """The DALI graph over ``JaggedSource``'s inputs: the padded columns, ``lengths``, the extra columns."""
    p, ncol = rec.projection, len(rec.projection.columns)
    start = inputs[-1]
    padded = [fn.slice(x, start=start, shape=[p.max_len], axes=[0], out_of_bounds_policy="pad",
                       fill_values=float(p.pad_for(rec.store.schema.dtype(c))))
              for x, c in zip(inputs[:ncol], p.columns)]
    return [*padded, *inputs[ncol:-1]]
