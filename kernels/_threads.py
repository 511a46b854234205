"""Numba's threading layer for the CPU kernels: TBB, which survives ``fork()`` and concurrent callers.

Numba picks a layer at the first parallel kernel: TBB if it loads, else OpenMP, else its own workqueue.
- GNU OpenMP (Linux) is not fork-safe: once a process ran a parallel kernel, a child it forks is killed at
  its own first one ("fork() called from a process already using GNU OpenMP, this is unsafe"), so a torch
  DataLoader worker or a multiprocessing pool forked after any ``reconstruct`` dies.
- The workqueue survives fork but aborts the process when two threads run parallel kernels at once, as a
  DALI pipeline's threads and the caller's do.
- TBB does both. pip's ``tbb`` puts ``libtbb.so.12`` in ``<prefix>/lib``, where the dynamic loader does not
  look, and Numba looks it up by that name only, so Numba never found it: it is loaded here by path, and
  Numba's own choice then takes it. Without TBB that choice stays OpenMP (fork unsafe, thread safe).

A layer the user chose (``NUMBA_THREADING_LAYER``) is kept. The compiled kernels call the layer through
symbols bound when it starts, so one disk cache serves every layer.
"""

from __future__ import annotations

import ctypes
import os
import sys

TBB_LIBRARY = "libtbb.so.12"


def load_tbb() -> bool:
    """True when TBB's library is loaded: one the loader finds, else pip's copy under ``sys.prefix``."""
    if not sys.platform.startswith("linux"):
        return False  # only GNU OpenMP is fork-unsafe; elsewhere Numba's OpenMP is Intel's or LLVM's, or no fork
    for path in (TBB_LIBRARY, os.path.join(sys.prefix, "lib", TBB_LIBRARY)):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


load_tbb()  # on import, before any kernel starts the layer
