"""Lazy imports of the heavy optional packages; a missing one names the fix.

Nothing here runs at import time: importing ``engine`` must work (and stay fast) on a machine with
no GPU libraries at all.
"""

from __future__ import annotations

import importlib

from ._errors import MissingDependency

GPU_FIX = "install the GPU environment: conda env create -f environment.yml (or pip install 'uih-latemat[gpu]')"


def _load(name: str, why: str, fix: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingDependency(f"{why} needs {name!r}, which is not importable ({e}); {fix}") from e


def cupy():
    return _load("cupy", "device='cuda'", GPU_FIX)


def numba_cuda():
    return _load("numba.cuda", "the CUDA kernels", GPU_FIX)


def cudf_or_none():
    """cuDF if installed and usable, else None (the CUDA path then reads with PyArrow)."""
    try:
        return importlib.import_module("cudf")
    except Exception:  # cudf raises more than ImportError when CUDA libraries are missing
        return None


def torch():
    return _load("torch", "Batch.to_torch()", "pip install torch==2.13.0 (CPU) or use environment.yml")


def dali():
    return _load("nvidia.dali", "the DALI pipeline", "pip install nvidia-dali-cuda120")
