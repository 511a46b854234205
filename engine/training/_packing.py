"""How a batch's arrays share one buffer: every column, ``lengths``, jagged ``offsets`` and the extra
columns, each 64-byte aligned, so a batch moves in one piece (a DALI input, shared memory) and its arrays
are views of it (``Batch.packed`` / ``Batch.unpack``)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._batch import PACK_ALIGN, Batch


class Pack(NamedTuple):
    """How a batch of one shape is packed."""

    parts: list  # per part (word matrices, lengths, offsets, extras): dtype, shape, byte range
    size: int  # buffer bytes
    layout: tuple  # ``Batch.packed``'s layout
    picks: list  # per layout entry: its name, part, lane (None: the whole part) and dtype
    starts: object  # padded, on the host: each row's first output position (``kernels.Output``), else None


class BatchPacker:
    """Packs the batches of one projection: ``columns`` in order, their dtypes, and which sit in the 8-byte
    (``cols8``) and 4-byte (``cols4``) word matrices the kernels write."""

    def __init__(self, backend, columns: list, dtypes: dict, cols8: list, cols4: list, device: str):
        self.backend, self.columns, self.dtypes = backend, columns, dtypes
        self.cols8, self.cols4, self.device = cols8, cols4, device
        self._plans: dict = {}  # padded (rows, max_len, extras) -> Pack

    def views(self, n: int, L: int, extras: dict, total=None) -> tuple:
        """One byte buffer for a batch of ``n`` rows, its ``Pack`` and the pack's part views: the int64 and
        int32 word matrices (``[C, n, L]`` padded, ``[C, total]`` jagged), ``lengths``, jagged ``offsets``,
        one array per extra column."""
        if total is not None:  # jagged: the event total differs batch to batch, nothing to reuse
            pack = self._plan(n, L, extras, total)
        else:  # padded: a few shapes per job (full batches, the last one), each planned once
            key = (n, L, tuple(extras.items()))
            cached = self._plans.get(key)
            if cached is not None:
                pack = cached
            else:
                if len(self._plans) >= 64:  # keep the cache small whatever the batch sizes
                    self._plans.clear()
                pack = self._plans[key] = self._plan(n, L, extras, None)
        blob = self.backend.empty((pack.size,), np.uint8)
        return blob, pack, [blob[a:b].view(dt).reshape(shape) for dt, shape, a, b in pack.parts]

    def row_starts(self, pack: Pack, n: int, L: int):
        """Each padded row's first output position: the plan's on the host, a fresh array on a device."""
        return pack.starts if pack.starts is not None else self.backend.xp.arange(n, dtype=np.int64) * L

    def batch(self, blob, pack: Pack, views: list) -> Batch:
        """The ``Batch`` of one packed buffer: every array a view of it, taken from the part views
        (the same arrays ``Batch.unpack`` gives from the layout, without recomputing each byte range)."""
        arrays = {}
        for name, part, lane, dt in pack.picks:
            v = views[part] if lane is None else views[part][lane]
            arrays[name] = v if v.dtype == dt else v.view(dt)
        return Batch(arrays, self.device, (blob, pack.layout))

    def _plan(self, n: int, L: int, extras: dict, total) -> Pack:
        """How ``views`` packs a batch of ``n`` rows (``total`` events if jagged)."""
        c8, c4 = len(self.cols8), len(self.cols4)
        rows = (n, L) if total is None else (total,)
        shapes = [(np.dtype(np.int64), (c8, *rows)), (np.dtype(np.int32), (c4, *rows)), (np.dtype(np.int32), (n,)),
                  *([] if total is None else [(np.dtype(np.int64), (n + 1,))]),
                  *((np.dtype(d), (n,)) for d in extras.values())]
        parts, end = [], 0
        for dt, shape in shapes:
            nbytes = dt.itemsize * math.prod(shape)
            parts.append((dt, shape, end, end + nbytes))
            end += -(-nbytes // PACK_ALIGN) * PACK_ALIGN  # aligned starts
        lane = math.prod(rows)  # words per column

        def at(c):
            return parts[0][2] + self.cols8.index(c) * lane * 8 if c in self.cols8 else \
                parts[1][2] + self.cols4.index(c) * lane * 4
        layout: list = [(c, self.dtypes[c], rows, at(c)) for c in self.columns]
        layout.append(("lengths", np.dtype(np.int32), (n,), parts[2][2]))
        if total is not None:
            layout.append(("offsets", np.dtype(np.int64), (n + 1,), parts[3][2]))
        extra_parts = parts[len(shapes) - len(extras):]
        layout += [(c, np.dtype(d), (n,), part[2]) for (c, d), part in zip(extras.items(), extra_parts)]
        picks: list = [(c, 0, self.cols8.index(c), self.dtypes[c]) if c in self.cols8 else
                 (c, 1, self.cols4.index(c), self.dtypes[c]) for c in self.columns]
        picks += [(name, k, None, dt) for k, (name, dt, _, _) in enumerate(layout[len(picks):], start=2)]
        # host only: a device array made once would be read by kernels on other streams than the one that
        # made it (and freed to its stream's pool while they might), so on a GPU each batch makes its own
        starts = np.arange(n, dtype=np.int64) * L if total is None and self.backend.xp is np else None
        shared = tuple(layout)  # shared by every batch of this shape
        return Pack(parts, Batch.packed_nbytes(shared), shared, picks, starts)
