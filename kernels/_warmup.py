"""Whether this process will compile Numba code on first use: the disk cache holds nothing for some
``cache=True`` function of the project under the current source stamp (``kernels._cache``): a fresh
clone, or any edit to ``kernels``, ``engine`` or ``dali_plugin``.

Callers that run measured work (``uih demo``, ``uih bench``) ask this first, and then compile everything
once, visibly, before anything is timed; with a warm cache they say nothing.
"""

from __future__ import annotations

import sys

from numba.core.caching import FunctionCache

from ._cache import PACKAGES


def cached_functions() -> list:
    """Every ``cache=True`` Numba function of the project's modules imported so far (nothing is imported
    here: a module not yet loaded compiles, or loads, when it is)."""
    out, seen = [], set()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in PACKAGES:
            continue
        for value in vars(module).values():
            if isinstance(getattr(value, "_cache", None), FunctionCache) and id(value) not in seen:
                seen.add(id(value))
                out.append(value)
    return out


def cache_is_cold() -> bool:
    """True where some cached function has no compiled code on disk for the current sources."""
    for fn in cached_functions():
        try:
            if not fn._cache._cache_file._load_index():
                return True
        except (AttributeError, OSError):  # another Numba's cache layout: assume the worst, say so
            return True
    return False
