"""``Batch``: one reconstructed batch, ``[B, max_len]`` per projected column plus ``lengths``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _deps

#: a packed batch's arrays: ``(name, dtype, shape, byte offset)`` each, in the batch's order
Layout = Sequence[tuple[str, np.dtype, tuple[int, ...], int]]
#: every array of a packed batch starts at a multiple of this many bytes, and the buffer ends at one
PACK_ALIGN = 64


class Batch(Mapping[str, Any]):
    """Read-only mapping ``name -> array`` (NumPy on CPU, CuPy on CUDA), in the order of the thin rows."""

    def __init__(self, arrays: dict[str, Any], device: str, packed: tuple[Any, Layout] | None = None) -> None:
        self._arrays = arrays
        self.device = device
        self._packed = packed

    def __getitem__(self, key: str) -> Any:
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def size(self) -> int:
        """Number of examples (rows) in the batch."""
        return int(self._arrays["lengths"].shape[0])

    def to_torch(self) -> dict:
        """The same arrays as torch tensors, sharing memory (DLPack), on the batch's device."""
        torch = _deps.torch()
        return {k: torch.from_dlpack(v) for k, v in self._arrays.items()}

    def packed(self) -> tuple[Any, Layout] | None:
        """``(buffer, layout)``: every array of the batch is a view of one contiguous byte buffer (the
        reconstructor's batches are, padded and jagged), else None. ``buffer`` is a 1-D uint8 array on the
        batch's device, ``layout`` one ``(name, dtype, shape, offset)`` per array, in this mapping's order,
        each offset 64-byte aligned.

        One buffer moves in one piece (a DALI input, a shared-memory block) and ``unpack`` gives the arrays
        back as views; the arrays are views of ``buffer`` already, so nothing is copied here. The flip
        side: any one array held keeps the whole buffer alive, so copy the small ones (``lengths``, labels)
        you keep across many batches.
        """
        return self._packed

    @staticmethod
    def packed_nbytes(layout: Layout) -> int:
        """Bytes of the buffer of a packed batch of ``layout`` (``packed()``): where its last array ends,
        rounded up to the alignment (at least one byte, so that an empty batch still has a buffer)."""
        end = max((off + np.dtype(dt).itemsize * math.prod(shape) for _, dt, shape, off in layout), default=0)
        return max(-(-end // PACK_ALIGN) * PACK_ALIGN, 1)

    @staticmethod
    def unpack(buffer: Any, layout: Layout,
               dtype: Callable[[np.dtype], Any] | None = None) -> dict[str, Any]:
        """The arrays of a packed batch (``packed()``) as views of ``buffer``, a 1-D uint8 array of any kind
        that slices and has ``.view(dtype)`` and ``.reshape`` (NumPy, CuPy, torch). ``dtype`` maps the
        layout's NumPy dtypes to ``buffer``'s library (torch's, say); None keeps them."""
        out = {}
        for name, dt, shape, off in layout:
            n = dt.itemsize
            for d in shape:
                n *= d
            out[name] = buffer[off:off + n].view(dt if dtype is None else dtype(dt)).reshape(shape)
        return out

    def to_numpy(self) -> dict:
        """Host copies (or the arrays themselves on CPU)."""
        return {k: (v.get() if hasattr(v, "get") else v) for k, v in self._arrays.items()}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self._arrays.items())
        return f"Batch(device={self.device!r}, {shapes})"

