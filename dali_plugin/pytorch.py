"""The PyTorch side: ``UIHIterator`` over a ``uih_pipeline``, dicts of torch tensors."""

from __future__ import annotations

from engine import _deps


class UIHIterator:
    """Iterate a ``uih_pipeline``: one dict per batch, ``{column: [B, max_len], "lengths": [B]}``.

    Every thin row appears exactly once per epoch, in the pipeline source's order; iteration ends at
    the end of an epoch and the next ``for`` starts the next one (``reset()`` restarts early).
    """

    def __init__(self, pipe):
        _deps.dali()
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        self.pipe = pipe
        self._it = DALIGenericIterator(pipe, list(pipe.uih_names), last_batch_policy=LastBatchPolicy.PARTIAL,
                                       auto_reset=True, prepare_first_batch=False)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self._it.__next__()[0]

    def reset(self):
        """Abandon the current epoch; the next iteration starts a fresh one from the first row.

        DALI's own iterators cannot reset mid-epoch, so the source ends the epoch early and the few
        batches DALI already prefetched are drained and dropped.
        """
        self.pipe.uih_source.interrupt()
        for _ in self._it:
            pass

    def close(self):
        self.pipe.uih_source.close()
