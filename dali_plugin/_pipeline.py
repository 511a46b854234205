"""``uih_pipeline``: a DALI pipeline whose inputs are reconstructed UIH batches, as a ``UIHPipeline``."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from engine import InvalidArgument, Order, Reconstructor, _deps

from ._jagged import JaggedSource, dali_can_pad, jagged_twin, long_rows, pad_graph, padded_row_bytes
from ._options import Assembly, PipelineOptions
from ._progress import Progress
from ._source import AssemblingSource, EpochSource, InProcessSource
from ._workers import WorkerPoolSource

if TYPE_CHECKING:
    from engine._types import ThinSource

#: DALI's own host memory pool serves host allocations above this size (``DALI_MALLOC_POOL_THRESHOLD``).
#: DALI writes every CPU pipeline output into fresh buffers; left to malloc, a multi-megabyte batch is a
#: new mmap whose pages fault on first touch and go back to the OS when freed, so each batch pays for
#: zeroing its memory as well as for the copy. Pooled, the buffers are reused (figures:
#: docs/design-measurements.md).
DALI_POOL_THRESHOLD = "1M"


def use_dali_host_pool() -> str:
    """Route DALI's large host allocations to its pool, unless the user chose a threshold already.

    DALI reads the setting at its first host allocation, so this only takes effect before the process's
    first DALI pipeline runs; ``uih_pipeline`` calls it before building one. Returns the threshold in force.
    """
    return os.environ.setdefault("DALI_MALLOC_POOL_THRESHOLD", DALI_POOL_THRESHOLD)


def placement(rec: Reconstructor, device_id: Literal["auto"] | int | None = "auto") -> int | None:
    """The DALI ``device_id`` for ``rec``: None (CPU-only pipeline) or the GPU its batches live on.

    One rule: a CUDA reconstructor feeds a GPU pipeline on its own device, a CPU one a CPU pipeline.
    ``"auto"`` follows the reconstructor; an explicit value that breaks the rule is an ``engine.InvalidArgument``
    (a CPU pipeline would copy every CUDA batch back to the host; a GPU one cannot take host batches
    without a copy up).
    """
    if device_id == "auto":
        return rec.device_id
    if device_id is not None and not isinstance(device_id, int):
        raise InvalidArgument(f"device_id must be 'auto', None (CPU-only) or a GPU index, got {device_id!r}")
    if device_id is not None and rec.device != "cuda":
        raise InvalidArgument(f"device_id={device_id} asks for a GPU pipeline, but the Reconstructor runs on "
                              f"{rec.device!r}: build it with device='cuda', or leave device_id='auto'")
    if device_id is None and rec.device == "cuda":
        raise InvalidArgument("device_id=None asks for a CPU-only pipeline, but the Reconstructor runs on 'cuda' and "
                              "every batch would be copied back to the host: leave device_id='auto' (a GPU "
                              "pipeline), or build the Reconstructor with device='cpu'")
    if device_id is not None and device_id != rec.device_id:
        raise InvalidArgument(f"device_id={device_id} but the Reconstructor's arrays live on GPU "
                              f"{rec.device_id}: leave device_id='auto'")
    return device_id


#: ``batches_per_iteration="auto"``: as many batches per DALI iteration (at most 8) as fit in this many
#: bytes. A DALI iteration has a fixed cost besides copying its bytes, about that of copying a megabyte,
#: and every batch the engine makes has its own fixed host work (figures: docs/design-measurements.md).
ITERATION_BYTES = 16 << 20
#: the same where batches are assembled inside DALI (``assembly="dali_operator"``): its iterations feed five inputs
#: per share of rows and copy nothing, so their fixed cost weighs more, and only several batches per
#: iteration bring the pipeline close to the direct time (docs/design-measurements.md)
ASSEMBLED_ITERATION_BYTES = 64 << 20


def _batches_per_iteration(rec, batch_size: int, o: PipelineOptions, groupable: bool, budget: int) -> int:
    """How many batches one DALI iteration carries (``PipelineOptions.batches_per_iteration``)."""
    requested = o.batches_per_iteration
    if requested == "auto":
        if not groupable:
            return 1
        row = padded_row_bytes(rec) + 4 + 8 * len(o.extra_columns)  # plus its length and extra columns
        # at most a chunk's batches, so that the engine's chunks keep their rows (and prefetching its pace)
        return max(1, min(8, rec.chunk_batches, budget // max(row * batch_size, 1)))
    if requested > 1 and not groupable:
        raise InvalidArgument(f"batches_per_iteration={requested} needs an in-process CPU pipeline (device_id=None, "
                              "workers=0) of a padded projection whose rows cross DALI padded (padding 'assembled')")
    return requested


#: column dtypes the in-DALI assembly writes (``_assemble_op.DALI_TYPES``), kept here so that choosing it
#: does not import (and compile) the operator
_ASSEMBLED_DTYPES = {np.dtype(t) for t in (np.int64, np.int32, np.float64, np.float32, np.uint64, np.uint32)}
_MAX_OUTPUTS = 6  # NumbaFunction's limit


def _assembly_blocker(rec, o: PipelineOptions, gpu: bool, jagged: bool):
    """Why the DALI operator (``_assemble_op``) cannot write ``rec``'s batches, or None."""
    if gpu or o.workers or jagged:
        return ("assembling inside DALI needs an in-process CPU pipeline (device_id=None, workers=0) of a "
                "padded projection")
    if o.padding not in ("auto", "assembled"):
        return f"padding={o.padding!r} crosses DALI unpadded rows; assembling inside DALI pads them there"
    p, schema = rec.projection, rec.store.schema
    if len(p.columns) + 1 + bool(o.extra_columns) > _MAX_OUTPUTS:
        return (f"assembling inside DALI writes at most {_MAX_OUTPUTS} outputs (columns, lengths and, with "
                f"extra columns, their bytes); {p} has {len(p.columns)} columns")
    odd = [c for c in p.columns if np.dtype(schema.dtype(c)) not in _ASSEMBLED_DTYPES]
    if odd:
        return f"assembling inside DALI writes 4- and 8-byte int and float columns, not {odd}"
    if p.actions is not None and np.dtype(schema.dtype(schema.event_type_column)).itemsize != 4:
        return "assembling inside DALI filters on a 4-byte event-type column"
    try:
        import nvidia.dali.plugin.numba  # noqa: F401
    except ImportError as e:
        return f"assembling inside DALI needs DALI's numba plugin ({e})"
    return None


def _resolve(rec, batch_size: int, gpu: bool, o: PipelineOptions) -> PipelineOptions:
    """``o`` checked against ``rec`` and where DALI runs (``gpu``), every "auto" chosen."""
    jagged = rec.projection.layout == "jagged"
    if gpu and o.workers:
        raise InvalidArgument("worker processes feed CPU pipelines only; on GPU the CUDA reconstructor is the worker")
    if jagged and (gpu or o.workers):
        raise InvalidArgument("a layout='jagged' projection goes through DALI in an in-process CPU pipeline "
                              "(device_id=None, workers=0); on GPU, Reconstructor.iter_batches hands out jagged "
                              "batches already in device memory")
    if o.padding not in ("auto", "assembled") and (gpu or o.workers or jagged):
        raise InvalidArgument(f"padding={o.padding!r} needs an in-process CPU pipeline (device_id=None, workers=0) "
                              "and a padded projection")
    if o.padding == "dali_slice" and not dali_can_pad(rec):
        raise InvalidArgument(f"padding='dali_slice': DALI's fill value is a float32, which cannot carry the pad value "
                              f"of {rec.projection} exactly; use padding='after_dali' (the engine pads after DALI)")
    blocker = _assembly_blocker(rec, o, gpu, jagged)
    if o.assembly == "dali_operator" and blocker:
        raise InvalidArgument(f"assembly='dali_operator': {blocker}")
    assembly: Assembly = "engine" if o.assembly == "engine" or blocker else "dali_operator"
    padding = o.padding
    if padding == "auto":
        in_process_cpu = not gpu and not o.workers and not jagged
        padding = "after_dali" if in_process_cpu and assembly == "engine" and long_rows(rec) else "assembled"
    groupable = not (gpu or o.workers or jagged) and padding == "assembled"
    budget = ASSEMBLED_ITERATION_BYTES if assembly == "dali_operator" else ITERATION_BYTES
    group = _batches_per_iteration(rec, batch_size, o, groupable, budget)
    return replace(o, padding=padding, assembly=assembly, batches_per_iteration=group)


def _group(o: PipelineOptions) -> int:
    """Batches per DALI iteration of options ``_resolve`` returned (an int there, never "auto")."""
    return cast(int, o.batches_per_iteration)


def _source(rec, thin_source, batch_size: int, o: PipelineOptions) -> EpochSource:
    """The external source feeding the pipeline of resolved options ``o``."""
    extra = o.extra_columns
    if o.assembly == "dali_operator":
        return AssemblingSource(rec, thin_source, batch_size, extra=extra, shares=o.num_threads,
                                group=_group(o))
    if o.workers:
        return WorkerPoolSource(rec, thin_source, batch_size, o.workers, extra=extra)
    if o.padding == "dali_slice":
        return JaggedSource(rec, thin_source, batch_size, extra=extra)
    return InProcessSource(rec, thin_source, batch_size, extra=extra,
                           feeder=jagged_twin(rec) if o.padding == "after_dali" else None,
                           group=_group(o))


def _build(rec, source: EpochSource, batch_size: int, device_id, o: PipelineOptions):
    """The built DALI pipeline over ``source``: its inputs, the operator writing them (with
    ``assembly="dali_operator"``) or DALI's padding (``padding="dali_slice"``)."""
    dali = _deps.dali()
    from nvidia.dali import fn

    assembling, gpu = o.assembly == "dali_operator", device_id is not None
    samples = cast(AssemblingSource, source).shares if assembling else (1 if source.whole_batches else batch_size)
    pipe = dali.Pipeline(batch_size=samples, num_threads=o.num_threads, device_id=device_id,
                         prefetch_queue_depth=o.prefetch_queue_depth)
    with pipe:
        kwargs: dict[str, Any] = {"device": "gpu"} if gpu else {}
        if gpu:
            kwargs["cuda_stream"] = rec.cuda_stream
        if source.no_copy:  # the source holds each batch until UIHIterator has its outputs
            kwargs["no_copy"] = True
        outs = fn.external_source(source=source, num_outputs=source.num_inputs, batch=True, cycle="raise", **kwargs)
        if assembling:
            from ._assemble_op import operator  # compiled (or loaded from Numba's cache) on first use
            outs = operator([(c, rec.store.schema.dtype(c)) for c in rec.projection.columns],
                            bool(o.extra_columns))(*outs)
        pipe.set_outputs(*(pad_graph(fn, outs, rec) if o.padding == "dali_slice" else outs))
    pipe.build()
    return pipe


@dataclass(frozen=True, eq=False)
class UIHPipeline:
    """A built DALI pipeline feeding a reconstructor's batches (``uih_pipeline``), with what ``UIHIterator``
    needs to hand them out."""

    #: the built ``nvidia.dali.Pipeline``
    dali: object
    #: its external source: batches made in process, in worker processes, rows for DALI to pad, or the
    #: plans the DALI operator writes from
    source: EpochSource
    #: the reconstructor making the batches (``UIHIterator`` pads with it, ``padding="after_dali"``)
    rec: Reconstructor
    #: the options in force, every "auto" resolved
    options: PipelineOptions
    #: rows per batch (DALI's own batch size counts samples)
    batch_size: int
    #: DALI's device: None for a CPU-only pipeline, else the GPU that the batches live on
    device_id: int | None
    #: the training order of the next DALI epoch, a pending resume state, and the batches handed out
    progress: Progress

    @property
    def device(self) -> str:
        """Where DALI runs, "cpu" or "gpu" (for reports that say what ran)."""
        return "cpu" if self.device_id is None else "gpu"

    @property
    def names(self) -> list:
        """The batch's keys, in output order (a jagged batch adds ``offsets``)."""
        return self.source.names

    def __repr__(self) -> str:
        o = self.options
        return (f"UIHPipeline({self.device}, batch_size={self.batch_size}, outputs={self.names}, "
                f"batches_per_iteration={o.batches_per_iteration}, padding={o.padding!r}, "
                f"assembly={o.assembly!r}, workers={o.workers}, num_threads={o.num_threads}, "
                f"prefetch_queue_depth={o.prefetch_queue_depth})")


def uih_pipeline(rec: Reconstructor, thin_source: ThinSource, batch_size: int = 1024,
                 device_id: Literal["auto"] | int | None = "auto", *, order: Literal["stream", "shuffle"] = "stream",
                 seed: int = 0, epoch: int = 0, shuffle_window: int | None = None, resume: dict | None = None,
                 options: PipelineOptions | None = None, **changes: Any) -> UIHPipeline:
    """A built DALI pipeline feeding ``rec``'s batches of ``thin_source``, for ``UIHIterator``.

    Parameters
    ----------
    rec : engine.Reconstructor
    thin_source : Parquet path(s) or pyarrow.Table of thin rows
    batch_size : int
        Rows per batch; the last batch of an epoch may be smaller (no padding rows, none dropped).
    device_id : "auto", int or None
        "auto" (default): follow ``rec`` (see ``placement``). None: a CPU-only pipeline, for a CPU
        reconstructor. An int: a GPU pipeline on that device, fed CuPy arrays straight from a CUDA
        reconstructor on the same device (no host round trip). A mismatch is an ``engine.InvalidArgument``.
    order, seed, epoch, shuffle_window : as ``Reconstructor.iter_batches``
        The training order: ``UIHIterator`` hands out the batches of ``iter_batches`` with the same
        keywords, in the same order (``workers=N`` in ``order="stream"`` excepted: user shards,
        interleaved). ``epoch`` is that of the first DALI epoch; ``UIHIterator.set_epoch`` sets the next.
    resume : dict or None
        A ``state_dict()`` (of a ``UIHIterator``, or of ``iter_batches``' iterator with the same keywords):
        the first DALI epoch is the state's epoch and yields exactly the batches it had left.
    options : PipelineOptions
        Workers, extra columns, DALI's threads and prefetching, and where padding and assembly run.
    **changes
        ``PipelineOptions`` fields that replace those of ``options``, e.g. ``extra_columns=["label"]``.

    Every batch but DALI-padded ones crosses DALI as one input of one sample (``engine.Batch.packed``).
    A ``Projection(layout="jagged")`` runs in an in-process CPU pipeline, with no padding anywhere:
    ``UIHIterator`` hands out each column's values of all rows plus ``offsets`` and ``lengths``, as
    ``iter_batches`` does.
    """
    options = PipelineOptions.of(options, changes)
    use_dali_host_pool()
    _deps.dali()  # a missing DALI is named before any other check
    gpu_id = placement(rec, device_id)
    options = _resolve(rec, batch_size, gpu_id is not None, options)
    shuffled = Order(order, seed, epoch, shuffle_window)  # InvalidArgument now, not in DALI's run
    progress = Progress(rec, thin_source, batch_size, shuffled, resume, _group(options),
                        resumable=not (options.workers and shuffled.order == "stream"))
    source = _source(rec, thin_source, batch_size, options)
    return UIHPipeline(_build(rec, source, batch_size, gpu_id, options), source, rec, options, batch_size,
                       gpu_id, progress)
