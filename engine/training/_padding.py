"""Padding a jagged batch with the assembly kernel: the padded batch of the same rows, bit for bit.

Each row becomes one run of a tail source built from the jagged values, so the padded rows are written by
the same kernel (and the same compiled signature) as a reconstructed padded batch, in one packed buffer.
"""

from __future__ import annotations

import numpy as np

import kernels

from .._errors import SchemaError
from ._batch import Batch


def pad(jagged, projection, backend, packer, event_filter, pad_words, event_type_dtype) -> Batch:
    """``Reconstructor.pad``: the padded batch of ``jagged`` for a padded ``projection``, written into
    ``packer``'s buffers by ``backend``'s assembly kernel with the reconstructor's ``event_filter`` and
    ``pad_words`` (and its event-type lane's dtype, so the kernel's signature is the compiled one)."""
    p, be, xp = projection, backend, backend.xp
    if p.layout != "padded":
        raise SchemaError(f"pad() makes padded batches; {p} is jagged already")
    missing = [c for c in [*p.columns, "offsets", "lengths"] if c not in jagged]
    if missing:
        raise SchemaError(f"pad() needs a jagged batch with {missing}; make it with layout='jagged'")
    lengths, offsets = xp.asarray(jagged["lengths"]), xp.asarray(jagged["offsets"], np.int64)
    n, L = len(lengths), p.max_len
    if len(offsets) != n + 1 or (n and int(lengths.max()) > L):
        raise SchemaError(f"pad() got {n} rows with {len(offsets)} offsets and rows up to "
                          f"{int(lengths.max()) if n else 0} events; max_len is {L}")
    # the kernel trusts these bounds (the CUDA twin reads unchecked): rows must tile each column's values
    sizes = [len(jagged[c]) for c in p.columns]
    if int(offsets[0]) != 0 or bool((offsets[1:] - offsets[:-1] != lengths).any()) or \
            any(k != int(offsets[-1]) for k in sizes):
        raise SchemaError(f"pad() needs offsets from 0 whose steps are the lengths and whose end is each "
                          f"column's length ({sizes} values, offsets end at {int(offsets[-1])})")
    words = [xp.stack([xp.asarray(jagged[c]).view(w) for c in cols]) if cols else xp.empty((0, 0), w)
             for cols, w in ((packer.cols8, np.int64), (packer.cols4, np.int32))]
    none, zeros = xp.empty(0, np.int64), xp.zeros(n, np.int64)
    # every row is one run of the tail; the lanes' types are the reconstructor's, so no kernel compiles anew
    tail = kernels.Source(words[0], words[1], none, none, xp.empty(0, event_type_dtype))
    ex = kernels.Examples(zeros, zeros, zeros, offsets[:-1], offsets[1:], zeros)
    sel = xp.zeros((n, kernels.SEL_COLUMNS), np.int64)  # a padded jagged row is all tail
    sel[:, kernels.SEL_TAIL_LO], sel[:, kernels.SEL_N_TAIL] = offsets[:-1], lengths
    extras = {k: xp.asarray(v) for k, v in jagged.items() if k not in (*p.columns, "offsets", "lengths")}
    blob, pack, views = packer.views(n, L, {k: v.dtype for k, v in extras.items()})
    out8, out4, lens, *ext = views
    out = kernels.Output(out8.reshape(len(packer.cols8), n * L), out4.reshape(len(packer.cols4), n * L), lens,
                         packer.row_starts(pack, n, L), L)
    flt = event_filter._replace(use_types=False, use_window=False)
    be.assemble(tail, kernels.Runs(xp.zeros(1, np.int64), none, none), tail, flt, ex, sel, L,
                p.align == "right", pad_words, out, stream=be.launch_stream())
    for v, dst in zip(extras.values(), ext):
        dst[...] = v
    return packer.batch(blob, pack, views)
