"""Device code: each CUDA kernel beside its ``numba.njit`` CPU twin, with one contract for both.

``slicing``: which stored and logged events each example keeps (versioned cut, filters, last max_len).
``assembly``: ragged-to-padded copy of every projected column, left or right aligned, plus lengths.
CUDA twins compile on first use, so importing this package never touches CUDA.
"""

from ._common import NO_WINDOW, type_table
from .assembly import assemble_cpu, assemble_cuda
from .slicing import slice_cpu, slice_cuda

__all__ = ["slice_cpu", "slice_cuda", "assemble_cpu", "assemble_cuda", "type_table", "NO_WINDOW"]
