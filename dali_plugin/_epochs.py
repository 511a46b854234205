"""Framework-neutral iteration over a ``uih_pipeline``: epochs, early reset, outputs handed out safely.

DALI's own iterators start the next epoch (and prefetch its first batches) the moment one ends, and
cannot reset mid-epoch; this runs ``schedule_run``/``share_outputs`` itself instead. Outputs are handed
out without a copy only where DALI gives each iteration fresh, reference-counted output buffers (the
default, dynamic executor): a tensor the caller holds then keeps its own buffer alive, and no later
iteration writes into it. The static executor reuses its buffers, so its outputs must be copied.
"""

from __future__ import annotations


class Epochs:
    """``next_outputs()`` per DALI iteration until ``StopIteration`` at the end of an epoch; the next call
    starts the next epoch. ``done()`` after each iteration's outputs were taken over lets the pipeline run
    on."""

    def __init__(self, pipe, source, on_start=None):
        self.pipe, self.source = pipe, source  # a built DALI pipeline and its external source
        # called as an epoch starts, before DALI asks the source for its first batch: the source reads its
        # epoch's order then (DALI calls the source's generator function as the epoch's first run prefetches)
        self.on_start = on_start
        self.shares_buffers = bool(getattr(pipe, "exec_dynamic", False))
        self._running = False  # an epoch is scheduled and not yet drained
        self._ended = False  # an epoch was drained: the pipeline needs a reset before the next

    def next_outputs(self) -> tuple:
        """``(outputs, layout)``: the next iteration's DALI outputs and, for a packed batch, its layout."""
        pipe = self.pipe
        if not self._running:
            if self.on_start is not None:
                self.on_start()
            if self._ended:
                pipe.reset()
                self._ended = False
            pipe.schedule_run()  # the first run of an epoch prefetches prefetch_queue_depth batches
            self._running = True
        try:
            outs = pipe.share_outputs()
        except StopIteration:
            self._running, self._ended = False, True
            raise
        return list(outs), self.source.consumed()

    def done(self):
        """The current outputs were taken over (shared or copied): release them and schedule a run."""
        self.pipe.release_outputs()
        self.pipe.schedule_run()

    def drain(self):
        """End the running epoch early: the source stops, and what DALI already prefetched is dropped."""
        if not self._running:
            return
        self.source.interrupt()
        try:
            while True:
                self.next_outputs()
                self.done()
        except StopIteration:
            pass
