"""The PyTorch side: ``UIHIterator`` over a ``uih_pipeline``, dicts of torch tensors."""

from __future__ import annotations

from engine import _deps

from ._epochs import Epochs


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
        torch, outs = self._torch, self._epochs.next_outputs()
        names = self.pipe.uih_names
        with self._device:
            if self.pipe.uih_layout == "jagged":  # one sample per row: each column's rows end to end
                k = names.index("lengths")
                lengths = torch.from_dlpack(outs[k].as_tensor())
                total = int(lengths.sum())
                tensors = [torch.from_dlpack(o.as_reshaped_tensor([total])) for o in outs[:k]]
                tensors += [torch.from_dlpack(o.as_tensor()) for o in outs[k:]]
            else:
                tensors = [torch.from_dlpack(o.as_tensor()) for o in outs]
        if not self._epochs.shares_buffers:
            tensors = [t.clone() for t in tensors]
        self._epochs.done()
        batch = dict(zip(names, tensors))
        if self.pipe.uih_layout == "jagged":  # iter_batches' keys, in its order: lengths, offsets, extras
            offsets = torch.zeros(len(batch["lengths"]) + 1, dtype=torch.int64)
            torch.cumsum(batch["lengths"], 0, out=offsets[1:])
            batch = {**{n: batch[n] for n in names[:names.index("lengths") + 1]}, "offsets": offsets,
                     **{n: batch[n] for n in names[names.index("lengths") + 1:]}}
        return batch

    def reset(self):
        """Abandon the current epoch; the next iteration starts a fresh one from the first row.

        The source ends the epoch early and the few batches DALI already prefetched are dropped.
        """
        self._epochs.drain()

    def close(self):
        self.pipe.uih_source.close()
