"""What both kernel families share: the event predicate and the CUDA compilation switch."""

from __future__ import annotations

import numpy as np
from numba import njit

# Threads per CUDA block. A compile-time constant because shared-memory scans are sized by it; the
# tests lower it (and call ``reset_cuda``) so the simulator can exercise multi-tile paths on tiny inputs.
CUDA_THREADS = 256

NO_WINDOW = np.iinfo(np.int64).min


@njit(inline="always")
def keep_event(i, etype, type_ok, type_base, ts, ts_min, use_types, use_window):
    """True when event ``i`` passes the projection's event-type set and time window."""
    if use_types:
        k = etype[i] - type_base
        if k < 0 or k >= type_ok.shape[0] or not type_ok[k]:
            return False
    if use_window and ts[i] < ts_min:
        return False
    return True


def type_table(actions):
    """(lookup table, base code) for an event-type set: ``type_ok[code - base]`` says kept."""
    if actions is None or len(actions) == 0:
        return np.zeros(1, np.bool_), 0
    codes = np.asarray(sorted(actions), np.int64)
    base = int(codes[0])
    ok = np.zeros(int(codes[-1]) - base + 1, np.bool_)
    ok[codes - base] = True
    return ok, base
