"""Lazy import of Ray: ``import ray_plugin`` works without it; using it names the fix."""

from __future__ import annotations

import importlib

from engine import MissingDependency

RAY_FIX = "pip install 'uih-latemat[ray]' (Ray Data and Ray Train)"


def ray():
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise MissingDependency(f"ray_plugin needs 'ray', which is not importable ({e}); {RAY_FIX}") from e


def arrow_tensor_array():
    """Ray Data's Arrow tensor column type (``ArrowTensorArray.from_numpy``)."""
    ray()
    return importlib.import_module("ray.data.extensions").ArrowTensorArray
