"""``to_kjt``: a jagged batch as TorchRec's ``KeyedJaggedTensor``, one key per projected column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

import engine

from . import _deps

_INT32 = torch.iinfo(torch.int32)
_INT64 = torch.iinfo(torch.int64)


def to_kjt(batch: Mapping[str, Any], keys: Sequence[str] | None = None) -> Any:
    """The ``KeyedJaggedTensor`` of a jagged batch (``engine.Projection(layout="jagged")``).

    ``batch``: an ``engine.Batch`` or a mapping of tensors (or arrays) as a DataLoader yields it, with each
    projected column's values of all rows end to end, ``offsets`` ``[B + 1]`` and ``lengths`` ``[B]``.
    ``keys``: the columns to make keys of, in this order; None takes the entries before ``lengths`` (the
    engine's batches list the projected columns first, then ``lengths``, ``offsets`` and the pass-through
    columns). Every key has the batch's ``B`` rows with the batch's lengths; the values are ids, so integer
    columns only, all cast to one dtype (int32 when every column fits it, else int64); lengths and offsets are
    the offsets' dtype (int64 from the engine). Shares no memory
    with the batch: the keys' values are concatenated into one tensor.
    """
    kjt_class = _deps.keyed_jagged_tensor()
    arrays = batch.to_torch() if isinstance(batch, engine.Batch) else batch
    if not isinstance(arrays, Mapping) or "offsets" not in arrays or "lengths" not in arrays:
        raise engine.SchemaError("to_kjt needs a jagged batch: a mapping with 'offsets' and 'lengths' "
                                 "(reconstruct with engine.Projection(..., layout='jagged'))")
    names = list(arrays)
    keys = names[:names.index("lengths")] if keys is None else [str(k) for k in keys]
    missing = [k for k in keys if k not in arrays]
    if not keys or missing or {"lengths", "offsets"} & set(keys):
        raise engine.SchemaError(f"to_kjt keys must be projected columns of the batch ({names}); got {keys}")
    tensors = {name: _tensor(arrays[name]) for name in (*keys, "lengths", "offsets")}
    lengths, offsets = tensors["lengths"], tensors["offsets"]
    _check_rows(lengths, offsets)
    lengths = lengths.to(offsets.dtype)  # one index dtype for both, as TorchRec's ops expect
    total = int(offsets[-1])
    for k in keys:
        v = tensors[k]
        if v.dim() != 1 or v.shape[0] != total:
            raise engine.SchemaError(f"to_kjt: column {k!r} has shape {tuple(v.shape)}, but the offsets end at "
                                     f"{total}; keys= must name projected columns, not [B] pass-through ones")
    dtype = _id_dtype({k: tensors[k].dtype for k in keys})
    values = torch.cat([tensors[k].to(dtype) for k in keys])
    # every key has the same rows: the batch's lengths once per key, and offsets that go on from key to key
    steps = torch.arange(len(keys), dtype=offsets.dtype, device=offsets.device) * total
    kjt_offsets = torch.cat([(offsets[:-1] + steps[:, None]).reshape(-1), offsets.new_full((1,), len(keys) * total)])
    return kjt_class(keys=keys, values=values, lengths=lengths.repeat(len(keys)), offsets=kjt_offsets,
                     stride=int(lengths.shape[0]))


def _tensor(v) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v)


def _check_rows(lengths: torch.Tensor, offsets: torch.Tensor) -> None:
    """Offsets from 0 whose steps are the lengths: the rows the keys share."""
    if lengths.dim() != 1 or offsets.dim() != 1 or offsets.shape[0] != lengths.shape[0] + 1:
        raise engine.SchemaError(f"to_kjt needs offsets [B + 1] and lengths [B]; got {tuple(offsets.shape)} "
                                 f"and {tuple(lengths.shape)}")
    if int(offsets[0]) != 0 or bool((offsets[1:] - offsets[:-1] != lengths).any()):
        raise engine.SchemaError("to_kjt needs offsets from 0 whose steps are the lengths (a jagged batch)")


def _id_dtype(dtypes: dict) -> torch.dtype:
    """int32 when every column's values fit it, else int64; a column that is not integer or may not fit
    int64 (uint64) is refused."""
    for k, dt in dtypes.items():
        if dt.is_floating_point or dt.is_complex or dt == torch.bool:
            raise engine.SchemaError(f"to_kjt: column {k!r} is {dt}, but KeyedJaggedTensor values are integer "
                                     "ids; leave it out with keys=")
        info = torch.iinfo(dt)
        if info.max > _INT64.max:
            raise engine.SchemaError(f"to_kjt: column {k!r} is {dt}, whose values may not fit int64; cast it")
    fits32 = all(_INT32.min <= torch.iinfo(dt).min and torch.iinfo(dt).max <= _INT32.max for dt in dtypes.values())
    return torch.int32 if fits32 else torch.int64
