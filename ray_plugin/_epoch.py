"""A dataset's epoch cut into parts, one task each, and the state that resumes it.

Two kinds of parts:

- *global* (``order="shuffle"``, or ``affinity=False``): the epoch is ``iter_batches``' global batches
  in the epoch's order, and part ``i`` a contiguous run of them; Ray Data keeps the parts' order, so the
  dataset's rows cut every ``batch_size`` are exactly those batches. A resume state is the one
  ``iter_batches`` writes (``uih-order/1``), so either side resumes the other's.
- *user-hash* (``order="stream"`` with affinity): part ``i`` is user shard ``i`` (``engine.shard``), so
  each user's events are read once per epoch; the same keywords and ``num_shards`` give the same rows
  in the same order, but not ``iter_batches``' stream batches, and no resume.

A state is the consumed prefix ``next_batch`` plus, where consumers took batches out of order (several
``streaming_split`` consumers), the consumed batches after it (``"done_after"``, which only a dataset
reads): a resumed dataset yields every other batch of the epoch, each exactly once.
"""

from __future__ import annotations

import numbers
import uuid
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

import engine

from . import _deps
from ._shards import POSITION, ShardPlan, gather, read_shard

STATE_FORMAT = "uih-order/1"


def count_rows(source) -> int:
    """The thin source's rows (Parquet footers, no row read)."""
    return source.num_rows if isinstance(source, pa.Table) else pads.dataset(source, format="parquet").count_rows()


@dataclass(frozen=True)
class EpochPlan:
    """Which thin rows each part reads and which of its batches it yields (picklable, sent to tasks)."""

    source: object  # a thin-row Table, or Parquet path string(s)
    columns: tuple  # the thin columns the projection needs, then the pass-through columns
    batch_size: int
    order: engine.Order
    num_parts: int
    by_user: bool  # user-hash parts; else contiguous runs of the epoch's global batches
    num_rows: int
    skip: frozenset = frozenset()  # global batches already consumed (a resume)
    token: str = ""  # names this epoch's rows in a worker's cache
    pieces: tuple | None = None  # scattered: per source part, the object refs of every part's piece of it

    @classmethod
    def make(cls, source, columns, batch_size, order, num_parts, by_user) -> EpochPlan:
        return cls(source, tuple(columns), int(batch_size), order, int(num_parts), bool(by_user),
                   count_rows(source), token=uuid.uuid4().hex)

    @property
    def num_batches(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def bounds(self, index: int) -> tuple:
        """Global batches ``[lo, hi)`` of part ``index`` (global parts)."""
        t, k = self.num_batches, self.num_parts
        return t * index // k, t * (index + 1) // k

    def parts_left(self) -> list:
        """The parts with anything left to yield."""
        if self.by_user:
            return list(range(self.num_parts))
        return [i for i in range(self.num_parts) if set(range(*self.bounds(i))) - self.skip]

    def scattered(self, num_parts: int | None = None) -> EpochPlan:
        """This plan with the thin rows cut into every part's pieces ahead, by Ray tasks that each read a
        contiguous run of row groups (``ShardPlan.scatter``): the source is read from storage once per epoch,
        where otherwise every user-hash part scans it whole and every process sorts the whole epoch."""
        order = None
        if not self.by_user:
            o = self.order
            order = {"order": o.order, "seed": o.seed, "epoch": o.epoch, "shuffle_window": o.shuffle_window,
                     "batch_size": self.batch_size,
                     "bounds": [self.bounds(i)[0] for i in range(self.num_parts)] + [self.num_batches]}
        plan = ShardPlan(self.source, self.columns, self.num_parts, by_user=self.by_user, order=order)
        plan = plan.scatter(num_parts)
        if plan.pieces is None:  # no rows: nothing to cut
            return self
        return replace(self, pieces=plan.pieces, source=plan.source)

    # ---- in a task -----------------------------------------------------------------------------------
    def part(self, index: int, rec, cache: dict) -> tuple:
        """Part ``index``'s thin rows still to yield, and the global batch of each row (None for user-hash
        parts). ``cache`` keeps the epoch's ordered rows for the other parts this process runs."""
        bs = self.batch_size
        if self.pieces is not None:
            got = _deps.ray().get([p[index] for p in self.pieces])
            if self.by_user:
                return gather(got, ordered=False), None
            table = gather(got, ordered=True, positions=True)
            batch = table.column(POSITION).to_numpy() // bs
            table = table.drop_columns([POSITION])
            if self.skip:
                keep = ~np.isin(batch, np.fromiter(self.skip, np.int64, len(self.skip)))
                table, batch = table.filter(pa.array(keep)), batch[keep]
            return table, batch
        if self.by_user:
            return read_shard(self.source, list(self.columns), self.num_parts, index), None
        key = (self.token, "epoch_rows")
        if key not in cache:
            extra = [c for c in self.columns if c not in rec.thin_columns]
            o = self.order
            cache[key] = rec.epoch_rows(self.source, bs, o.order, o.seed, o.epoch, o.shuffle_window,
                                        extra_columns=extra).select(list(self.columns))
        lo, hi = self.bounds(index)
        own = [g for g in range(lo, hi) if g not in self.skip]
        rows = np.concatenate([np.arange(g * bs, min((g + 1) * bs, self.num_rows), dtype=np.int64) for g in own]
                              + [np.zeros(0, np.int64)])
        table = cache[key]
        if len(own) == hi - lo:  # nothing skipped: a zero-copy slice
            table = table.slice(lo * bs, len(rows))
        else:
            table = table.take(pa.array(rows))
        return table, rows // bs

    # ---- resume state --------------------------------------------------------------------------------
    def require_global(self, what: str) -> None:
        if self.by_user:
            raise engine.InvalidArgument(f"{what} needs the epoch's global batches: pass order='shuffle', or "
                                         "affinity=False for the stream order (user-hash parts have no resume)")

    def state(self, consumed) -> dict:
        """The state after ``consumed``: an int (the first ``consumed`` batches still to come, as one
        in-order consumer counts them) or the global batch indices of the consumed batches."""
        self.require_global("resume_state")
        left = [g for g in range(self.num_batches) if g not in self.skip]
        if isinstance(consumed, numbers.Integral) and not isinstance(consumed, bool):
            if not 0 <= int(consumed) <= len(left):
                raise engine.InvalidArgument(f"consumed must be in [0, {len(left)}] batches, got {consumed}")
            done = self.skip | set(left[:int(consumed)])
        else:
            try:
                taken = {int(g) for g in np.asarray(list(consumed)).ravel()}
            except (TypeError, ValueError):
                raise engine.InvalidArgument(f"consumed must be an int or batch indices, got {consumed!r}") from None
            wrong = sorted(taken - set(left))[:5]
            if wrong:
                raise engine.InvalidArgument(f"batch(es) {wrong} are not among this dataset's batches left")
            done = self.skip | taken
        prefix = 0
        while prefix in done:
            prefix += 1
        o = self.order
        state = {"format": STATE_FORMAT, "order": o.order, "seed": o.seed, "epoch": o.epoch,
                 "shuffle_window": o.shuffle_window, "batch_size": self.batch_size, "num_rows": self.num_rows,
                 "next_batch": prefix, "share": {"index": 0, "count": 1, "start": 0, "done": prefix}}
        after = sorted(g for g in done if g > prefix)
        if after:
            state["done_after"] = after
        return state

    def resumed(self, saved) -> EpochPlan:
        """This plan less the batches ``saved`` (a state of the same keywords) consumed."""
        self.require_global("resume")
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise engine.InvalidArgument(f"resume must be a state ({STATE_FORMAT}) of uih_dataset or of "
                                         f"iter_batches, got {str(saved)[:80]!r}")
        o = self.order
        want = {"order": o.order, "seed": o.seed, "epoch": o.epoch, "shuffle_window": o.shuffle_window,
                "batch_size": self.batch_size, "num_rows": self.num_rows}
        diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
        if diff:
            raise engine.InvalidArgument("resume state was saved with other keywords or thin rows: "
                                         + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in diff.items())
                                         + "; resume with the keywords it was saved with")
        share = saved.get("share") or {}
        if (share.get("index"), share.get("count")) == (0, 1):  # one reader: exactly where it stopped
            prefix = _int(share.get("start")) + _int(share.get("done"))
        else:  # another layout (ranks of an elastic run): the consumed prefix
            prefix = _int(saved.get("next_batch"))
        done = set(range(min(prefix, self.num_batches))) | {_int(g) for g in saved.get("done_after", ())}
        return replace(self, skip=frozenset(done))


def _int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise engine.InvalidArgument(f"resume state holds {v!r} where a batch count belongs; pass a state "
                                     "as saved")
    return int(v)
