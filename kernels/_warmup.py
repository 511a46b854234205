"""Whether this process would compile Numba code for a workload on first use, and the mark that says it
will not: a warm-up that compiled everything a workload needs leaves a marker beside the kernels' disk
cache, named by the sources' stamp (``kernels._cache``), Numba's version and the workload's key. A fresh
clone, any edit to ``kernels``, ``engine`` or ``dali_plugin``, another Numba or another workload shape
has no marker: then the caller compiles everything once, visibly, before anything is timed.

A marker, not Numba's cache index, decides: the index tells which functions have *some* compiled code,
not whether every signature a workload uses is there (a function the workload never calls would keep
it "cold" forever).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numba
from numba.core.caching import FunctionCache

from ._cache import PACKAGES, project_stamp

_DIR = Path(__file__).resolve().parent / "__pycache__"


def cached_functions() -> list:
    """Every ``cache=True`` Numba function of the project's modules imported so far."""
    out, seen = [], set()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in PACKAGES:
            continue
        for value in vars(module).values():
            if isinstance(getattr(value, "_cache", None), FunctionCache) and id(value) not in seen:
                seen.add(id(value))
                out.append(value)
    return out


def marker(key: str) -> Path:
    where = os.environ.get("NUMBA_CACHE_DIR")  # another cache folder holds none of this one's code
    digest = hashlib.sha1(repr((project_stamp(), numba.__version__, sys.version_info[:2], where, key)).encode())
    return _DIR / f"uih-warm-{digest.hexdigest()[:16]}"


def cache_is_cold(key: str = "") -> bool:
    """True unless a warm-up for ``key`` completed with these sources and this Numba."""
    return not marker(key).exists()


def mark_warm(key: str = "") -> None:
    """After a warm-up compiled everything ``key``'s workload uses (a read-only install just stays cold)."""
    try:
        _DIR.mkdir(exist_ok=True)
        marker(key).touch()
    except OSError:
        pass
