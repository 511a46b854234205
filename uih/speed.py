"""Reconstruction speed against the machine's limits: the kernels alone, end to end, a memory copy of
the same bytes and a peer padding kernel (aten), for one batch of requests over every user.

Shared by ``uih bench`` (its scaling section) and ``bench/bench_reconstruct.py``.
"""

from __future__ import annotations

import numpy as np

import engine

from .fmt import median_time
from .workload import DAY_US

COLUMNS = ["item_id", "action", "ts"]  # 20 bytes per event


def requests(rng, users: int, batch: int) -> dict:
    """``batch`` requests of random users of a ``synthetic_store``, after its last event."""
    return {"user_id": rng.integers(0, users, batch), "request_ts": np.full(batch, 31 * DAY_US)}


def assembly_speed(store, lengths, batch: int, users: int) -> list:
    """GB/s of output per ``max_len``: the two kernels on a prepared chunk (``assembly``), a whole
    ``reconstruct`` (``end_to_end``), a 2-thread ``torch`` copy and aten's jagged-to-padded peer."""
    import torch
    rng = np.random.default_rng(1)
    torch.set_num_threads(2)
    thin = store.snapshot(requests(rng, users, batch))
    rows = []
    for L in lengths:
        p = engine.Projection(COLUMNS, max_len=L)
        rec = engine.Reconstructor(store, p, device="cpu")
        # the kernels alone: prepare one chunk, then time only its assembly (private steps, on purpose)
        chunk = rec._prepare(rec._as_thin(thin))
        out = rec._assemble(chunk, 0, chunk.n)
        nbytes = sum(out[c].nbytes for c in p.columns)
        t_asm = median_time(lambda: rec._assemble(chunk, 0, chunk.n), repeat=7)
        t_e2e = median_time(lambda: rec.reconstruct(thin), repeat=3)
        src = torch.empty(nbytes, dtype=torch.uint8)
        src.fill_(1)
        dst = torch.empty_like(src)
        t_copy = median_time(lambda: dst.copy_(src), repeat=7)
        lens = torch.from_numpy(out["lengths"].astype(np.int64))
        offsets = torch.zeros(batch + 1, dtype=torch.int64)
        torch.cumsum(lens, 0, out=offsets[1:])
        vals = [torch.from_numpy(np.concatenate([out[c][b, :out["lengths"][b]] for b in range(batch)]))
                .reshape(-1, 1) for c in p.columns]
        aten = torch.ops.aten._jagged_to_padded_dense_forward
        t_aten = median_time(lambda: [aten(v, [offsets], [L], 0.0) for v in vals], repeat=5)  # noqa: B023
        gb = nbytes / 1e9
        rows.append({"max_len": L, "batch": batch, "bytes": nbytes, "assembly_gbps": gb / t_asm,
                     "end_to_end_gbps": gb / t_e2e, "copy_gbps": gb / t_copy, "aten_gbps": gb / t_aten,
                     "vs_copy": t_copy / t_asm, "vs_aten": t_aten / t_asm})
    return rows
