"""Launching a compiled CUDA kernel with little host work per launch.

Measured on an H200 (bench/gpu_profile.py, numba-cuda 0.30): the slicing + assembly pair runs in 38 us on
the device but took 2.6 ms to launch through the dispatcher, because our kernels take ~48 arrays in named
groups and Numba imports each one (a ``DeviceNDArray`` built from ``__cuda_array_interface__``, 27 us),
types it and marshals it again (``_prepare_args``, ~18 us) at every launch. The launch, not the kernels,
set the GPU path's speed.

``FastLaunch`` keeps Numba's compiled kernel and its argument types, and marshals arguments itself the way
Numba's ABI lays them out (per array: meminfo, parent, size, itemsize, data pointer, shape, strides in
bytes; per scalar its C value; named tuples flattened), reading pointers straight from the arrays' CUDA
array interface. A launch whose argument *types* were not seen before (another dtype, rank or layout)
goes through the dispatcher once, which compiles or picks the overload; later ones with those types are
fast. It relies on numba-cuda internals (``overloads``, ``argument_types``, the code library's cufunc,
``cuda.core.launch``): where any is missing (the simulator, another numba-cuda) it declines and the
dispatcher launches as before. ``UIH_CUDA_FAST_LAUNCH=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from . import _common

_UNSEEN = object()
_INTS = {f"{s}int{b}": getattr(ctypes, f"c_{s}int{b}") for s in ("", "u") for b in (8, 16, 32, 64)}


def _arrays_and_scalars(a, out: list) -> None:
    """Flatten ``a`` (named tuples of arrays and scalars) into ``out``, in argument order."""
    if isinstance(a, tuple):
        for v in a:
            _arrays_and_scalars(v, out)
    else:
        out.append(a)


def type_key(args) -> tuple:
    """What selects an overload, read cheaply, and never the same for two different Numba types: per
    array its dtype, rank and read-only flag plus "C" where it is C-contiguous by its interface (no
    strides, or exactly the C strides: Numba types both as layout "C"), else its exact shape and strides
    (which fix whatever layout Numba infers); per scalar its Python type."""
    leaves = []
    _arrays_and_scalars(args, leaves)
    key = []
    for v in leaves:
        face = getattr(v, "__cuda_array_interface__", None)
        if face is None:
            key.append(type(v))
            continue
        shape, strides, typestr = tuple(face["shape"]), face.get("strides"), face["typestr"]
        layout = "C" if strides is None or tuple(strides) == _c_strides(shape, typestr) else (shape, tuple(strides))
        key.append((typestr, len(shape), bool(face["data"][1]), layout))
    return tuple(key)


def _itemsize(typestr: str) -> int:
    return np.dtype(typestr).itemsize


def _c_strides(shape, typestr) -> tuple:
    out, step = [], _itemsize(typestr)
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def marshal(types, args, kernelargs: list) -> None:
    """Append ``args`` to ``kernelargs`` as Numba's launch lays out arguments of ``types``; raises
    ``NotImplementedError`` for a type it does not lay out (the caller then uses the dispatcher)."""
    from numba.cuda import types as nt
    for ty, v in zip(types, args):
        if isinstance(ty, nt.Array):
            face = v.__cuda_array_interface__
            shape = tuple(face["shape"])
            itemsize = _itemsize(face["typestr"])
            strides = face.get("strides") or _c_strides(shape, face["typestr"])
            size = 1
            for n in shape:
                size *= n
            kernelargs += [0, 0, size, itemsize, face["data"][0], *shape, *strides]
        elif isinstance(ty, nt.BaseTuple):
            marshal(tuple(ty), tuple(v), kernelargs)
        elif isinstance(ty, nt.Boolean):
            kernelargs.append(bool(v))
        elif isinstance(ty, nt.Integer):
            kernelargs.append(_INTS[str(ty)](int(v)))
        elif ty == nt.float64:
            kernelargs.append(ctypes.c_double(v))
        elif ty == nt.float32:
            kernelargs.append(ctypes.c_float(v))
        else:
            raise NotImplementedError(f"no fast layout for {ty}")


class FastLaunch:
    """Launches of one compiled dispatcher; ``__call__`` returns False where it declined."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._by_key = {}  # type_key -> (cufunc kernel, argument types, cooperative), or None: declined
        self._tried = set()
        self.launches = 0  # fast launches made (gpu_check reports it)
        usable = hasattr(dispatcher, "overloads") and os.environ.get("UIH_CUDA_FAST_LAUNCH", "1") != "0"
        self._api = self._bind() if usable else None  # the simulator's kernels have no overloads

    @staticmethod
    def _bind():
        try:
            from cuda.core import LaunchConfig, launch
            from numba.cuda._compat import CUDA_CORE_GE_1_0
            from numba.cuda.cudadrv.driver import _to_core_stream
        except Exception:  # noqa: BLE001 - simulator or another numba-cuda: the dispatcher launches
            return None
        coop = "is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch"
        return launch, LaunchConfig, _to_core_stream, coop

    def _resolve(self, key, args):
        """The compiled kernel for these argument types, once the dispatcher has compiled it."""
        d = self.dispatcher
        try:
            types = tuple(d.typeof_pyval(_common.unsynced(a)) for a in args)
            overload = d.overloads.get(types)
            if overload is None:
                # not compiled yet (the dispatcher launches this time and compiles it); a second miss
                # means the overloads are keyed otherwise here: these types stay on the dispatcher
                if key in self._tried:
                    self._by_key[key] = None
                self._tried.add(key)
                return None
            entry = self._by_key[key] = (overload._codelibrary.get_cufunc().kernel, overload.argument_types,
                                         bool(getattr(overload, "cooperative", False)))
            return entry
        except Exception:  # noqa: BLE001 - internals moved: decline for good
            self._api = None
            return None

    def __call__(self, blocks, threads, stream, args) -> bool:
        if self._api is None:
            return False
        key = type_key(args)
        entry = self._by_key.get(key, _UNSEEN)
        if entry is _UNSEEN:
            entry = self._resolve(key, args)
        if entry is None:
            return False
        kernel, types, coop = entry
        kernelargs = []
        try:
            marshal(types, args, kernelargs)
        except NotImplementedError:
            self._by_key[key] = None  # stays on the dispatcher for these types
            return False
        launch, config_t, core_stream, coop_name = self._api
        config = config_t(grid=(blocks, 1, 1), block=(threads, 1, 1), shmem_size=0, **{coop_name: coop})
        launch(core_stream(stream), config, kernel, *kernelargs)
        self.launches += 1
        return True
