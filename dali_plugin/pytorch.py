"""The PyTorch side: ``UIHIterator`` over a ``uih_pipeline``, dicts of torch tensors."""

from __future__ import annotations

import functools
from collections import deque

import numpy as np

from engine import Batch, InvalidArgument, UIHError, _deps

from ._epochs import Epochs
from ._pipeline import UIHPipeline


@functools.cache
def _torch_dtype(dtype):
    """torch's dtype for a NumPy dtype (the layout of a packed batch names NumPy's)."""
    return _deps.torch().from_numpy(np.empty(0, dtype)).dtype


def _check_size(buffer, layout) -> None:
    """The layout must be the fed batch's: DALI runs iterations in feeding order, and the source hands the
    layouts over in that order; a layout out of step would cut the wrong bytes, so it is an error."""
    want = Batch.packed_nbytes(layout)
    if buffer.numel() != want:
        raise UIHError(f"a DALI output of {buffer.numel()} bytes does not match its batch's layout ({want} "
                       "bytes): the pipeline's iterations and its source's batches are out of step")


class UIHIterator:
    """Iterate a ``uih_pipeline``: one dict per batch, ``{column: [B, max_len], "lengths": [B]}`` (for a
    ``layout="jagged"`` projection: ``{column: [N] values of all rows, "lengths": [B], "offsets": [B + 1]}``).

    Every thin row appears exactly once per epoch, in the pipeline's training order (``iter_batches``'
    batches for the same keywords); iteration ends at the end of an epoch and the next ``for`` starts the
    next one (``reset()`` restarts early, ``set_epoch`` names its order's epoch). ``state_dict()`` /
    ``load_state_dict()`` (the torchdata StatefulDataLoader convention) count the batches handed out. The
    tensors share DALI's output memory where DALI gives every iteration buffers of its own (see
    ``_epochs``); a batch the caller keeps is never overwritten by later ones (and keeps the buffer of its
    DALI iteration, which may carry several batches, alive: copy what you keep for long).
    """

    def __init__(self, pipe: UIHPipeline) -> None:
        if not isinstance(pipe, UIHPipeline):
            raise InvalidArgument("UIHIterator iterates what uih_pipeline returns (a UIHPipeline), got "
                                  f"{type(pipe).__name__}")
        _deps.dali()
        self._torch = _deps.torch()
        self.pipe = pipe
        self._progress = pipe.progress
        self._drop = 0  # batches of the epoch's first iterations not handed out (a resume inside a group)
        self._epochs = Epochs(pipe.dali, pipe.source, on_start=self._start_epoch)
        self._device = (self._torch.device("cuda", pipe.device_id) if pipe.device == "gpu"
                        else self._torch.device("cpu"))
        self._pending: deque = deque()  # batches of the current DALI iteration not yet handed out

    def __iter__(self) -> UIHIterator:
        return self

    def __next__(self) -> dict:
        try:
            batch = self._next_batch()
            while self._drop:  # set as the epoch started, in the first call above
                self._drop -= 1
                batch = self._next_batch()
        except StopIteration:
            self._progress.end()
            raise
        self._progress.took()
        return batch

    def _start_epoch(self):
        reading = self._progress.start()
        self.pipe.source.reading, self._drop = reading, reading.drop

    def _next_batch(self) -> dict:
        if self._pending:  # the rest of an iteration that carried several batches
            return self._pending.popleft()
        batch = self._next_iteration()
        rows, size = int(batch["lengths"].shape[0]), self.pipe.batch_size
        if self.pipe.options.batches_per_iteration == 1 or rows <= size:
            return batch
        # padded: every array is [rows, ...], so each batch is a view of consecutive rows
        self._pending.extend({k: v[a:a + size] for k, v in batch.items()} for a in range(size, rows, size))
        return {k: v[:size] for k, v in batch.items()}

    def _next_iteration(self) -> dict:
        torch, (outs, layout) = self._torch, self._epochs.next_outputs()
        if layout is not None:  # one packed batch: views of one buffer
            try:
                with self._device:
                    buffer = torch.from_dlpack(outs[0].as_tensor())[0]
                _check_size(buffer, layout)
                if self.pipe.options.padding == "after_dali":  # a jagged batch to pad, into the engine's buffers
                    return self.pipe.rec.pad(Batch.unpack(buffer.numpy(), layout)).to_torch()
                return Batch.unpack(buffer if self._epochs.shares_buffers else buffer.clone(), layout, _torch_dtype)
            finally:
                self._epochs.done()
        with self._device:  # DALI-padded rows: one output per name
            tensors = [torch.from_dlpack(o.as_tensor()) for o in outs]
        if not self._epochs.shares_buffers:
            tensors = [t.clone() for t in tensors]
        self._epochs.done()
        return self.pipe.source.to_batch(tensors)

    def reset(self) -> None:
        """Abandon the current epoch; the next iteration starts a fresh one from the first row.

        The source ends the epoch early and the few batches DALI already prefetched are dropped.
        """
        self._pending.clear()
        self._epochs.drain()
        self._progress.abandon()

    def set_epoch(self, epoch: int) -> None:
        """The order's epoch for the next DALI epoch (as ``DistributedSampler.set_epoch``: without it, every
        DALI epoch reads the same order); the running epoch, if any, goes on as it began. A pending resume
        state of another epoch is dropped."""
        self._progress.set_epoch(epoch)

    def state_dict(self) -> dict:
        """A JSON-serializable state of the batches this iterator handed out in the current epoch (not those
        DALI prefetched): ``load_state_dict`` it, or pass it as ``resume=`` to ``uih_pipeline`` or
        ``iter_batches`` with the same keywords, to get exactly the batches left. Once an epoch ended, the
        state is that finished epoch's until ``set_epoch`` names the next."""
        return self._progress.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state`` (a ``state_dict()``): the next batch is the first one it had left; a running
        epoch is abandoned. The state's order keywords must be the pipeline's (``engine.InvalidArgument``)."""
        self._progress.load(state)  # checked before anything running is dropped
        self._pending.clear()
        self._epochs.drain()

    def close(self) -> None:
        self._pending.clear()
        self.pipe.source.close()

    def __repr__(self) -> str:
        # epoch: how many the source has started; running: one is under way (a ``for`` left it early)
        return (f"UIHIterator({self.pipe!r}, epoch={self.pipe.source._epoch}, running={self._epochs._running}, "
                f"pending_batches={len(self._pending)})")
