"""The one place that chooses CPU or GPU. Everything device-specific hangs off a backend object.

A backend bundles the array module (NumPy or CuPy), the kernel twins, how Parquet row groups land in
its memory, and how host arrays move there. Detection runs when a Reconstructor is built, never at
import time, so importing the engine never initialises CUDA.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext

import numpy as np

import kernels

from .. import _deps
from .._errors import MissingDependency, UIHError
from ..serving import _segments
from ._buffer_pool import BufferPool


class CpuBackend:
    name = "cpu"
    xp = np
    slice = staticmethod(kernels.slice_cpu)
    assemble = staticmethod(kernels.assemble_cpu)
    read_groups = staticmethod(_segments.read_groups_arrow)

    def __init__(self):
        self._pool = BufferPool()

    def to_device(self, a):
        return np.ascontiguousarray(a)

    def empty(self, shape, dtype):
        """Output buffer: recycled once no batch uses it (see ``_pool``)."""
        return self._pool.empty(shape, dtype)

    def synchronize(self):
        pass

    def fence(self):
        """Wait until no launched kernel can still read memory about to be reused (no-op: CPU kernels
        return when done)."""

    def producer_stream(self):
        """Context in which the prefetch thread prepares a chunk (a CUDA stream on GPU)."""
        return nullcontext()


class SimulatedCudaBackend(CpuBackend):
    """The CUDA kernels in Numba's simulator on NumPy arrays (``NUMBA_ENABLE_CUDASIM=1``): for tests.

    It reads segments the way ``CudaBackend`` does (cuDF when importable, checksums verified), so the
    CUDA read path's error handling is tested without a GPU.
    """

    name = "cuda-sim"
    slice = staticmethod(kernels.slice_cuda)
    assemble = staticmethod(kernels.assemble_cuda)

    def __init__(self):
        super().__init__()
        _deps.numba_cuda()  # MissingDependency naming the fix, not an ImportError at the first launch
        self.cudf = _deps.cudf_or_none()

    def to_device(self, a):
        return np.array(a, copy=True)  # the simulator copies every argument back: it must be writable

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def read_groups(self, pf, path, groups, columns, name):
        return read_groups_device(self, pf, path, groups, columns, name)


class CudaBackend:
    """CuPy arrays, CUDA kernels; segments via cuDF straight into device memory when cuDF is present."""

    name = "cuda"
    slice = staticmethod(kernels.slice_cuda)
    assemble = staticmethod(kernels.assemble_cuda)

    def __init__(self):
        self.xp = _deps.cupy()
        self.cudf = _deps.cudf_or_none()
        self._local = threading.local()

    def producer_stream(self):
        """A non-blocking stream per thread: the prefetch thread's copies and reads overlap the
        kernels that the training thread launches on its own stream."""
        if not hasattr(self._local, "stream"):
            self._local.stream = self.xp.cuda.Stream(non_blocking=True)
        return self._local.stream

    def stream_ptr(self) -> int:
        """The consumer's current CUDA stream (DALI copies its inputs on it)."""
        return self.xp.cuda.get_current_stream().ptr

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype)  # CuPy's memory pool already recycles device memory

    def to_device(self, a):
        a = np.ascontiguousarray(a)
        if a.nbytes < (1 << 20):
            return self.xp.asarray(a)
        # stage through pinned memory so the copy is a single DMA at full PCIe bandwidth
        pinned = self.xp.cuda.alloc_pinned_memory(a.nbytes)
        staged = np.frombuffer(pinned, a.dtype, a.size).reshape(a.shape)
        staged[...] = a
        out = self.xp.empty(a.shape, a.dtype)
        out.set(staged)
        return out

    def read_groups(self, pf, path, groups, columns, name):
        return read_groups_device(self, pf, path, groups, columns, name)

    @property
    def device_id(self) -> int:
        """The CUDA device this backend's arrays live on (what a GPU DALI pipeline must run on)."""
        return int(self.xp.cuda.Device().id)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def fence(self):
        """Kernels run asynchronously on the consumer's stream: wait for every stream before arena
        slots they read are handed to the next chunk."""
        self.xp.cuda.Device().synchronize()


def read_groups_device(backend, pf, path, groups, columns, name) -> dict:
    """Row groups into ``backend``'s memory: cuDF straight to the device when present, else PyArrow.

    cuDF's reader checks no Parquet page checksum, so PyArrow verifies the same row groups first (a
    host-side decode of the pages cuDF then decodes on the device): a damaged segment is a
    ``CorruptionError`` on every path. A cuDF failure on pages that verify is cuDF being unusable here,
    hence ``MissingDependency``, never corruption.
    """
    host = _segments.read_groups_arrow(pf, path, groups, columns, name)  # CorruptionError if damaged
    if backend.cudf is None or "://" in path:  # cuDF reads local files; a remote one came through pyarrow.fs
        return {c: backend.to_device(v) for c, v in host.items()}
    del host
    try:  # kvikio (and GPUDirect Storage where present) under cuDF's reader
        df = backend.cudf.read_parquet(path, columns=columns, row_groups=[groups])
    except MemoryError:  # device memory ran out: neither a broken library nor a damaged file
        raise
    except Exception as e:  # cuDF raises RuntimeError, MemoryError, ... depending on what is broken
        raise MissingDependency(f"cuDF could not read {name}, whose page checksums verify, so cuDF is not "
                                f"usable here ({type(e).__name__}: {e}); uninstall cudf to read with "
                                f"PyArrow, or {_deps.GPU_FIX}") from e
    return {c: backend.xp.asarray(df[c].values) for c in columns}


def cuda_usable() -> bool:
    """A real GPU that numba-cuda and CuPy can both use (checked on demand, not at import)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        if not _deps.numba_cuda().is_available():
            return False
        return _deps.cupy().cuda.runtime.getDeviceCount() > 0
    except Exception:  # a broken driver or toolkit raises many kinds of errors: then there is no GPU
        return False


def resolve(device: str = "auto"):
    """Backend for ``device``: "cpu", "cuda", or "auto" (CUDA only when a GPU is present and usable)."""
    if device == "auto":
        return CudaBackend() if cuda_usable() else CpuBackend()
    if device == "cpu":
        return CpuBackend()
    if device == "cuda":
        _deps.numba_cuda()  # a missing package is named (MissingDependency), not hidden in "no GPU"
        _deps.cupy()
        if not cuda_usable():
            raise UIHError("device='cuda' but no usable CUDA GPU was found (numba.cuda.is_available() is "
                           "False or CuPy sees no device); use device='cpu' or 'auto', or " + _deps.GPU_FIX)
        return CudaBackend()
    if device == "cuda-sim":
        return SimulatedCudaBackend()
    raise UIHError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
