"""The kernels' contract in plain NumPy, one example at a time: the simplest proof, for tests and the
GPU check. ``random_case`` builds sources with the awkward shapes the kernels must handle; ``run``
drives a twin pair on it; ``reference`` computes what they must return.
"""

from __future__ import annotations

import numpy as np

from ._common import NO_WINDOW, SEL_COLUMNS, SEL_N_IMM, SEL_N_TAIL, Examples, Output, Runs, Source, Words, make_filter


def random_case(seed, n_users=4, n_ex=6, max_hist=30, max_tail=5, n_types=4, sparse=False) -> dict:
    """Random sources: each user's seq-sorted events (maybe starting above 0 or skipping seqs) cut into
    runs that lie in shuffled places of a larger arena (garbage between them), and the examples' tails."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(0, max_hist + 1, n_users)
    if rng.random() < 0.3:
        hist[rng.integers(0, n_users)] = 0  # an empty history
    runs = []  # (user, seqs of the run), in user then seq order
    for u, h in enumerate(hist):
        start = int(rng.integers(0, 5))
        s = np.arange(start, start + (3 * h if sparse else h))
        seqs = np.sort(rng.choice(s, h, replace=False)) if sparse else s
        cuts = np.unique(rng.integers(1, max(h, 1), rng.integers(0, 4))) if h > 1 else np.zeros(0, np.int64)
        runs += [(u, part) for part in np.split(seqs, cuts) if len(part)]
    gaps = rng.integers(0, 4, len(runs) + 1)
    n_src = int(sum(len(r) for _, r in runs) + gaps.sum())
    seq = rng.integers(-5, 5, n_src).astype(np.int64)  # garbage outside the runs
    order = rng.permutation(len(runs))  # runs lie anywhere in the arena
    pos = np.zeros(len(runs), np.int64)
    at = int(gaps[0])
    for k, r in enumerate(order):
        pos[r] = at
        seq[at:at + len(runs[r][1])] = runs[r][1]
        at += len(runs[r][1]) + int(gaps[k + 1])
    counts = np.array([len(r) for _, r in runs], np.int64)
    first = np.array([r[0] for _, r in runs], np.int64)
    run_user = np.array([u for u, _ in runs], np.int64)
    user_runs = np.r_[0, np.cumsum(np.bincount(run_user, minlength=n_users))]
    user = rng.integers(0, n_users, n_ex)
    tail_len = rng.integers(0, max_tail + 1, n_ex)
    tail_len[rng.random(n_ex) < 0.3] = 0  # empty tails
    t_off = np.r_[0, np.cumsum(tail_len)]
    n_tail = int(t_off[-1])
    top = np.array([(runs[user_runs[u + 1] - 1][1][-1] + 1) if hist[u] else 0 for u in range(n_users)])
    imm_hw = np.array([rng.integers(0, top[u] + 2) for u in user], np.int64)
    imm_hw[rng.random(n_ex) < 0.2] = 0
    return {
        "seq": seq, "ts": rng.integers(0, 1000, n_src).astype(np.int64),  # non-monotonic: late arrivals
        "etype": rng.integers(0, n_types, n_src).astype(np.int32),
        "src8": rng.integers(-2**62, 2**62, (2, n_src)).astype(np.int64),
        "src4": rng.integers(-2**30, 2**30, (1, n_src)).astype(np.int32),
        "start": np.r_[0, np.cumsum(counts)].astype(np.int64), "pos": pos,
        "seq0": np.where(sparse, -1, first).astype(np.int64),
        "r_lo": user_runs[user].astype(np.int64), "r_hi": user_runs[user + 1].astype(np.int64), "imm_hw": imm_hw,
        "t_lo": t_off[:-1].astype(np.int64), "t_hi": t_off[1:].astype(np.int64),
        "request_ts": rng.integers(0, 1200, n_ex).astype(np.int64),
        "tail_ts": rng.integers(0, 1000, n_tail).astype(np.int64),
        "tail_etype": rng.integers(0, n_types, n_tail).astype(np.int32),
        "tail8": rng.integers(-2**62, 2**62, (2, n_tail)).astype(np.int64),
        "tail4": rng.integers(-2**30, 2**30, (1, n_tail)).astype(np.int32),
    }


def reference(case, max_len, right, actions, window, pad8, pad4) -> tuple:
    """docs/semantics.md by the book, one example at a time: ``(out8, out4, lengths)``, padded."""
    B = len(case["r_lo"])
    out8 = np.empty((case["src8"].shape[0], B, max_len), np.int64)
    out4 = np.empty((case["src4"].shape[0], B, max_len), np.int32)
    out8[:] = np.asarray(pad8)[:, None, None]
    out4[:] = np.asarray(pad4)[:, None, None]
    lengths = np.zeros(B, np.int32)
    for b in range(B):
        events = []  # (source name, position) of every visible event, oldest first
        for j in range(case["r_lo"][b], case["r_hi"][b]):
            for k in range(case["start"][j + 1] - case["start"][j]):
                i = case["pos"][j] + k
                if case["seq"][i] < case["imm_hw"][b]:
                    events.append(("", i))
        events += [("tail_", i) for i in range(case["t_lo"][b], case["t_hi"][b])]
        kept = [(s, i) for s, i in events if (actions is None or case[s + "etype"][i] in actions) and
                (window is None or case[s + "ts"][i] >= case["request_ts"][b] - window)]
        kept = kept[len(kept) - min(len(kept), max_len):]
        n = len(kept)
        off = max_len - n if right else 0
        for k, (s, i) in enumerate(kept):
            out8[:, b, off + k] = case["src8" if s == "" else "tail8"][:, i]
            out4[:, b, off + k] = case["src4" if s == "" else "tail4"][:, i]
        lengths[b] = n
    return out8, out4, lengths


def run(slice_fn, assemble_fn, case, max_len, right, actions, window, pad8, pad4, xp=np,
        jagged=False, stream=0, fused=None) -> tuple:
    """``(out8, out4, lengths)`` of a twin pair on ``case``, its arrays moved to ``xp`` (NumPy or CuPy),
    both kernels launched on ``stream``.

    The outputs start as garbage (77, -1): every slot must be written by the kernels. ``jagged``: the
    assembly writes exact-length rows, which are padded here (with ``pad8``/``pad4``) for comparison.
    ``fused``: a ``slice_assemble`` twin run on a second output (padded), whose rows and ``sel`` must
    equal the pair's (checked here).
    """
    d = {k: xp.asarray(v) for k, v in case.items()}
    B = len(case["r_lo"])
    flt = make_filter(actions, window is not None)
    flt = flt._replace(type_ok=xp.asarray(flt.type_ok))
    ts_min = case["request_ts"] - window if window is not None else np.full(B, NO_WINDOW)
    src = Source(d["src8"], d["src4"], d["seq"], d["ts"], d["etype"])
    tail = Source(d["tail8"], d["tail4"], xp.zeros(0, np.int64), d["tail_ts"], d["tail_etype"])
    runs = Runs(d["start"], d["pos"], d["seq0"])
    ex = Examples(d["r_lo"], d["r_hi"], d["imm_hw"], d["t_lo"], d["t_hi"], xp.asarray(ts_min))
    sel = xp.zeros((B, SEL_COLUMNS), np.int64)
    slice_fn(src, runs, tail, flt, ex, max_len, sel, stream=stream)
    n = sel[:, SEL_N_IMM] + sel[:, SEL_N_TAIL]
    n = n.get() if hasattr(n, "get") else np.asarray(n)
    starts = np.r_[0, np.cumsum(n)][:-1] if jagged else np.arange(B) * max_len
    total = int(n.sum()) if jagged else B * max_len
    out = Output(xp.full((case["src8"].shape[0], total), 77, np.int64),
                 xp.full((case["src4"].shape[0], total), 77, np.int32), xp.full(B, -1, np.int32),
                 xp.asarray(starts.astype(np.int64)), 0 if jagged else max_len)
    pad = Words(xp.asarray(np.asarray(pad8, np.int64)), xp.asarray(np.asarray(pad4, np.int32)))
    assemble_fn(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=stream)
    if fused is not None and not jagged:
        sel2 = xp.full((B, SEL_COLUMNS), -7, np.int64)
        out2 = out._replace(w8=xp.full_like(out.w8, 77), w4=xp.full_like(out.w4, 77), lengths=xp.full(B, -1, np.int32))
        fused(src, runs, tail, flt, ex, sel2, max_len, right, pad, out2, stream=stream)
        for a, b in ((sel, sel2), *zip(out[:3], out2[:3])):
            np.testing.assert_array_equal(_host(a), _host(b))
    if not jagged:
        return out.w8.reshape(len(out.w8), B, max_len), out.w4.reshape(len(out.w4), B, max_len), out.lengths
    host = [_host(a) for a in out]
    padded = []
    for vals, p in ((host[0], pad8), (host[1], pad4)):
        rows = np.empty((vals.shape[0], B, max_len), vals.dtype)
        rows[:] = np.asarray(p, vals.dtype)[:, None, None]
        for b in range(B):
            off = max_len - n[b] if right else 0
            rows[:, b, off:off + n[b]] = vals[:, starts[b]:starts[b] + n[b]]
        padded.append(rows)
    return padded[0], padded[1], host[2]


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)
