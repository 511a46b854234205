"""The one place that chooses CPU or GPU. Everything device-specific hangs off a backend object.

A backend bundles the array module (NumPy or CuPy), the kernel twins, how Parquet row groups land in
its memory, and how host arrays move there. Detection runs when a Reconstructor is built, never at
import time, so importing the engine never initialises CUDA.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from contextlib import contextmanager, nullcontext

import numba
import numpy as np

import kernels

from .. import _deps
from .._errors import InvalidArgument, MissingDependency, UIHError
from ..serving import _segments
from . import _reads
from ._buffer_pool import host_empty


@contextmanager
def _fewer_threads(k: int):
    """This thread's Numba kernels on ``k`` threads fewer (at least one) for the duration."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, before - k))
    try:
        yield
    finally:
        numba.set_num_threads(before)


class CpuBackend:
    """NumPy arrays and the njit kernels: work is done when a call returns, so ordering is free.

    The ordering hooks (``record``, ``wait``, ``retire``, ``launch_stream``) are the CUDA backend's
    contract; here they are no-ops, so the reconstructor has one code path for both.
    """

    name = "cpu"
    device = "cpu"  # where batches live: host memory (the simulator's too)
    device_id = None
    xp = np
    slice = staticmethod(kernels.slice_cpu)
    assemble = staticmethod(kernels.assemble_cpu)
    slice_assemble = staticmethod(kernels.slice_assemble_cpu)
    read_groups = staticmethod(_segments.read_groups_arrow)

    def to_device(self, a, keep=None):
        return np.ascontiguousarray(a)

    def index_arrays(self, arrays, keep=None):
        """Contiguous int64 host arrays (the planners' own) where the kernels read them: here, as they are
        (per chunk this runs for the runs' and the examples' arrays)."""
        return arrays

    def own(self, a):
        """``a`` as an array the caller may keep (a view is enough: host memory is never recycled under it)."""
        return a

    def empty(self, shape, dtype):
        """Output buffer: recycled once no batch uses it (``_buffer_pool``)."""
        return host_empty(shape, dtype)

    def put_blocks(self, words, lane, col, dst, src, n, keep=None):
        """Copy ``col[src[i]:src[i] + n[i]]`` into ``words[lane, dst[i]:dst[i] + n[i]]`` for each block."""
        _reads.put_blocks(words, lane, col, dst, src, n)

    def synchronize(self):
        pass

    def launch_stream(self):
        return 0

    def record(self, stream=None):
        """An event marking the work queued so far on this thread's stream (None: nothing is queued)."""
        return None

    def wait(self, event):
        """Order this thread's later work after ``event``."""

    def retire(self, event, keep, release):
        """Call ``release()`` (if given; and drop ``keep``) once the work before ``event`` is done: at once
        here. It may run from a finalizer, so ``release`` must never wait for a lock (``GroupArena.release``
        does not)."""
        if release is not None:
            release()

    def reap(self):
        """Run the releases whose events completed."""

    def after_default_stream(self):
        """Order this thread's later work after what libraries queued on the default stream (cuDF)."""

    def producer_stream(self):
        """Context in which the prefetch thread prepares a chunk (a CUDA stream on GPU)."""
        return nullcontext()

    def sharing_cores(self, busy: bool):
        """Context for kernels launched while another thread of the job works on the host (``busy``: the
        prefetch thread preparing a chunk): one kernel thread fewer, so the two never ask for more cores
        than there are. Numba's OpenMP workers spin between kernels, so on a small host they would take
        the core the prefetch thread needs, and prefetching would cost more than it hides."""
        return _fewer_threads(1) if busy else nullcontext()


class SimulatedCudaBackend(CpuBackend):
    """The CUDA kernels in Numba's simulator on NumPy arrays (``NUMBA_ENABLE_CUDASIM=1``): for tests.

    It reads segments the way ``CudaBackend`` does (cuDF when importable, checksums verified), so the
    CUDA read path's error handling is tested without a GPU.
    """

    name = "cuda-sim"
    slice = staticmethod(kernels.slice_cuda)
    assemble = staticmethod(kernels.assemble_cuda)
    slice_assemble = staticmethod(kernels.slice_assemble_cuda)

    def __init__(self):
        super().__init__()
        _deps.numba_cuda()  # MissingDependency naming the fix, not an ImportError at the first launch
        self.cudf = _deps.cudf_or_none()

    def to_device(self, a, keep=None):
        return np.array(a, copy=True)  # the simulator copies every argument back: it must be writable

    def index_arrays(self, arrays, keep=None):
        return [self.to_device(np.ascontiguousarray(a, np.int64), keep) for a in arrays]

    def own(self, a):
        return np.array(a, copy=True)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def read_groups(self, pf, path, groups, columns, name):
        return read_groups_device(self, pf, path, groups, columns, name)


class CudaBackend:
    """CuPy arrays, CUDA kernels; segments via cuDF straight into device memory when cuDF is present.

    Two streams meet here. The prefetch thread prepares a chunk on its *producer* stream (decoded row
    groups into arena slots, runs, tails); the training thread launches the kernels on its *consumer*
    stream (CuPy's current stream there, which DALI and torch also follow). Ordering is by events, never
    a device-wide sync: the consumer stream waits on the chunk's ready event before its first kernel, and
    everything a kernel may read (arena slots, the chunk's arrays, pinned staging) is retired with an
    event recorded after the chunk's last kernel. Until that event completes, the slots stay pinned and
    the arrays referenced, so neither the arena nor CuPy's per-stream memory pool (whose free list the
    producer stream would reuse at once) can hand that memory to new writes.
    """

    name = "cuda"
    device = "cuda"
    slice = staticmethod(kernels.slice_cuda)
    assemble = staticmethod(kernels.assemble_cuda)
    slice_assemble = staticmethod(kernels.slice_assemble_cuda)
    PINNED_MIN = 1 << 16  # smaller host copies go straight from pageable memory (the runtime stages them)

    def __init__(self):
        self.xp = _deps.cupy()
        self.cudf = _deps.cudf_or_none()
        self._local = threading.local()
        self._streams = {}  # CuPy stream pointer -> Numba external stream
        # (event, keep, release) waiting for their event; a deque, appended and taken without a lock, since
        # ``retire`` runs from finalizers, which a collection may start anywhere (inside ``reap`` too)
        self._retired = deque()

    def producer_stream(self):
        """A non-blocking stream per thread: the prefetch thread's copies and reads overlap the
        kernels that the training thread launches on its own stream."""
        if not hasattr(self._local, "stream"):
            self._local.stream = self.xp.cuda.Stream(non_blocking=True)
        return self._local.stream

    def sharing_cores(self, busy: bool):
        """The kernels run on the device: the host cores are the prefetch thread's anyway."""
        return nullcontext()

    def stream_ptr(self) -> int:
        """The consumer's current CUDA stream (DALI copies its inputs on it)."""
        return self.xp.cuda.get_current_stream().ptr

    def launch_stream(self):
        """The current CuPy stream as a Numba stream, so kernels queue behind this thread's CuPy work."""
        ptr = self.stream_ptr()
        if ptr == 0:  # CuPy's null stream is the legacy default stream, Numba's 0
            return 0
        s = self._streams.get(ptr)
        if s is None:
            s = self._streams[ptr] = _deps.numba_cuda().external_stream(ptr)
        return s

    def record(self, stream=None):
        """An event after the work queued so far on ``stream`` (default: this thread's current stream)."""
        ev = self.xp.cuda.Event(block=False, disable_timing=True, interprocess=False)
        ev.record(self.xp.cuda.get_current_stream() if stream is None else stream)
        return ev

    def wait(self, event):
        if event is not None:
            self.xp.cuda.get_current_stream().wait_event(event)

    def retire(self, event, keep, release):
        # only queued: the release waits for ``reap`` at the next preparation or read, once ``event`` is
        # known complete (``release`` may be None: only ``keep`` waits for the event)
        self._retired.append((event, keep, release))

    def reap(self):
        # each entry is taken by one caller, queried once, and put back while its event is pending; a
        # retire meanwhile is appended behind and waits for the next reap
        for _ in range(len(self._retired)):
            try:
                r = self._retired.popleft()
            except IndexError:  # another thread's reap took the rest
                return
            if r[0] is not None and not r[0].done:
                self._retired.append(r)
            elif r[2] is not None:
                r[2]()

    def after_default_stream(self):
        # cuDF decodes on the default stream; the producer stream is non-blocking, so it is not implicitly
        # ordered after it: an event keeps the arena copies behind the decode without blocking the host
        self.wait(self.record(self.xp.cuda.Stream.null))

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype)  # CuPy's memory pool already recycles device memory

    def own(self, a):
        """A copy on this thread's stream: a view would keep memory of the producer's pool alive only as
        long as the caller holds it, with no event ordering its reuse after the caller's kernels."""
        return a.copy()

    def pinned(self, a, keep):
        """``a`` copied into pinned host memory, which ``keep`` holds until its copies are retired."""
        mem = self.xp.cuda.alloc_pinned_memory(a.nbytes)
        staged = np.frombuffer(mem, a.dtype, a.size).reshape(a.shape)
        staged[...] = a
        keep.append(mem)
        return staged

    def index_arrays(self, arrays, keep=None):
        """Each of ``arrays`` as contiguous int64 on the device (``to_device``)."""
        return [self.to_device(np.ascontiguousarray(a, np.int64), keep) for a in arrays]

    def to_device(self, a, keep=None):
        """``a`` on the device, copied on this thread's stream. Large arrays go through pinned memory (one
        DMA at full PCIe bandwidth, asynchronous): ``keep`` then holds the staging until retired, or,
        without ``keep``, the copy is waited for."""
        a = np.ascontiguousarray(a)
        if a.nbytes < self.PINNED_MIN:
            return self.xp.asarray(a)
        hold = [] if keep is None else keep
        out = self.xp.empty(a.shape, a.dtype)
        out.set(self.pinned(a, hold), stream=self.xp.cuda.get_current_stream())
        if keep is None:
            self.synchronize()
        return out

    def put_blocks(self, words, lane, col, dst, src, n, keep=None):
        """Arena slots filled from decoded columns: device to device from cuDF; from PyArrow's host
        arrays, one pinned staging copy then one asynchronous host-to-device copy per block.

        The copies are queued, not done, when this returns, so what they read outlives them: the pinned
        staging in ``keep``, and a device column (memory cuDF's allocator, pooled or asynchronous, would
        otherwise hand to its next decode at once) until the event after its copies is known complete."""
        hold = [] if keep is None else keep
        stream = self.xp.cuda.get_current_stream()
        host = not isinstance(col, self.xp.ndarray)  # PyArrow's NumPy arrays, else cuDF's on the device
        if host:
            col = self.pinned(col, hold)
        for d, a, k in zip(dst.tolist(), src.tolist(), n.tolist()):
            if host:
                words[lane, d:d + k].set(col[a:a + k], stream=stream)
            else:
                words[lane, d:d + k] = col[a:a + k]
        if not host:
            self.retire(self.record(stream), [col], None)
        elif keep is None:
            self.synchronize()

    def read_groups(self, pf, path, groups, columns, name):
        self.reap()  # decoded columns whose copies are done go back to the allocator before the next decode
        return read_groups_device(self, pf, path, groups, columns, name)

    @property
    def device_id(self) -> int:
        """The CUDA device this backend's arrays live on (what a GPU DALI pipeline must run on)."""
        return int(self.xp.cuda.Device().id)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()


def read_groups_device(backend, pf, path, groups, columns, name) -> dict:
    """Row groups into ``backend``'s memory: cuDF straight to the device when present, else PyArrow.

    cuDF's reader checks no Parquet page checksum, so PyArrow verifies the same row groups first (a
    host-side decode of the pages cuDF then decodes on the device): a damaged segment is a
    ``CorruptionError`` on every path. A cuDF failure on pages that verify is cuDF being unusable here,
    hence ``MissingDependency``, never corruption.
    """
    host = _segments.read_groups_arrow(pf, path, groups, columns, name)  # CorruptionError if damaged
    if backend.cudf is None or "://" in path:  # cuDF reads local files; a remote one came through pyarrow.fs
        return host  # host arrays: ``put_blocks`` stages them in pinned memory and copies each block once
    del host
    try:  # kvikio (and GPUDirect Storage where present) under cuDF's reader
        df = backend.cudf.read_parquet(path, columns=columns, row_groups=[groups])
    except MemoryError:  # device memory ran out: neither a broken library nor a damaged file
        raise
    except Exception as e:  # cuDF raises RuntimeError, MemoryError, ... depending on what is broken
        raise MissingDependency(f"cuDF could not read {name}, whose page checksums verify, so cuDF is not "
                                f"usable here ({type(e).__name__}: {e}); uninstall cudf to read with "
                                f"PyArrow, or {_deps.GPU_FIX}") from e
    out = {c: backend.xp.asarray(df[c].values) for c in columns}
    backend.after_default_stream()
    return out


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
    raise InvalidArgument(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
