"""``uih_pipeline``: a DALI pipeline whose inputs are reconstructed UIH batches."""

from __future__ import annotations

import numbers
import os

import numpy as np

from engine import UIHError, _deps

from ._jagged import JaggedSource, dali_can_pad, jagged_twin, long_rows, pad_graph, padded_row_bytes
from ._source import AssemblingSource, InProcessSource
from ._workers import WorkerPoolSource

#: DALI's own host memory pool serves host allocations above this size (``DALI_MALLOC_POOL_THRESHOLD``).
#: DALI writes every CPU pipeline output into fresh buffers; left to malloc, a multi-megabyte batch is a
#: new mmap whose pages fault on first touch and go back to the OS when freed, so each batch pays for
#: zeroing its memory as well as for the copy. Pooled, the buffers are reused. Measured on 2 cores: a 32 MB
#: batch copied out in 18-21 ms from malloc, 5-6 ms pooled; ranking through DALI at batch 1024 took 1.66x
#: the direct time with DALI's default threshold and 1.15x with this one (bench/bench_dali.py --batch-size
#: 1024 --dali-malloc-threshold 32M, then without it).
DALI_POOL_THRESHOLD = "1M"


def use_dali_host_pool() -> str:
    """Route DALI's large host allocations to its pool, unless the user chose a threshold already.

    DALI reads the setting at its first host allocation, so this only takes effect before the process's
    first DALI pipeline runs; ``uih_pipeline`` calls it before building one. Returns the threshold in force.
    """
    return os.environ.setdefault("DALI_MALLOC_POOL_THRESHOLD", DALI_POOL_THRESHOLD)


def placement(rec, device_id="auto"):
    """The DALI ``device_id`` for ``rec``: None (CPU-only pipeline) or the GPU its batches live on.

    One rule: a CUDA reconstructor feeds a GPU pipeline on its own device, a CPU one a CPU pipeline.
    ``"auto"`` follows the reconstructor; an explicit value that breaks the rule is a ``UIHError``
    (a CPU pipeline would copy every CUDA batch back to the host; a GPU one cannot take host batches
    without a copy up).
    """
    if device_id == "auto":
        return rec.backend.device_id if rec.device == "cuda" else None
    if device_id is not None and not isinstance(device_id, int):
        raise UIHError(f"device_id must be 'auto', None (CPU-only) or a GPU index, got {device_id!r}")
    if device_id is not None and rec.device != "cuda":
        raise UIHError(f"device_id={device_id} asks for a GPU pipeline, but the Reconstructor runs on "
                       f"{rec.device!r}: build it with device='cuda', or leave device_id='auto'")
    if device_id is None and rec.device == "cuda":
        raise UIHError("device_id=None asks for a CPU-only pipeline, but the Reconstructor runs on 'cuda' and "
                       "every batch would be copied back to the host: leave device_id='auto' (a GPU "
                       "pipeline), or build the Reconstructor with device='cpu'")
    if device_id is not None and device_id != rec.backend.device_id:
        raise UIHError(f"device_id={device_id} but the Reconstructor's arrays live on GPU "
                       f"{rec.backend.device_id}: leave device_id='auto'")
    return device_id


#: ``batches_per_iteration="auto"``: as many batches per DALI iteration (at most 8) as fit in this many
#: bytes. A DALI iteration has a fixed cost besides copying its bytes: measured on 2 cores with fixed
#: arrays and no engine, 130 us per iteration for a 10 KB batch and 340 us for 2.6 MB, of which a plain
#: copy takes 250 us; and every batch the engine makes has its own fixed host work.
ITERATION_BYTES = 16 << 20
#: the same where batches are assembled inside DALI (``assemble_in_dali``): its iterations feed five inputs
#: per share of rows and copy nothing, so their fixed cost weighs more. Purchase (4 MB batches) through DALI
#: on 2 cores, cold jobs, 1 / 4 / 8 batches per iteration: 1.47x / 1.14-1.19x / 1.03x the direct time, and
#: +0.23 / +0.10-0.14 / -0.01 s of CPU time
ASSEMBLED_ITERATION_BYTES = 64 << 20


def _batches_per_iteration(rec, batch_size: int, extra, requested, groupable: bool,
                           budget: int = ITERATION_BYTES) -> int:
    """How many batches one DALI iteration carries (``uih_pipeline``'s ``batches_per_iteration``)."""
    if requested == "auto":
        if not groupable:
            return 1
        row = padded_row_bytes(rec) + 4 + 8 * len(extra)  # plus its length and extra columns
        # at most a chunk's batches, so that the engine's chunks keep their rows (and prefetching its pace)
        return max(1, min(8, rec.chunk_batches, budget // max(row * batch_size, 1)))
    if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested < 1:
        raise UIHError(f"batches_per_iteration must be 'auto' or an int >= 1, got {requested!r}")
    if requested > 1 and not groupable:
        raise UIHError(f"batches_per_iteration={requested} needs an in-process CPU pipeline (device_id=None, "
                       "workers=0) of a padded projection whose rows cross DALI padded (pad_in_dali False)")
    return int(requested)


#: column dtypes the in-DALI assembly writes (``_assemble_op.DALI_TYPES``), kept here so that choosing it
#: does not import (and compile) the operator
_ASSEMBLED_DTYPES = {np.dtype(t) for t in (np.int64, np.int32, np.float64, np.float32, np.uint64, np.uint32)}
_MAX_OUTPUTS = 6  # NumbaFunction's limit


def _assembly_blocker(rec, extra, gpu, workers, jagged, pad_in_dali):
    """Why ``uih_pipeline`` cannot assemble batches inside DALI (``_assemble_op``), or None."""
    if gpu or workers or jagged:
        return ("assembling inside DALI needs an in-process CPU pipeline (device_id=None, workers=0) of a "
                "padded projection")
    if pad_in_dali not in ("auto", False):
        return f"pad_in_dali={pad_in_dali!r} crosses DALI unpadded rows; assembling inside DALI pads them there"
    p, schema = rec.projection, rec.store.schema
    if len(p.columns) + 1 + bool(extra) > _MAX_OUTPUTS:
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


def uih_pipeline(rec, thin_source, batch_size=1024, device_id="auto", num_threads=2, workers=0,
                 prefetch_queue_depth=2, extra_columns=(), pad_in_dali="auto", batches_per_iteration="auto",
                 assemble_in_dali="auto"):
    """A built DALI pipeline feeding ``rec``'s batches of ``thin_source``.

    Parameters
    ----------
    rec : engine.Reconstructor
    thin_source : Parquet path(s) or pyarrow.Table of thin rows
    batch_size : int
        Rows per batch; the last batch of an epoch may be smaller (no padding rows, none dropped).
    device_id : "auto", int or None
        "auto" (default): follow ``rec`` (see ``placement``). None: a CPU-only pipeline, for a CPU
        reconstructor. An int: a GPU pipeline on that device, fed CuPy arrays straight from a CUDA
        reconstructor on the same device (no host round trip). A mismatch is a ``UIHError``.
    workers : int
        0: reconstruct in this process (batches in ``iter_batches`` order). N > 0 (CPU only): N worker
        processes, each owning a user shard; batches interleave round-robin (same rows, other order).
    extra_columns : list of str
        Pass-through thin-row columns (labels, ids) to output too, ``[B]`` each, after ``lengths``.
    pad_in_dali : "auto", False, "after" or True
        Where a padded projection's rows are padded. False: by the engine, and the padded batch crosses
        DALI. In-process CPU pipelines only: "after": the rows cross DALI unpadded and ``UIHIterator`` pads
        them with the engine's kernel (``Reconstructor.pad``); True: each row is a DALI sample and DALI's
        ``slice`` pads it. "auto": "after" for long rows (``_jagged``), else False. Same batches either way.

    batches_per_iteration : "auto" or int
        Batches one DALI iteration carries, made by the engine at once and copied by DALI in one piece;
        ``UIHIterator`` hands them out one by one, the same batches in the same order. In-process CPU
        pipelines of padded rows that cross DALI padded only. "auto": as many as fit ``ITERATION_BYTES``
        (``ASSEMBLED_ITERATION_BYTES`` when assembling in DALI), at most 8 and at most
        ``rec.chunk_batches``, else 1; more than ``rec.chunk_batches`` makes the
        engine's chunks hold one group. Prefetching (``prefetch_queue_depth``) counts iterations, and a
        batch the caller keeps keeps its iteration's whole buffer alive.
    assemble_in_dali : "auto", True or False
        True: the engine's kernels run as a DALI operator (``_assemble_op``) and write each batch straight
        into DALI's output buffers, ``num_threads`` shares of its rows at once; the engine only plans and
        decodes, and nothing is copied. In-process CPU pipelines of padded projections with at most 5
        outputs (columns, lengths, one more for all extra columns) and ``pad_in_dali`` left alone;
        ``batches_per_iteration`` applies as above (DALI's fixed cost per iteration, paid once per group).
        False: the engine writes each batch and DALI copies it (as
        above). "auto": True where it applies. Same batches either way.

    Every batch but DALI-padded ones crosses DALI as one input of one sample (``engine.Batch.packed``).
    A ``Projection(layout="jagged")`` runs in an in-process CPU pipeline, with no padding anywhere:
    ``UIHIterator`` hands out each column's values of all rows plus ``offsets`` and ``lengths``, as
    ``iter_batches`` does.
    """
    use_dali_host_pool()
    dali = _deps.dali()
    from nvidia.dali import fn

    device_id = placement(rec, device_id)
    gpu = device_id is not None
    jagged = rec.projection.layout == "jagged"
    if gpu and workers:
        raise UIHError("worker processes feed CPU pipelines only; on GPU the CUDA reconstructor is the worker")
    if jagged and (gpu or workers):
        raise UIHError("a layout='jagged' projection goes through DALI in an in-process CPU pipeline "
                       "(device_id=None, workers=0); on GPU, Reconstructor.iter_batches hands out jagged "
                       "batches already in device memory")
    if pad_in_dali not in ("auto", True, False, "after"):
        raise UIHError(f"pad_in_dali must be 'auto', True, False or 'after', got {pad_in_dali!r}")
    elif pad_in_dali not in ("auto", False) and (gpu or workers or jagged):
        raise UIHError(f"pad_in_dali={pad_in_dali!r} needs an in-process CPU pipeline (device_id=None, "
                       "workers=0) and a padded projection")
    elif pad_in_dali is True and not dali_can_pad(rec):
        raise UIHError(f"pad_in_dali=True: DALI's fill value is a float32, which cannot carry the pad value "
                       f"of {rec.projection} exactly; use pad_in_dali='after' (the engine pads after DALI)")
    blocker = _assembly_blocker(rec, extra_columns, gpu, workers, jagged, pad_in_dali)
    if assemble_in_dali not in ("auto", True, False):
        raise UIHError(f"assemble_in_dali must be 'auto', True or False, got {assemble_in_dali!r}")
    if assemble_in_dali is True and blocker:
        raise UIHError(f"assemble_in_dali=True: {blocker}")
    assembling = assemble_in_dali is not False and blocker is None
    if pad_in_dali == "auto":
        pad_in_dali = "after" if not gpu and not workers and not jagged and not assembling and long_rows(rec) else False
    pads_after = pad_in_dali == "after"
    group = _batches_per_iteration(rec, batch_size, extra_columns, batches_per_iteration,
                                   groupable=not (gpu or workers or jagged or pad_in_dali),
                                   budget=ASSEMBLED_ITERATION_BYTES if assembling else ITERATION_BYTES)
    if assembling:
        source = AssemblingSource(rec, thin_source, batch_size, extra=extra_columns, shares=num_threads, group=group)
    elif workers:
        source = WorkerPoolSource(rec, thin_source, batch_size, workers, extra=extra_columns)
    elif pad_in_dali is True:
        source = JaggedSource(rec, thin_source, batch_size, extra=extra_columns)
    else:
        source = InProcessSource(rec, thin_source, batch_size, extra=extra_columns,
                                 feeder=jagged_twin(rec) if pads_after else None, group=group)
    samples = source.shares if assembling else (1 if source.whole_batches else batch_size)
    pipe = dali.Pipeline(batch_size=samples, num_threads=num_threads,
                         device_id=device_id,
                         prefetch_queue_depth=prefetch_queue_depth)
    with pipe:
        kwargs = {"device": "gpu"} if gpu else {}
        if gpu:
            kwargs["cuda_stream"] = rec.backend.stream_ptr()
        if source.no_copy:  # the source holds each batch until UIHIterator has its outputs
            kwargs["no_copy"] = True
        outs = fn.external_source(source=source, num_outputs=source.num_inputs, batch=True, cycle="raise", **kwargs)
        if assembling:
            from ._assemble_op import operator  # compiled (or loaded from Numba's cache) on first use
            outs = operator([(c, rec.store.schema.dtype(c)) for c in rec.projection.columns],
                            bool(extra_columns))(*outs)
        pipe.set_outputs(*(pad_graph(fn, outs, rec) if pad_in_dali is True else outs))
    pipe.build()
    pipe.uih_names = source.names
    pipe.uih_source = source
    pipe.uih_assembles = assembling  # batches written by the DALI operator (``_assemble_op``)
    pipe.uih_device = "gpu" if gpu else "cpu"  # where DALI runs, for reports that say what ran
    pipe.uih_batch_size = batch_size  # rows per batch (DALI's own batch_size counts samples)
    pipe.uih_group = group  # batches per DALI iteration, which UIHIterator splits
    pipe.uih_pad = rec if pads_after else None  # pads each jagged batch after DALI (UIHIterator)
    return pipe
