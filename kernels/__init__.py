"""Device code: each CUDA kernel beside its ``numba.njit`` CPU twin, with one contract for both.

``slicing``: which stored and logged events each example keeps (versioned cut, filters, last max_len).
``assembly``: ragged-to-padded copy of every projected column, left or right aligned, plus lengths.
``reference``: the same contract in plain NumPy, one example at a time (the proof both twins must match).
Arguments travel in the named groups of ``_common`` (``Events``, ``Filter``, ``Examples``, ``Words``,
``Padded``). CUDA twins compile on first use, so importing this package never touches CUDA.
"""

from ._common import NO_WINDOW, Events, Examples, Filter, Padded, Words, make_filter
from .assembly import assemble_cpu, assemble_cuda
from .slicing import slice_cpu, slice_cuda

__all__ = ["slice_cpu", "slice_cuda", "assemble_cpu", "assemble_cuda", "make_filter", "NO_WINDOW",
           "Events", "Filter", "Examples", "Words", "Padded"]
