"""The reconstruct step as a plain class: Ray Data calls it in tasks (``map_batches``), one per part.

Ray is imported only to build the output tables: ``examples`` is a thin-rows-in, NumPy-examples-out
function with state (the open store and its ``Reconstructor``), checked and timed without a cluster.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import engine

from . import _deps
from ._shards import StoreRef

# one chunk per part: the Reconstructor reads each user's events once per chunk, and a user-hash part
# holds all rows of its users (see _shards), so each user is read once per epoch
_WHOLE_BLOCK = 1 << 40


class Reconstruct:
    """Opens the store once (read-only, pinned); turns a part's thin rows into batches of examples.

    Parameters
    ----------
    ref : StoreRef
        Store root and version, as the driver saw them.
    projection : engine.Projection
    batch_size : int
        Rows per output block: a whole number of the dataset's batches (the last of a part may be smaller).
    extra : sequence of str
        Pass-through columns carried unchanged into the examples.
    device : {"cpu", "cuda"}
    stats_column : str or None
        If set, each batch gets this column: the events read from storage for the part, on the part's
        first row, 0 elsewhere (its sum over an epoch is the total events read).
    batch_column : str or None
        If set, each row gets this column: the epoch's global batch it belongs to (``_epoch``).
    """

    def __init__(self, ref: StoreRef, projection, batch_size: int, extra=(), device="cpu", stats_column=None,
                 batch_column=None):
        self.store = ref.open()
        self.rec = engine.Reconstructor(self.store, projection, device=device, prefetch=0,
                                        chunk_batches=_WHOLE_BLOCK)
        self.batch_size, self.extra = int(batch_size), list(extra)
        self.stats_column, self.batch_column = stats_column, batch_column
        self.columns, self.jagged = list(projection.columns), projection.layout == "jagged"

    def tables(self, rows: pa.Table, batches=None):
        """Arrow tables of examples, one per block of ``rows``; ``batches``: each row's global batch."""
        tensors = _deps.arrow_tensor_array()
        start = 0
        for out in self.examples(rows):
            n = len(out["lengths"])
            if self.batch_column:
                out[self.batch_column] = np.asarray(batches[start:start + n], np.int64)
            start += n
            # built here rather than by Ray from the dict: Ray's generic conversion of [B, max_len]
            # arrays costs orders of magnitude more than from_numpy (docs/design-measurements.md)
            yield pa.table({k: _arrow(v, tensors) for k, v in out.items()})

    def examples(self, block: pa.Table):
        """Yields dicts: per projected column ``[n, max_len]`` NumPy (padded) or an Arrow large-list array
        of the batch's values and offsets (jagged), then ``lengths`` and the extras as NumPy."""
        read_before = self.rec.stats["events_read"]
        start = 0
        for batch in self.rec.iter_batches(block, self.batch_size):
            host = batch.to_numpy()  # CuPy -> host on "cuda"; the arrays themselves on "cpu"
            n = batch.size
            if self.jagged:  # a list column shares the batch's buffers: no per-row split, no copy
                offsets = pa.array(np.asarray(host["offsets"]))
                out = {c: pa.LargeListArray.from_arrays(offsets, pa.array(np.asarray(host[c]))) for c in self.columns}
            else:
                out = {c: np.asarray(host[c]) for c in self.columns}
            out["lengths"] = np.asarray(host["lengths"])
            part = block.slice(start, n)
            for c in self.extra:
                out[c] = _column(part.column(c))
            if self.stats_column:
                out[self.stats_column] = np.zeros(n, np.int64)
                if start == 0:
                    out[self.stats_column][0] = self.rec.stats["events_read"] - read_before
            start += n
            yield out


def _arrow(v, tensors):
    """An output column for ``pa.table``: Ray tensors for ``[n, k]`` and ragged NumPy, others as they are."""
    if isinstance(v, np.ndarray) and (v.ndim > 1 or v.dtype == object):
        return tensors.from_numpy(v)
    return v


def _column(col) -> np.ndarray:
    """A pass-through column as NumPy: scalars as is, equal-length lists (dense features) as ``[n, k]``."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        return col.to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    if len(col) and not col.null_count and (lengths == lengths[0]).all():
        return flat.reshape(len(col), int(lengths[0]))
    ragged = np.empty(len(col), dtype=object)  # Ray keeps these as a variable-shaped tensor column
    ragged[:] = np.split(flat, np.cumsum(np.nan_to_num(lengths).astype(np.int64))[:-1])
    return ragged
