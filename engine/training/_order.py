"""Training order: which thin rows an epoch visits, in which order, in which share, and from where to resume.

An epoch is a sequence of *global batches*: the thin rows in the epoch's order, cut every ``batch_size``
rows. The order depends only on the keywords ``order``, ``seed``, ``epoch``, ``shuffle_window`` and the
number of thin rows, never on how many ranks or workers read it, so a state saved at one world size
resumes at another:

- ``"stream"``: the thin rows in their order (streaming training reads them so).
- ``"shuffle"``: blocks of ``BLOCK_ROWS`` consecutive thin rows in a random order (no trend over the
  input's order: a late block is as likely first as an early one), then a random permutation inside
  each window of ``shuffle_window`` rows of that sequence (adjacent examples rarely share a user). The
  reconstructor reads each chunk of the window user-grouped, so a user's UIH is still decoded once per
  chunk, and the arena keeps its row groups for the rest of the window.

A *share* (one rank, one DataLoader worker, one actor) of ``shares`` takes the global batches
``start + share + shares * i``; every batch lands in exactly one share. ``start`` is the resume point: all
global batches before it were consumed. Shares that read in lockstep (ranks stepping together) consumed
``start + shares * k`` batches after ``k`` batches each, which is what a share's state records as
``next_batch``; a state resumed by the same share layout continues exactly where that share stopped.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .._errors import InvalidArgument

#: consecutive thin rows kept together by the shuffle: the unit whose order is randomized
BLOCK_ROWS = 1024
#: rows permuted together by default: a few chunks of a typical batch size, a few MB of thin rows
DEFAULT_WINDOW = 16_384
STATE_FORMAT = "uih-order/1"


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise InvalidArgument(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class Order:
    """The keywords that fix an epoch's order (``iter_batches``' ``order``, ``seed``, ``epoch``,
    ``shuffle_window``)."""

    order: Literal["stream", "shuffle"] = "stream"
    seed: int = 0
    epoch: int = 0
    shuffle_window: int | None = None

    def __post_init__(self):
        if self.order not in ("stream", "shuffle"):
            raise InvalidArgument(f"order must be 'stream' or 'shuffle', got {self.order!r}")
        _int("seed", self.seed, 0)
        _int("epoch", self.epoch, 0)
        if self.shuffle_window is not None:
            _int("shuffle_window", self.shuffle_window, 1)

    @property
    def window(self) -> int:
        return DEFAULT_WINDOW if self.shuffle_window is None else int(self.shuffle_window)

    def permutation(self, n: int) -> np.ndarray | None:
        """The epoch's order of ``n`` thin rows as their indices (int64), or None for the input order."""
        if self.order == "stream":
            return None
        rng = np.random.Generator(np.random.PCG64([int(self.seed), int(self.epoch), 0x5548]))
        nb = -(-n // BLOCK_ROWS)
        blocks = rng.permutation(nb)
        lengths = np.minimum(BLOCK_ROWS, n - blocks * BLOCK_ROWS)
        # the rows of the blocks, in block order, without a Python loop: each row is its block's start plus
        # its position in the block
        ends = np.cumsum(lengths)
        rows = (np.arange(n, dtype=np.int64) - np.repeat(ends - lengths, lengths)
                + np.repeat(blocks * BLOCK_ROWS, lengths))
        keys = rng.random(n)
        window = np.arange(n, dtype=np.int64) // self.window
        return rows[np.lexsort((keys, window))]


@dataclass(frozen=True)
class Share:
    """Which global batches one reader takes: ``start + index + count * i`` (``i = skip, skip + 1, ...``)."""

    index: int = 0
    count: int = 1
    start: int = 0  # global batches before it were consumed before this epoch's reading began
    skip: int = 0  # own batches already consumed (an exact resume of the same share)

    def __post_init__(self):
        _int("share count", self.count, 1)
        if not (isinstance(self.index, numbers.Integral) and 0 <= self.index < self.count):
            raise InvalidArgument(f"share index must be in [0, {self.count}), got {self.index!r}")
        _int("resume start", self.start, 0)
        _int("resume skip", self.skip, 0)

    def batches(self, total: int) -> range:
        """The global batch indices of this share, of ``total`` in the epoch."""
        return range(self.start + self.index + self.count * self.skip, total, self.count)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def state(order: Order, batch_size: int, n: int, share: Share, yielded: int) -> dict:
    """The JSON-serializable resume state of a share that yielded ``yielded`` batches since it began."""
    done = share.skip + yielded
    return {"format": STATE_FORMAT, "order": order.order, "seed": order.seed, "epoch": order.epoch,
            "shuffle_window": order.shuffle_window, "batch_size": batch_size, "num_rows": n,
            # in lockstep, every share consumed ``done`` batches: the epoch's consumed prefix
            "next_batch": min(share.start + share.count * done, num_batches(n, batch_size)),
            "share": {"index": share.index, "count": share.count, "start": share.start, "done": done}}


def resume_share(saved: dict | None, order: Order, batch_size: int, n: int, index: int = 0, count: int = 1) -> Share:
    """The share to read after ``saved`` (a ``state``), checked against the keywords it must match: the
    same share layout resumes exactly where that share stopped; another layout (elastic: another world
    size) resumes at the consumed prefix ``next_batch``, every remaining batch in exactly one share."""
    if saved is None:
        return Share(index, count)
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise InvalidArgument(f"resume must be a state_dict() of a UIH batch iterator ({STATE_FORMAT}), got "
                              f"{str(saved)[:80]!r}")
    want = {"order": order.order, "seed": order.seed, "epoch": order.epoch, "shuffle_window": order.shuffle_window,
            "batch_size": batch_size, "num_rows": n}
    diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
    if diff:
        raise InvalidArgument("resume state was saved with other keywords or thin rows: "
                              + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in diff.items())
                              + "; resume with the keywords the state was saved with")
    sh = saved.get("share") or {}
    if (sh.get("index"), sh.get("count")) == (index, count):
        return Share(index, count, start=_int("resume start", sh.get("start"), 0),
                     skip=_int("resume done", sh.get("done"), 0))
    return Share(index, count, start=_int("resume next_batch", saved.get("next_batch"), 0))


def with_share(share: Share, index: int, count: int) -> Share:
    return replace(share, index=index, count=count)
