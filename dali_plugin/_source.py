"""Framework-neutral batch sources for DALI's ``external_source``: in-process or worker processes.

A source is a generator *function*: DALI calls it again at every epoch (``cycle="raise"``), and it
yields one tuple per DALI iteration (one batch, or several made at once: ``InProcessSource.group``): one
packed batch's bytes (``engine.Batch.packed``: the projected columns
``[B, max_len]``, ``lengths [B]`` and the extra columns in one buffer, whose layout ``UIHIterator`` gets
from ``consumed()``), or, from ``_jagged``'s source, each column's rows unpadded, one sample per row.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager

import numba
import numpy as np

from engine import Reconstructor, UIHError

from ._progress import STREAM

_END = object()


@contextmanager
def _kernel_threads(n):
    """Run the engine's CPU kernels on ``n`` threads in this thread only (numba's count is per thread)."""
    if n is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, before))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _packed(batch) -> tuple:
    """``batch.packed()``, or an error that says which batches can cross DALI in one piece."""
    packed = batch.packed()
    if packed is None:
        raise UIHError("a batch crossing DALI must be packed in one buffer (Batch.packed()), as the "
                       f"Reconstructor's batches are; got {batch!r}")
    return packed


def output_names(rec: Reconstructor, extra=()) -> list:
    return [*rec.projection.columns, "lengths", *extra]


class EpochSource:
    """A generator function DALI calls once per epoch; ``interrupt`` ends the running epoch early.

    Epochs are numbered so that interrupting epoch e never touches epoch e + 1, which DALI may already
    have started prefetching by the time the interrupted one drains.
    """

    #: False: DALI copies each batch when it is fed; the source may reuse its memory at once.
    #: True: DALI reads the arrays in place (``external_source(no_copy=True)``) during the iteration that
    #: takes them; the source holds each fed batch until that iteration's outputs are out (``consumed``).
    no_copy = False
    #: threads for the engine's CPU kernels while a batch is made (None: numba's own setting); a source whose
    #: pipeline does heavy work on DALI's threads leaves the cores to them instead of oversubscribing
    kernel_threads: int | None = None
    #: True: ``batches()`` yields packed batches (``engine.Batch.packed``: one byte buffer and its layout),
    #: fed to DALI as one input of one sample, which DALI copies in one piece; ``consumed()`` returns the
    #: layout. False: one input per output and one sample per row (``_jagged``, whose DALI graph works row
    #: by row). DALI's costs are per sample and per input, so one sample of one input is the cheapest way
    #: across (figures: docs/design-measurements.md)
    whole_batches = True

    def __init__(self, names):
        self.names = names
        #: what the next DALI epoch reads (``_progress.Reading``), set by ``UIHIterator`` as it starts one
        self.reading = STREAM
        self._epoch = 0
        self._abort = -1
        self._fed = deque()  # no_copy: batches fed and not yet consumed, oldest first
        self._layouts = deque()  # whole_batches: the layouts of the batches fed and not yet consumed

    def __call__(self):
        self._epoch += 1
        epoch = self._epoch
        it = self.batches(self.reading)
        try:
            while True:
                with _kernel_threads(self.kernel_threads):
                    item = next(it, _END)
                if item is _END or self._abort == epoch:
                    return
                if self.whole_batches:
                    buffer, layout = item
                    self._layouts.append(layout)
                    item = (buffer[None],)  # a view: the batch's buffer is the one sample of the one input
                if self.no_copy:
                    # held here, not in the generator: DALI may still read them after the epoch's generator
                    # ends; holding them also keeps the engine's buffer pool from recycling their memory
                    self._fed.append(item)
                yield item
        finally:
            it.close()

    @property
    def num_inputs(self) -> int:
        """Arrays per fed batch (``external_source``'s outputs): one packed buffer, or one per output name
        unless a source adds some."""
        return 1 if self.whole_batches else len(self.names)

    def consumed(self):
        """The oldest fed batch's iteration has run (its outputs are out): DALI reads it no more. Returns
        that batch's layout (``whole_batches``), else None.

        DALI runs iterations in feeding order, one fed item each, so the oldest held item is that one.
        """
        if self._fed:
            self._fed.popleft()
        return self._layouts.popleft() if self._layouts else None

    def interrupt(self):
        self._abort = self._epoch

    def to_batch(self, tensors: list) -> dict:
        """One iteration's outputs (torch tensors, in output order) as the batch ``UIHIterator`` hands out."""
        return dict(zip(self.names, tensors))

    def batches(self, reading=STREAM):
        """The epoch's items for DALI, reading the thin rows as ``reading`` (a ``_progress.Reading``) says."""
        raise NotImplementedError

    def close(self):
        pass


class InProcessSource(EpochSource):
    """Batches of ``rec.iter_batches`` in order (prefetch thread included).

    On CPU, DALI copies every batch into its own output buffers whatever it is fed (DALI 2.4 never hands
    out fed memory). Fed in place, that copy runs on DALI's threads, row by row, beside the engine making
    the next batch, instead of in the feeding thread; and the engine's kernels run on one thread meanwhile,
    so the two do not oversubscribe the cores (numba's OpenMP workers spin-wait between kernels, burning
    the core the copy needs). That is faster and takes less CPU time than feeding a copy from this thread
    (figures: docs/design-measurements.md).
    """

    def __init__(self, rec: Reconstructor, thin_source, batch_size: int, extra=(), feeder=None, group: int = 1):
        super().__init__(output_names(rec, extra))
        # ``feeder``: the reconstructor whose batches cross DALI, when not ``rec`` (the jagged twin of a padded
        # projection that ``UIHIterator`` pads after DALI, see ``_jagged``)
        self.rec, self.feeder = rec, feeder or rec
        self.thin_source, self.batch_size, self.extra = thin_source, batch_size, list(extra)
        # ``group``: batches per DALI iteration. The engine makes ``group`` batches at once, DALI copies them
        # in one piece and ``UIHIterator`` hands them out one by one (rows in the same order, so the same
        # batches); DALI's fixed cost per iteration is then paid once per group
        self.group = int(group)
        # in place on CPU; a CUDA reconstructor's batches keep the default: DALI copies each on its stream
        if rec.device == "cpu":
            self.no_copy, self.kernel_threads = True, 1

    def batches(self, reading=STREAM):
        f, rows = self.feeder, self.batch_size * self.group
        # chunks of about the reconstructor's usual rows (so that prefetching starts as early), in whole groups
        chunk = rows * -(-f.chunk_batches // self.group)
        for batch in f.iter_batches(self.thin_source, rows, chunk_rows=chunk, extra_columns=self.extra,
                                    resume=reading.resume, **reading.kwargs):
            yield _packed(batch)


class _Fed(tuple):
    """One iteration's inputs for DALI, holding ``batch`` (the ``Unassembled`` batch whose chunk they point
    into) as long as they are held."""

    batch = None


class AssemblingSource(EpochSource):
    """Batches of ``rec.iter_unassembled`` in order, written by a DALI operator (``_assemble_op``): each
    iteration feeds the chunk's decoded lanes in place plus small plans, one DALI sample per share of the
    batch's rows (``shares`` of them, the pipeline's threads, where the rows divide evenly), and the
    operator writes the batch into DALI's outputs. Held until consumed: the fed lanes are arena slots the
    engine must not reuse before the operator has read them."""

    whole_batches = False
    no_copy = True

    def __init__(self, rec: Reconstructor, thin_source, batch_size: int, extra=(), shares: int = 2, group: int = 1):
        super().__init__(output_names(rec, extra))
        self.rec, self.thin_source, self.batch_size, self.extra = rec, thin_source, batch_size, list(extra)
        self.shares = max(1, int(shares))
        self.group = int(group)  # batches per iteration, as ``InProcessSource.group``
        self._extra_dtypes: list | None = None  # the extra columns' dtypes, as the thin rows give them: fixed for a job

    @property
    def num_inputs(self) -> int:
        return 5

    def batches(self, reading=STREAM):
        from ._kernel_plan import encode_chunk, encode_share
        last = plan = None
        rows = self.batch_size * self.group
        chunk = rows * -(-self.rec.chunk_batches // self.group)  # as ``InProcessSource``
        # DALI runs prefetch_queue_depth iterations before it hands out the first: full groups there would
        # make the first batch of a job wait for two groups, a visible share of a short job
        # (docs/design-measurements.md), so the first iterations carry 1, 2, 4, ... batches
        ramp = [self.batch_size * (1 << k) for k in range(8) if (1 << k) < self.group]
        for u in self.rec.iter_unassembled(self.thin_source, rows, chunk_rows=chunk, extra_columns=self.extra,
                                           first_sizes=ramp, resume=reading.resume, **reading.kwargs):
            if u.chunk is not last:  # once per chunk: what every share of its batches reads
                last, plan = u.chunk, encode_chunk(u)
            k = max(d for d in range(1, min(self.shares, u.rows) + 1) if u.rows % d == 0)
            step = u.rows // k
            shares = [encode_share(u, a, a + step, self.extra) for a in range(0, u.rows, step)]
            dims = np.empty((step, u.max_len, int(shares[0][1]), 0), np.uint8)  # sizes the outputs, holds nothing
            if self._extra_dtypes is None:
                self._extra_dtypes = [u.extras[c].dtype for c in self.extra]
            item = _Fed(([u.stored.w8] * k, [u.stored.w4] * k, [plan] * k, shares, [dims] * k))
            item.batch = u
            yield item

    def to_batch(self, tensors: list) -> dict:
        """Each output is ``[shares, rows per share, ...]``: the batch's rows in order once flattened."""
        ncols = len(self.rec.projection.columns)
        out = {name: t.reshape(-1, *t.shape[2:]) for name, t in zip(self.names[:ncols + 1], tensors)}
        if self.extra:  # the extra columns' bytes, side by side per row
            from .pytorch import _torch_dtype as torch_dtype  # torch's dtypes, named once for the package
            raw, at = tensors[ncols + 1].reshape(-1, tensors[ncols + 1].shape[-1]), 0
            for name, dt in zip(self.extra, self._extra_dtypes or ()):
                size = np.dtype(dt).itemsize
                # a copy of its own whatever the rows: torch keeps the row stride of a one-row slice as
                # it is (already "contiguous"), and a view of it as wider words then fails
                col = raw.new_empty((raw.shape[0], size)).copy_(raw[:, at:at + size])
                out[name] = col.view(torch_dtype(dt)).reshape(-1)
                at += size
        return out
