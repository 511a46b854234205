"""Launching a compiled CUDA kernel with little host work per launch.

Launched through Numba's dispatcher, the slicing + assembly pair spends far longer on the host than
on the device, because our kernels take ~48 arrays in named groups and the dispatcher imports each one
(a ``DeviceNDArray`` built from ``__cuda_array_interface__``), types it and marshals it again
(``_prepare_args``) at every launch: the launch, not the kernels, sets the GPU path's speed (figures:
docs/design-measurements.md).

``FastLaunch`` keeps Numba's compiled kernel and its argument types, and marshals arguments itself the way
Numba's ABI lays them out (per array: meminfo, parent, size, itemsize, data pointer, shape, strides in
bytes; per scalar its C value; named tuples flattened), reading pointers straight from the arrays' CUDA
array interface. A launch whose argument *types* were not seen before (another dtype, rank or layout)
goes through the dispatcher once, which compiles or picks the overload; later ones with those types are
fast. It relies on numba-cuda internals (``overloads``, ``argument_types``, the code library's cufunc,
``cuda.core.launch``): where any is missing (another numba-cuda) it declines with one warning per process
naming the installed numba-cuda, and the dispatcher launches, about 10x slower per launch. The simulator
has no compiled kernels to launch fast, so it declines without a word. ``UIH_CUDA_FAST_LAUNCH=0`` turns it
off (and the warning with it).
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings

import numpy as np

from . import _common

_ARRAY = "array"
_INTS = {f"{s}int{b}": getattr(ctypes, f"c_{s}int{b}") for s in ("", "u") for b in (8, 16, 32, 64)}


class SlowLaunchWarning(RuntimeWarning):
    """The fast launch path is unavailable with the installed numba-cuda: kernels launch through Numba."""


def _numba_cuda_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("numba-cuda")
    except PackageNotFoundError:
        return "(numba-cuda not installed as a package)"


def _simulator() -> bool:
    """Numba's CUDA simulator: nothing compiled to launch fast, and nobody to warn (it is slow on purpose)."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


@functools.cache
def warn_slow_launch(reason: str) -> None:
    """Say once per process that launches take the slow path, and why (the fallback is correct, only slow)."""
    warnings.warn(f"numba-cuda {_numba_cuda_version()} lacks what the fast kernel launch uses ({reason}): CUDA "
                  "kernels launch through Numba's dispatcher, about 10x slower per launch. Install the "
                  "numba-cuda that environment.yml pins (>=0.20, with cuda-core), or set UIH_CUDA_FAST_LAUNCH=0 "
                  "to choose the dispatcher and silence this", SlowLaunchWarning, stacklevel=3)


def _leaves(a, out: list) -> list:
    """Flatten ``a`` (named tuples of arrays and scalars) into ``out``, in argument order."""
    if isinstance(a, tuple):
        for v in a:
            _leaves(v, out)
    else:
        out.append(a)
    return out


@functools.lru_cache(maxsize=64)
def _itemsize(typestr: str) -> int:
    return np.dtype(typestr).itemsize


@functools.lru_cache(maxsize=1024)
def _c_strides(shape: tuple, typestr: str) -> tuple:
    out, step = [], _itemsize(typestr)
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def _faces(leaves) -> list:
    """Each leaf's CUDA array interface (read once per launch: CuPy builds the dict on every access)."""
    return [getattr(v, "__cuda_array_interface__", None) for v in leaves]


def type_key(args) -> tuple:
    """What selects an overload, read cheaply, and never the same for two different Numba types: per
    array its dtype, rank and read-only flag plus "C" where it is C-contiguous by its interface (no
    strides, or exactly the C strides: Numba types both as layout "C"), else its exact shape and strides
    (which fix whatever layout Numba infers); per scalar its Python type."""
    return _read(args)[2]


def _read(args) -> tuple:
    """``(leaves, their CUDA array interfaces, type key)`` of a launch's arguments."""
    leaves = _leaves(args, [])
    faces = _faces(leaves)
    return leaves, faces, _key(leaves, faces)


def _key(leaves, faces) -> tuple:
    key: list = []
    for v, face in zip(leaves, faces):
        if face is not None:
            shape, strides, typestr = tuple(face["shape"]), face.get("strides"), face["typestr"]
            c = strides is None or tuple(strides) == _c_strides(shape, typestr)
            key.append((typestr, len(shape), bool(face["data"][1]), "C" if c else (shape, tuple(strides))))
        elif type(v) is int:  # Numba types a Python int by its value: int64, else uint64, else an error
            key.append((int, "i8" if -(1 << 63) <= v < (1 << 63) else "u8" if 0 <= v < (1 << 64) else "big"))
        else:
            key.append(type(v))
    return tuple(key)


def plan(types) -> list:
    """Per flattened argument, how Numba's launch passes it: ``_ARRAY``, ``bool`` or a ctypes type;
    raises ``NotImplementedError`` for a type it does not lay out (the caller then uses the dispatcher)."""
    from numba.cuda import types as nt
    out: list = []
    for ty in types:
        if isinstance(ty, nt.Array):
            out.append(_ARRAY)
        elif isinstance(ty, nt.BaseTuple):
            out += plan(tuple(ty))
        elif isinstance(ty, nt.Boolean):
            out.append(bool)
        elif isinstance(ty, nt.Integer):
            out.append(_INTS[str(ty)])
        elif ty == nt.float64:
            out.append(ctypes.c_double)
        elif ty == nt.float32:
            out.append(ctypes.c_float)
        else:
            raise NotImplementedError(f"no fast layout for {ty}")
    return out


def _fill(kinds, leaves, faces, kernelargs: list) -> None:
    """Numba's layout: per array meminfo, parent, size, itemsize, data pointer, shape, strides (bytes)."""
    for kind, v, face in zip(kinds, leaves, faces):
        if kind is _ARRAY:
            shape, typestr = tuple(face["shape"]), face["typestr"]
            strides = face.get("strides") or _c_strides(shape, typestr)
            size = 1
            for n in shape:
                size *= n
            kernelargs += [0, 0, size, _itemsize(typestr), face["data"][0], *shape, *strides]
        elif kind is bool:
            kernelargs.append(bool(v))
        else:
            kernelargs.append(kind(v))


def marshal(types, args, kernelargs: list) -> None:
    """Append ``args`` to ``kernelargs`` as Numba's launch lays out arguments of ``types``."""
    leaves = _leaves(tuple(args), [])
    _fill(plan(types), leaves, _faces(leaves), kernelargs)


class FastLaunch:
    """Launches of one compiled dispatcher; ``__call__`` returns False where it declined."""

    def __init__(self, dispatcher, api=None, device=None):
        """``api``: (launch, LaunchConfig, stream wrapper, cooperative keyword), cuda.core's by default;
        ``device``: a function giving the current device's id (tests pass stand-ins for both)."""
        self.dispatcher = dispatcher
        self._device = device or self._current_device
        self._known = {}  # type_key -> True (launch fast) or False (declined: the dispatcher launches)
        self._kernels = {}  # (type_key, device id) -> (cufunc, plan, cooperative)
        self._configs, self._streams = {}, {}  # launch configurations and wrapped streams, reused
        self.launches = 0  # fast launches made (gpu_check reports it)
        usable = hasattr(dispatcher, "overloads") and os.environ.get("UIH_CUDA_FAST_LAUNCH", "1") != "0"
        self._api = (api or self._bind()) if usable else None  # the simulator's kernels have no overloads

    @staticmethod
    def _bind():
        try:
            from cuda.core import LaunchConfig, launch
            from numba.cuda._compat import CUDA_CORE_GE_1_0
            from numba.cuda.cudadrv.driver import _to_core_stream
        except Exception as e:  # noqa: BLE001 - another numba-cuda: the dispatcher launches
            if not _simulator():
                warn_slow_launch(f"{type(e).__name__}: {e}")
            return None
        coop = "is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch"
        return launch, LaunchConfig, _to_core_stream, coop

    @staticmethod
    def _current_device() -> int:
        """The current device: a compiled kernel's cufunc belongs to the device it was loaded on."""
        from numba.cuda.cudadrv.devices import get_context
        return get_context().device.id

    def learn(self, args) -> None:
        """After the dispatcher launched ``args`` (so compiled their types): keep that kernel for their
        key, or decline the key for good where it cannot be launched here. Deciding only after a
        dispatcher launch has returned is what makes it safe when threads warm up at once."""
        if self._api is None:
            return
        leaves, faces, key = _read(args)
        if key in self._known:
            return
        d = self.dispatcher
        try:
            types = tuple(d.typeof_pyval(_common.unsynced(a)) for a in args)
            overload = d.overloads.get(types)
            kinds = plan(overload.argument_types) if overload is not None else None
            device = self._device() if kinds is not None else None
        except (AttributeError, ImportError) as e:  # the internals this relies on are not there
            if not _simulator():
                warn_slow_launch(f"{type(e).__name__}: {e}")
            self._api = None
            return
        except Exception:  # noqa: BLE001 - these arguments only (an int numba cannot type, say)
            kinds = None
        # decline: overloads keyed otherwise here, a layout it does not know, an array position given
        # something without a CUDA array interface (a host array the dispatcher copies), a debug build
        # (numba's launch checks the kernel's error flag there)
        if (kinds is None or len(kinds) != len(key) or getattr(overload, "debug", False)
                or any(k is _ARRAY and f is None for k, f in zip(kinds, faces))):
            self._known[key] = False
            return
        self._kernels[key, device] = (overload._codelibrary.get_cufunc().kernel, kinds,
                                      bool(getattr(overload, "cooperative", False)))
        self._known[key] = True

    def __call__(self, blocks, threads, stream, args) -> bool:
        if self._api is None:
            return False
        leaves, faces, key = _read(args)
        if not self._known.get(key):  # unseen (the dispatcher launches, then ``learn``) or declined
            return False
        entry = self._kernels.get((key, self._device()))
        if entry is None:  # these types, compiled for another device: the dispatcher loads it here
            self._known.pop(key, None)
            return False
        kernel, kinds, coop = entry
        kernelargs: list = []
        _fill(kinds, leaves, faces, kernelargs)
        launch, config_t, core_stream, coop_name = self._api
        config = self._configs.get((blocks, threads, coop))
        if config is None:
            if len(self._configs) > 256:
                self._configs.clear()
            config = self._configs[blocks, threads, coop] = config_t(
                grid=(blocks, 1, 1), block=(threads, 1, 1), shmem_size=0, **{coop_name: coop})
        # a wrapper per raw handle (wrapping is a fresh object per call otherwise; the handle is all it holds)
        handle = int(stream.handle) if hasattr(stream, "handle") else int(stream or 0)
        wrapped = self._streams.get(handle)
        if wrapped is None:
            if len(self._streams) > 64:
                self._streams.clear()
            wrapped = self._streams[handle] = core_stream(stream)
        launch(wrapped, config, kernel, *kernelargs)
        self.launches += 1
        return True
