"""Lazy import of TorchRec: ``import torch_plugin`` works without it; using it names the fix."""

from __future__ import annotations

import importlib

from engine import MissingDependency

# TorchRec's compiled half (fbgemm-gpu) loads only beside the torch release it was built for: 1.8 pairs with
# torch 2.13 (1.9 fails to load its .so beside it). PyPI's fbgemm-gpu is the CUDA build; fbgemm-gpu-cpu is
# the CPU one, which TorchRec's own requirement does not name, hence the Makefile's --no-deps step.
TORCHREC_FIX = ("pip install 'uih-latemat[torchrec]' (CUDA: torchrec and fbgemm-gpu 1.8.0, for torch 2.13), or "
                "on CPU `make test-torchrec` (fbgemm-gpu-cpu==1.8.0, then torchrec==1.8.0 --no-deps); "
                "fbgemm-gpu must be the release built for the installed torch")


def keyed_jagged_tensor():
    """``torchrec.sparse.jagged_tensor.KeyedJaggedTensor``."""
    try:
        return importlib.import_module("torchrec.sparse.jagged_tensor").KeyedJaggedTensor
    except (ImportError, OSError) as e:  # OSError: fbgemm-gpu's .so built for another torch release
        raise MissingDependency(f"to_kjt needs 'torchrec', which is not importable ({e}); {TORCHREC_FIX}") from e
