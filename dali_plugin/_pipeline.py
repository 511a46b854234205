"""``uih_pipeline``: a DALI pipeline whose inputs are reconstructed UIH batches."""

from __future__ import annotations

from engine import UIHError, _deps

from ._source import InProcessSource
from ._workers import WorkerPoolSource


def uih_pipeline(rec, thin_source, batch_size=1024, device_id=None, num_threads=2, workers=0,
                 prefetch_queue_depth=2, extra_columns=()):
    """A built DALI pipeline feeding ``rec``'s batches of ``thin_source``.

    Parameters
    ----------
    rec : engine.Reconstructor
    thin_source : Parquet path(s) or pyarrow.Table of thin rows
    batch_size : int
        Rows per batch; the last batch of an epoch may be smaller (no padding rows, none dropped).
    device_id : int or None
        None: a CPU-only pipeline. An int: a GPU pipeline on that device, fed CuPy arrays straight
        from a CUDA reconstructor (no host round trip).
    workers : int
        0: reconstruct in this process (batches in ``iter_batches`` order). N > 0 (CPU only): N worker
        processes, each owning a user shard; batches interleave round-robin (same rows, other order).
    extra_columns : list of str
        Pass-through thin-row columns (labels, ids) to output too, ``[B]`` each, after ``lengths``.
    """
    dali = _deps.dali()
    from nvidia.dali import fn

    gpu = device_id is not None
    if gpu and rec.device != "cuda":
        raise UIHError("device_id is set, so the pipeline runs on the GPU: build the Reconstructor with "
                       "device='cuda' (or use device_id=None for a CPU-only pipeline)")
    if gpu and workers:
        raise UIHError("worker processes feed CPU pipelines only; on GPU the CUDA reconstructor is the worker")
    source = (WorkerPoolSource(rec, thin_source, batch_size, workers, extra=extra_columns) if workers
              else InProcessSource(rec, thin_source, batch_size, extra=extra_columns))
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                         prefetch_queue_depth=prefetch_queue_depth)
    with pipe:
        kwargs = {"device": "gpu"} if gpu else {}
        if gpu:
            kwargs["cuda_stream"] = rec.backend.stream_ptr()
        outs = fn.external_source(source=source, num_outputs=len(source.names), batch=True, cycle="raise",
                                  **kwargs)
        pipe.set_outputs(*outs)
    pipe.build()
    pipe.uih_names = source.names
    pipe.uih_source = source
    return pipe
