"""``Batch``: one reconstructed batch, ``[B, max_len]`` per projected column plus ``lengths``."""

from __future__ import annotations

from collections.abc import Mapping

from .. import _deps


class Batch(Mapping):
    """Read-only mapping ``name -> array`` (NumPy on CPU, CuPy on CUDA), in the order of the thin rows."""

    def __init__(self, arrays: dict, device: str):
        self._arrays = arrays
        self.device = device

    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    @property
    def size(self) -> int:
        """Number of examples (rows) in the batch."""
        return int(self._arrays["lengths"].shape[0])

    def to_torch(self) -> dict:
        """The same arrays as torch tensors, sharing memory (DLPack), on the batch's device."""
        torch = _deps.torch()
        return {k: torch.from_dlpack(v) for k, v in self._arrays.items()}

    def to_numpy(self) -> dict:
        """Host copies (or the arrays themselves on CPU)."""
        return {k: (v.get() if hasattr(v, "get") else v) for k, v in self._arrays.items()}

    def __repr__(self):
        shapes = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self._arrays.items())
        return f"Batch(device={self.device!r}, {shapes})"
