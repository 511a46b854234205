"""Training order and resume through DALI: what each DALI epoch reads, and the state of what was handed out.

DALI runs ``prefetch_queue_depth`` iterations ahead of the consumer and the engine prepares chunks ahead
of DALI, so the pipeline's own progress is not the consumer's. ``Progress`` counts the batches
``UIHIterator`` handed out and states them as ``iter_batches`` would: the state of an iterator of the
same keywords that yielded exactly those batches (the *ledger*: an engine iterator made, never advanced,
only asked for ``state_dict(consumed=...)``). So a state saved here resumes ``iter_batches``,
``UIHDataset`` or another pipeline, and theirs resume a pipeline.

A DALI iteration may carry ``group`` batches (``PipelineOptions.batches_per_iteration``); the source's
iterator then reads batches of ``group * batch_size`` rows. A resume point inside a group starts that
group and drops its first batches (``Reading.drop``): the rows are the same, cut the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import engine


@dataclass(frozen=True)
class Reading:
    """What one DALI epoch reads: the order keywords, the resume state of the source's iterator (of its
    own batch size, ``group`` batches each), and how many batches of the first iterations to drop."""

    kwargs: dict
    resume: dict | None = None
    drop: int = 0


#: the input order, from the first row: what a source reads when nobody set its ``reading``
STREAM = Reading({})


def order_kwargs(order: engine.Order) -> dict:
    return {"order": order.order, "seed": order.seed, "epoch": order.epoch, "shuffle_window": order.shuffle_window}


class Progress:
    """The order of the next DALI epoch, a pending resume state, and the batches handed out of the current."""

    def __init__(self, rec, thin_source, batch_size: int, order: engine.Order, resume, group: int,
                 resumable: bool):
        self.rec, self.thin_source, self.batch_size, self.group = rec, thin_source, batch_size, group
        # False: the source's batches are not iter_batches' (worker processes' user shards in stream order)
        self.resumable = resumable
        self.order = order  # of the next epoch to start
        self.pending: dict | None = None  # a resume state for the next epoch to start
        self.current: tuple | None = None  # (order, resume) of the epoch handed out; None: none, or abandoned
        self.ended = False
        self.handed = 0
        self._ledger = None  # the current epoch's ledger, once asked for
        if resume is not None:
            self.load(resume)

    def _check_resumable(self, what: str):
        if not self.resumable:
            raise engine.InvalidArgument(
                f"{what} needs batches in iter_batches' order: worker processes in order='stream' read user "
                "shards, interleaved; use order='shuffle' (the workers take shares of the epoch's global "
                "batches) or workers=0")

    def ledger(self, order: engine.Order, resume, batch_size: int | None = None):
        """An engine iterator of ``order`` resumed from ``resume``, never advanced: it checks the state and
        counts the thin rows; ``state_dict(consumed=k)`` is the state after ``k`` of its batches."""
        bs = self.batch_size if batch_size is None else batch_size
        return self.rec.iter_batches(self.thin_source, bs, prefetch=0, resume=resume, **order_kwargs(order))

    def _current_ledger(self):
        if self._ledger is None:
            self._ledger = self.ledger(*self.current)
        return self._ledger

    def start(self) -> Reading:
        """A new DALI epoch starts: what it reads."""
        order, resume = self.order, self.pending
        self.current, self.pending, self.handed, self.ended, self._ledger = (order, resume), None, 0, False, None
        kw = order_kwargs(order)
        if resume is None:
            return Reading(kw)
        first = self._current_ledger().state_dict()  # the resume state of a single reader, checked
        if self.group == 1:
            return Reading(kw, first)
        group, drop = divmod(int(first["next_batch"]), self.group)
        # the source reads batches of group * batch_size rows: resume at the group holding the next batch
        whole = self.ledger(order, None, self.batch_size * self.group).state_dict(consumed=group)
        return Reading(kw, whole, drop)

    def took(self):
        self.handed += 1

    def end(self):
        self.ended = True

    def state_dict(self) -> dict:
        self._check_resumable("state_dict()")
        if self.current is not None:
            return self._current_ledger().state_dict(consumed=self.handed)
        if self.pending is not None:
            return dict(self.pending)
        return self.ledger(self.order, None).state_dict(consumed=0)

    def load(self, state) -> None:
        self._check_resumable("resume")
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise engine.InvalidArgument(f"resume needs a state_dict() of a UIH iterator, got {str(state)[:80]!r}")
        o = self.order
        order = engine.Order(o.order, o.seed, state["epoch"], o.shuffle_window)
        self.ledger(order, state).close()  # checked now, against the pipeline's keywords, not in DALI's run
        self.order, self.pending, self.current, self._ledger = order, dict(state), None, None

    def set_epoch(self, epoch: int) -> None:
        o = self.order
        self.order = engine.Order(o.order, o.seed, epoch, o.shuffle_window)
        if self.pending is not None and self.pending.get("epoch") != self.order.epoch:
            self.pending = None
        if self.ended:  # the next state is the next epoch's
            self.current, self._ledger = None, None

    def abandon(self) -> None:
        """The current epoch was reset: the next starts afresh."""
        self.current, self.pending, self._ledger = None, None, None
