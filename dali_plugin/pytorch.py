"""The PyTorch side: ``UIHIterator`` over a ``uih_pipeline``, dicts of torch tensors."""

from __future__ import annotations

import functools

import numpy as np

from engine import Batch, _deps

from ._epochs import Epochs


@functools.cache
def _torch_dtype(dtype):
    """torch's dtype for a NumPy dtype (the layout of a packed batch names NumPy's)."""
    return _deps.torch().from_numpy(np.empty(0, dtype)).dtype


class UIHIterator:
    """Iterate a ``uih_pipeline``: one dict per batch, ``{column: [B, max_len], "lengths": [B]}`` (for a
    ``layout="jagged"`` projection: ``{column: [N] values of all rows, "lengths": [B], "offsets": [B + 1]}``).

    Every thin row appears exactly once per epoch, in the pipeline source's order; iteration ends at
    the end of an epoch and the next ``for`` starts the next one (``reset()`` restarts early). The
    tensors share DALI's output memory where DALI gives every batch buffers of its own (see ``_epochs``);
    a batch the caller keeps is never overwritten by later ones.
    """

    def __init__(self, pipe):
        _deps.dali()
        self._torch = _deps.torch()
        self.pipe = pipe
        self._epochs = Epochs(pipe)
        self._device = (self._torch.device("cuda", pipe.device_id) if pipe.uih_device == "gpu"
                        else self._torch.device("cpu"))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        torch, (outs, layout) = self._torch, self._epochs.next_outputs()
        if layout is not None:  # one packed batch: views of one buffer
            with self._device:
                buffer = torch.from_dlpack(outs[0].as_tensor())[0]
            if not self._epochs.shares_buffers:
                buffer = buffer.clone()
            self._epochs.done()
            return Batch.unpack(buffer, layout, _torch_dtype)
        names, jagged = list(self.pipe.uih_names), self.pipe.uih_layout == "jagged"
        k = names.index("lengths")
        with self._device:
            tensors = [torch.from_dlpack(o.as_tensor()) for o in outs[k if jagged else 0:]]
            if jagged:  # one sample per row: each column's rows end to end
                total = int(tensors[0].sum())
                tensors[:0] = [torch.from_dlpack(o.as_reshaped_tensor([total])) for o in outs[:k]]
        if not self._epochs.shares_buffers:
            tensors = [t.clone() for t in tensors]
        self._epochs.done()
        if jagged:  # iter_batches' keys, in its order: columns, lengths, offsets, extras
            offsets = torch.zeros(len(tensors[k]) + 1, dtype=torch.int64)
            torch.cumsum(tensors[k], 0, out=offsets[1:])
            names.insert(k + 1, "offsets")
            tensors.insert(k + 1, offsets)
        return dict(zip(names, tensors))

    def reset(self):
        """Abandon the current epoch; the next iteration starts a fresh one from the first row.

        The source ends the epoch early and the few batches DALI already prefetched are dropped.
        """
        self._epochs.drain()

    def close(self):
        self.pipe.uih_source.close()
