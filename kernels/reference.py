"""The kernels' contract in plain NumPy, one example at a time: the simplest proof, for tests and the
GPU check. ``random_case`` builds a source with the awkward shapes the kernels must handle; ``run``
drives a twin pair on it; ``reference`` computes what they must return.
"""

from __future__ import annotations

import numpy as np

from ._common import NO_WINDOW, Events, Examples, Padded, Words, make_filter


def random_case(seed, n_users=4, n_ex=6, max_hist=30, max_tail=5, n_types=4, sparse=False) -> dict:
    """Random source: per-user seq-sorted rows (maybe starting above 0 or skipping seqs) and tails."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(0, max_hist + 1, n_users)
    if rng.random() < 0.3:
        hist[rng.integers(0, n_users)] = 0  # an empty history
    seq_parts = []
    for h in hist:
        start = int(rng.integers(0, 5))
        s = np.arange(start, start + (3 * h if sparse else h))
        seq_parts.append(np.sort(rng.choice(s, h, replace=False)) if sparse else s)
    u_off = np.r_[0, np.cumsum(hist)]
    n_imm = int(u_off[-1])
    user = rng.integers(0, n_users, n_ex)
    tail_len = rng.integers(0, max_tail + 1, n_ex)
    tail_len[rng.random(n_ex) < 0.3] = 0  # empty tails
    t_off = n_imm + np.r_[0, np.cumsum(tail_len)]
    n_src = int(t_off[-1])
    seq = np.concatenate(seq_parts + [np.zeros(n_src - n_imm, np.int64)]).astype(np.int64)
    top = np.array([p[-1] + 1 if len(p) else 0 for p in seq_parts])
    imm_hw = np.array([rng.integers(0, top[u] + 2) for u in user], np.int64)
    imm_hw[rng.random(n_ex) < 0.2] = 0
    return {
        "seq": seq, "ts": rng.integers(0, 1000, n_src).astype(np.int64),  # non-monotonic: late arrivals
        "etype": rng.integers(0, n_types, n_src).astype(np.int32),
        "u_lo": u_off[user].astype(np.int64), "u_hi": u_off[user + 1].astype(np.int64), "imm_hw": imm_hw,
        "t_lo": t_off[:-1].astype(np.int64), "t_hi": t_off[1:].astype(np.int64),
        "request_ts": rng.integers(0, 1200, n_ex).astype(np.int64),
        "src8": rng.integers(-2**62, 2**62, (2, n_src)).astype(np.int64),
        "src4": rng.integers(-2**30, 2**30, (1, n_src)).astype(np.int32),
    }


def reference(case, max_len, right, actions, window, pad8, pad4) -> tuple:
    """SPEC §3 by the book, one example at a time: ``(out8, out4, lengths)``."""
    B = len(case["u_lo"])
    out8 = np.empty((case["src8"].shape[0], B, max_len), np.int64)
    out4 = np.empty((case["src4"].shape[0], B, max_len), np.int32)
    out8[:] = np.asarray(pad8)[:, None, None]
    out4[:] = np.asarray(pad4)[:, None, None]
    lengths = np.zeros(B, np.int32)
    for b in range(B):
        rows = [i for i in range(case["u_lo"][b], case["u_hi"][b]) if case["seq"][i] < case["imm_hw"][b]]
        rows += list(range(case["t_lo"][b], case["t_hi"][b]))
        kept = [i for i in rows if (actions is None or case["etype"][i] in actions) and
                (window is None or case["ts"][i] >= case["request_ts"][b] - window)]
        kept = kept[len(kept) - min(len(kept), max_len):]
        n = len(kept)
        off = max_len - n if right else 0
        out8[:, b, off:off + n] = case["src8"][:, kept]
        out4[:, b, off:off + n] = case["src4"][:, kept]
        lengths[b] = n
    return out8, out4, lengths


def run(slice_fn, assemble_fn, case, max_len, right, actions, window, pad8, pad4, xp=np) -> tuple:
    """``(out8, out4, lengths)`` of a twin pair on ``case``, its arrays moved to ``xp`` (NumPy or CuPy).

    The outputs start as garbage (77, -1): every slot must be written by the kernels.
    """
    d = {k: xp.asarray(v) for k, v in case.items()}
    B = len(case["u_lo"])
    flt = make_filter(actions, window is not None)
    flt = flt._replace(type_ok=xp.asarray(flt.type_ok))
    ts_min = case["request_ts"] - window if window is not None else np.full(B, NO_WINDOW)
    ev = Events(d["seq"], d["ts"], d["etype"])
    ex = Examples(d["u_lo"], d["u_hi"], d["imm_hw"], d["t_lo"], d["t_hi"], xp.asarray(ts_min))
    sel = xp.zeros((B, 5), np.int64)
    slice_fn(ev, flt, ex, max_len, sel)
    out = Padded(xp.full((case["src8"].shape[0], B, max_len), 77, np.int64),
                 xp.full((case["src4"].shape[0], B, max_len), 77, np.int32), xp.full(B, -1, np.int32))
    pad = Words(xp.asarray(np.asarray(pad8, np.int64)), xp.asarray(np.asarray(pad4, np.int32)))
    assemble_fn(Words(d["src8"], d["src4"]), ev, flt, ex, sel, max_len, right, pad, out)
    return tuple(out)
