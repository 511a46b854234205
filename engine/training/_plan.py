"""The users of a chunk of thin rows and their window starts, planned in one compiled pass.

Each chunk needs its distinct users (sorted), each row's user rank, and per user the seq range and the
oldest window start its rows ask for, plus the check that no row points past its user's sealed events.
In NumPy that is a dozen calls (``unique``, three ``ufunc.at``, a lookup, a scan), each a few
microseconds of fixed cost, which at small batches is a visible share of a whole ``reconstruct``
(docs/design-measurements.md). Here it is one call, linear in the rows after one sort of them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from kernels import NO_WINDOW

INT64_MAX = np.iinfo(np.int64).max


class UserPlan(NamedTuple):
    users: np.ndarray  # [U] distinct user ids, increasing
    inv: np.ndarray  # [n] each row's index in ``users``
    seq_hi: np.ndarray  # [U] largest imm_hw of the user's rows: read seqs below it
    seq_lo: np.ndarray  # [U] smallest ``imm_hw - max_len``: no row needs older seqs
    ts_lo: np.ndarray  # [U] smallest window start: no row needs older events
    bad: int  # first row whose imm_hw exceeds its user's sealed events, or -1
    bad_sealed: int  # that user's sealed event count
    imm_min: int  # the rows' smallest imm_hw (0 for no rows): ``bad`` is meaningful only where it is >= 0
    newest: int  # the rows' largest store version (-1 for no rows, or where no versions were given)


@njit(cache=True, nogil=True)
def _plan(uid, imm_hw, ts_min, max_len, sealed_users, sealed_end):
    n = len(uid)
    # any sort will do: ties are the same user, whose rows are folded with min/max; quicksort is about
    # twice as fast as Numba's mergesort on a chunk of rows
    order = np.argsort(uid)
    nu = 0
    for k in range(n):
        if k == 0 or uid[order[k]] != uid[order[k - 1]]:
            nu += 1
    users = np.empty(nu, np.int64)
    inv = np.empty(n, np.int64)
    seq_hi = np.zeros(nu, np.int64)
    seq_lo = np.full(nu, INT64_MAX, np.int64)
    ts_lo = np.full(nu, INT64_MAX, np.int64)
    u = -1
    for k in range(n):
        i = order[k]
        if k == 0 or uid[i] != uid[order[k - 1]]:
            u += 1
            users[u] = uid[i]
        inv[i] = u
        seq_hi[u] = max(seq_hi[u], imm_hw[i])
        seq_lo[u] = min(seq_lo[u], imm_hw[i] - max_len)
        ts_lo[u] = min(ts_lo[u], ts_min[i])
    sealed = np.zeros(nu, np.int64)
    m = len(sealed_users)
    for u in range(nu):
        p = np.searchsorted(sealed_users, users[u])
        if p < m and sealed_users[p] == users[u]:
            sealed[u] = sealed_end[p]
    bad, bad_sealed = -1, 0
    for i in range(n):
        if imm_hw[i] > sealed[inv[i]]:
            bad, bad_sealed = i, sealed[inv[i]]
            break
    return users, inv, seq_hi, seq_lo, ts_lo, bad, bad_sealed


@njit(cache=True, nogil=True)
def _plan_chunk(uid, imm_hw, request_ts, version, window_us, use_window, max_len, sealed_users, sealed_end):
    n = len(uid)
    ts_min = np.empty(n, np.int64)
    lo = NO_WINDOW
    imm_min, newest = 0, -1
    for i in range(n):
        imm_min = min(imm_min, imm_hw[i])
        if i < len(version):
            newest = max(newest, version[i])
        # ``request_ts - window_us``, saturating at the smallest int64 instead of wrapping: window_us >= 0
        # (Projection saturates it), so lo + w cannot overflow, and a difference that would wrap is
        # exactly one replaced by lo
        if not use_window:
            ts_min[i] = NO_WINDOW
        elif request_ts[i] < lo + window_us:
            ts_min[i] = lo
        else:
            ts_min[i] = request_ts[i] - window_us
    return _plan(uid, imm_hw, ts_min, max_len, sealed_users, sealed_end), ts_min, imm_min, newest


def _as64(a):
    # one compiled signature; the thin rows' columns are int64 already, and this runs per chunk
    return a if a.dtype == np.int64 and a.flags.c_contiguous else np.ascontiguousarray(a, np.int64)


_NONE = np.zeros(0, np.int64)


def plan_chunk(uid, imm_hw, request_ts, window_us, max_len: int, sealed_users, sealed_end, version=None) -> tuple:
    """``(UserPlan, ts_min)``: the rows ``uid`` / ``imm_hw`` of a chunk planned against the store's sealed
    counts (``sealed_users`` increasing, ``sealed_end`` their event counts), with each row's window start
    ``ts_min`` (``window_us`` None: ``NO_WINDOW``), and the checks' inputs (the rows' smallest ``imm_hw``,
    their newest ``version``), in one compiled call: at a batch of 128 rows each NumPy call's fixed cost
    (a reduction, a conversion) is a visible share of a whole ``reconstruct``."""
    as64, use_window = _as64, window_us is not None
    (users, inv, hi, lo, ts_lo, bad, bad_sealed), ts_min, imm_min, newest = _plan_chunk(
        as64(uid), as64(imm_hw), as64(request_ts), _NONE if version is None else as64(version),
        np.int64(window_us if use_window else 0), use_window, np.int64(max_len), as64(sealed_users),
        as64(sealed_end))
    return UserPlan(users, inv, hi, lo, ts_lo, int(bad), int(bad_sealed), int(imm_min), int(newest)), ts_min


@njit(cache=True, nogil=True)
def examples(user_runs, inv, imm_hw, t_off, ts_min):
    """The kernels' ``Examples`` fields, each a fresh contiguous int64 array: each row's user's runs
    ``(r_lo, r_hi)`` from the users' first runs ``user_runs`` ``[U + 1]`` and the rows' user ranks ``inv``,
    its ``imm_hw``, its tail ``(t_lo, t_hi)`` from the tails' offsets ``t_off`` ``[n + 1]`` (any integer
    type) and its window start ``ts_min``. One compiled pass instead of a conversion per field."""
    n = len(inv)
    r_lo, r_hi, hw = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    t_lo, t_hi, ts = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        r_lo[i], r_hi[i] = user_runs[inv[i]], user_runs[inv[i] + 1]
        hw[i], t_lo[i], t_hi[i], ts[i] = imm_hw[i], t_off[i], t_off[i + 1], ts_min[i]
    return r_lo, r_hi, hw, t_lo, t_hi, ts
