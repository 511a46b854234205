"""Device code: each CUDA kernel beside its ``numba.njit`` CPU twin, with one contract for both.

``slicing``: which stored and logged events each example keeps (versioned cut, filters, last max_len).
``assembly``: copy of every projected column straight from the decoded runs and the logged tails into
padded (left or right aligned) or jagged rows, plus lengths; and both kernels at once for padded rows
(``slice_assemble``: one parallel loop on CPU).
``reference``: the same contract in plain NumPy, one example at a time (the proof both twins must match).
Arguments travel in the named groups of ``_common`` (``Source``, ``Runs``, ``Filter``, ``Examples``,
``Words``, ``Output``). CUDA twins compile on first use, so importing this package never touches CUDA.
"""

# first: importing _cache sets how Numba checks the kernels' disk cache, _threads its threading layer
from . import _cache, _threads  # noqa: F401
from ._common import (
    NO_WINDOW,
    SEL_COLUMNS,
    SEL_IMM_HI,
    SEL_IMM_LO,
    SEL_N_IMM,
    SEL_N_TAIL,
    SEL_TAIL_LO,
    Examples,
    Filter,
    Output,
    Runs,
    Source,
    Words,
    make_filter,
)
from .assembly import (
    assemble_cpu,
    assemble_cuda,
    assemble_jit,
    slice_assemble_cpu,
    slice_assemble_cuda,
    slice_assemble_jit,
)
from .slicing import slice_cpu, slice_cuda, slice_jit

__all__ = ["slice_cpu", "slice_cuda", "slice_jit", "assemble_cpu", "assemble_cuda", "assemble_jit",
           "slice_assemble_cpu", "slice_assemble_cuda", "slice_assemble_jit", "make_filter",
           "NO_WINDOW", "SEL_IMM_LO", "SEL_IMM_HI", "SEL_N_IMM", "SEL_TAIL_LO", "SEL_N_TAIL", "SEL_COLUMNS",
           "Source", "Runs", "Filter", "Examples", "Words", "Output"]
