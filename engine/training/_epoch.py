"""An epoch's thin rows cut into chunks in the training order, and the batch iterator that can resume.

``tables`` is the seam between the order (``_order``) and reconstruction: it yields the thin-row tables
of one reader's chunks, each a whole number of its batches, so the reconstructor cuts batches from a
chunk exactly as it does in stream order. ``BatchIterator`` counts what it handed out, which is all a
resume state needs.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import pyarrow as pa

from .._errors import InvalidArgument
from . import _order
from ._batch import Batch
from ._thin_source import count_rows, rechunk, thin_batches, thin_table


class Epoch:
    """One reader's view of an epoch: its thin rows, its order and its share of the global batches."""

    def __init__(self, thin_source, columns: list, batch_size: int, chunk_rows: int, order: _order.Order,
                 resume=None, share=None):
        self.batch_size, self.chunk_rows, self.order = batch_size, chunk_rows, order
        if share is not None and not (isinstance(share, (tuple, list)) and len(share) == 2):
            raise InvalidArgument(f"share must be (index, count), got {share!r}")
        index, count = (0, 1) if share is None else share
        self._streaming = order.order == "stream" and resume is None and share is None
        self._source, self._columns = thin_source, columns
        if self._streaming:  # read as it goes: no need to hold or even count the thin rows up front
            self._table, self.n, self.share = None, None, _order.Share()
            return
        self._table = thin_table(thin_source, columns)
        self.n = self._table.num_rows
        self.share = _order.resume_share(resume, order, batch_size, self.n, index, count)

    def tables(self):
        """The thin-row tables of this reader's chunks, in order."""
        if self._streaming:
            yield from rechunk(thin_batches(self._source, self._columns), self.chunk_rows)
            return
        bs, t = self.batch_size, self._table
        perm = self.order.permutation(self.n)
        own = list(self.share.batches(_order.num_batches(self.n, bs)))
        per = self.chunk_rows // bs
        for i in range(0, len(own), per):
            group = own[i:i + per]
            if perm is None and self.share.count == 1:  # consecutive batches in the input order: a slice
                a, b = group[0] * bs, min((group[-1] + 1) * bs, self.n)
                yield t.slice(a, b - a)
                continue
            idx = np.concatenate([np.arange(g * bs, min((g + 1) * bs, self.n), dtype=np.int64) for g in group])
            yield t.take(pa.array(idx if perm is None else perm[idx]))

    def state(self, yielded: int) -> dict:
        if self.n is None:  # streaming: the rows are counted only when a state is asked for
            self.n = count_rows(self._source)
        return _order.state(self.order, self.batch_size, self.n, self.share, yielded)


class BatchIterator:
    """The batches of ``iter_batches``: an iterator with ``state_dict()`` (between batches) for resume.

    ``close()`` stops the background preparation at once (as ``break`` does once it is collected).
    """

    def __init__(self, batches: Generator[Batch, None, None], epoch: Epoch) -> None:
        self._it, self._epoch, self._yielded = batches, epoch, 0

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        batch = next(self._it)
        self._yielded += 1
        return batch

    def state_dict(self, consumed: int | None = None) -> dict:
        """A JSON-serializable state: ``resume=`` it to get exactly the batches this iterator has left.

        ``consumed``: how many of this iterator's batches its consumer took, for an adapter whose consumer
        lags behind the batches made (DALI's prefetching) or that makes them elsewhere (worker processes);
        by default the batches this iterator yielded.
        """
        if consumed is None:
            return self._epoch.state(self._yielded)
        return self._epoch.state(_order._int("consumed", consumed, 0))

    def close(self) -> None:
        self._it.close()

    def __repr__(self) -> str:
        e = self._epoch
        return (f"BatchIterator(order={e.order.order!r}, seed={e.order.seed}, epoch={e.order.epoch}, "
                f"batch_size={e.batch_size}, share={e.share.index}/{e.share.count}, yielded={self._yielded})")
