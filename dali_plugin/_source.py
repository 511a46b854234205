"""Framework-neutral batch sources for DALI's ``external_source``: in-process or worker processes.

A source is a generator *function*: DALI calls it again at every epoch (``cycle="raise"``), and it
yields one tuple per batch: the projected columns ``[B, max_len]`` then ``lengths [B]``.
"""

from __future__ import annotations

from engine import Reconstructor, SchemaError


def output_names(rec: Reconstructor, extra=()) -> list:
    if rec.projection.layout != "padded":  # DALI batches are dense [B, max_len] tensors
        raise SchemaError("DALI pipelines take Projection(layout='padded'); use Reconstructor.iter_batches "
                          "for layout='jagged'")
    return [*rec.projection.columns, "lengths", *extra]


class EpochSource:
    """A generator function DALI calls once per epoch; ``interrupt`` ends the running epoch early.

    Epochs are numbered so that interrupting epoch e never touches epoch e + 1, which DALI may already
    have started prefetching by the time the interrupted one drains.
    """

    def __init__(self, names):
        self.names = names
        self._epoch = 0
        self._abort = -1

    def __call__(self):
        self._epoch += 1
        epoch = self._epoch
        it = self.batches()
        try:
            for item in it:
                if self._abort == epoch:
                    return
                yield item
        finally:
            it.close()

    def interrupt(self):
        self._abort = self._epoch

    def batches(self):
        raise NotImplementedError

    def close(self):
        pass


class InProcessSource(EpochSource):
    """Batches of ``rec.iter_batches`` in order (prefetch thread included)."""

    def __init__(self, rec: Reconstructor, thin_source, batch_size: int, extra=()):
        super().__init__(output_names(rec, extra))
        self.rec, self.thin_source, self.batch_size, self.extra = rec, thin_source, batch_size, list(extra)

    def batches(self):
        for batch in self.rec.iter_batches(self.thin_source, self.batch_size, extra_columns=self.extra):
            yield tuple(batch[n] for n in self.names)
