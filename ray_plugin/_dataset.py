"""``uih_dataset``: thin rows in, a Ray Dataset of reconstructed examples out (docs/ray.md).

The plan has one stage: a dataset of part numbers (built on the driver, no read tasks) mapped by Ray Data
tasks (``_tasks``), each reading one part of the thin rows and reconstructing it as one chunk. Tasks, not
an actor pool: Ray reuses a finished task's worker process, which keeps the store open and the kernels
loaded (``_tasks``), so a warm epoch starts at once, where an actor pool starts new actors for every
execution. One stage on purpose: a read stage next to a stage that holds every CPU starves on small
machines, and Ray's shuffles (hash repartition, groupby) deadlock the same way on a 2-CPU node, while
splitting by user hash or by global batch at read time needs no shuffle at all.

Blocks are whole numbers of batches: a task's output block is ``block_batches`` batches reconstructed
as one (the dataset's target block size is set just under its bytes, so Ray neither merges nor cuts
them), and a consumer's ``iter_batches(batch_size=batch_size)`` slices batches out of them without a
copy. Not one block per batch: Ray Data costs a few ms per block whatever its size (serializing the
block and its metadata, sizing it, the executor's round trip), as much as reconstructing a 256-row batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

import engine

from . import _deps
from ._actor import Reconstruct
from ._epoch import EpochPlan
from ._shards import StoreRef, pass_through_columns, portable, thin_schema
from ._tasks import reconstruct_parts

if TYPE_CHECKING:
    import ray.data

    from engine._types import StorePath, ThinSource

# a block leaves the task once its bytes pass this share of a full block's (fixed-width) bytes, and Ray cuts
# it only past 1.5 times that threshold: so each block leaves as made, variable-width extras included
_BLOCK_SHARE = 0.95
# bytes a block aims at by default: large enough that Ray's per-block cost is small next to the
# reconstruction, small enough that the first batch comes in milliseconds (bench/bench_ray.py)
_BLOCK_BYTES = 64 << 20
_PLAN = "_uih_epoch_plan"


def uih_dataset(store: StorePath | engine.UIHStore, thin_source: ThinSource, projection: engine.Projection,
                batch_size: int = 1024, *, num_actors: int | None = None, num_shards: int | None = None,
                extra_columns: Sequence[str] | None = None, device: str = "auto", affinity: bool = True,
                stats_column: str | None = None, actor_cls: type = Reconstruct,
                order: Literal["stream", "shuffle"] = "stream", seed: int = 0, epoch: int = 0,
                shuffle_window: int | None = None, resume: dict | None = None, batch_column: str | None = None,
                block_batches: int | None = None, scatter: bool | None = None,
                **ray_remote_args: Any) -> ray.data.Dataset:
    """A ``ray.data.Dataset`` of examples reconstructed from thin rows, each row exactly once per epoch.

    Parameters
    ----------
    store : str, Path or engine.UIHStore
        The store (a path: its newest version; an open store: its ``root`` at its ``version``). Workers
        open it read-only, pinned at that version.
    thin_source : pyarrow.Table, or Parquet file(s) / folder
        Thin rows from ``UIHStore.snapshot``.
    projection : engine.Projection
    batch_size : int
        Rows per batch: iterate with ``iter_batches(batch_size=batch_size)`` (blocks are whole numbers of
        batches, so each batch is a slice of one block).
    num_actors : int, optional
        Reconstruct tasks running at once (worker processes, one CPU or one GPU each); default one per GPU
        on a GPU cluster, else one per CPU. A worker keeps its store and kernels warm across epochs.
    num_shards : int, optional
        Parts (one reconstruct task each); default ``2 * num_actors``: each part costs a task and, with
        affinity, a scan of the thin rows, so fewer and larger parts are faster (bench/bench_ray.py). A task
        holds its part's users' reachable events in memory at once (about ``users * max_len * bytes per
        event / num_shards``), so raise it for big datasets.
    extra_columns : list of str, optional
        Pass-through columns to carry; default every column that is not thin metadata or a tail.
    device : {"auto", "cpu", "cuda"}
        "auto": CUDA tasks (``num_gpus=1``) when the cluster has GPUs, else CPU tasks.
    affinity : bool
        With ``order="stream"``: True splits by user hash, so each user's events are read once per epoch;
        False cuts the epoch's global batches into contiguous runs (each user read once per part it
        appears in).
    order, seed, epoch, shuffle_window
        As ``Reconstructor.iter_batches``. ``"shuffle"`` (or ``affinity=False``): the dataset yields exactly
        ``iter_batches``' batches for these keywords, in the same order. ``"stream"`` with affinity: the
        user-hash parts' batches, part after part. Either way the same keywords (and ``num_shards``) give
        the same batches in the same order, each example once.
    resume : dict, optional
        A ``resume_state`` of a dataset with the same keywords (or, in global order, an ``iter_batches``
        ``state_dict()``): this dataset yields exactly the batches that one's consumers had not consumed.
    batch_column : str, optional
        Add this column: each row's global batch in the epoch (global order only), for ``resume_state``
        when several consumers (``streaming_split``) take batches out of order.
    block_batches : int, optional
        Batches per block (default: about 64 MB per block).
    scatter : bool, optional
        Cut the thin rows into every part's pieces ahead, by Ray tasks that each read a contiguous run of
        row groups (spread over the nodes), so storage serves the thin rows once per epoch and no task reads
        them whole; the pieces stay in the object store while the dataset lives. Default: for Parquet
        sources of more than one part (a Table is in memory already).
    stats_column : str, optional
        Add this column: events read from storage, on the first row of each part (see ``Reconstruct``).
    actor_cls : type
        ``Reconstruct`` or a subclass of it (extra metrics, fault injection in tests).
    **ray_remote_args
        Ray Data's named remote parameters for the tasks (``memory``, ``resources``, ``runtime_env``,
        ``label_selector``, ``accelerator_type``...), passed to ``map_batches``. Ray Data retries a task
        whose worker died; a retried part re-yields the same batches, and examples of a failed call are
        never kept twice.

    Returns
    -------
    ray.data.Dataset
        Columns: per projected column a ``[max_len]`` tensor (``layout="padded"``) or a large-list column of
        the example's events (``layout="jagged"``: the jagged batch's values and offsets), ``lengths``, the
        pass-through columns. Consume it in the training workers: ``ds.streaming_split(n)``, or Ray
        Train's dataset sharding.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise engine.InvalidArgument(f"batch_size must be an integer >= 1, got {batch_size!r}")
    ray = _deps.ray()
    if not ray.is_initialized():
        ray.init()
    ref = StoreRef.of(store)
    view = ref.open()  # checks the projection and the thin schema here, as typed engine errors
    try:
        thin_columns = engine.Reconstructor(view, projection, device="cpu").thin_columns
        event_bytes = sum(view.schema.dtype(c).itemsize for c in projection.columns) + \
            (8 if projection.layout == "jagged" else 0)  # + offsets
    finally:
        view.close()
    schema = thin_schema(thin_source)
    extra = pass_through_columns(schema) if extra_columns is None else list(extra_columns)
    added = [c for c in (stats_column, batch_column) if c]
    clash = [c for c in extra if c in projection.columns or c in ("lengths", *added)]
    if clash or len(set(added)) < len(added) or set(added) & {*projection.columns, "lengths"}:
        raise engine.SchemaError(f"pass-through, stats or batch column(s) {clash or added} clash with an output; "
                                 "rename them or choose extra_columns")
    missing = [c for c in [*thin_columns, *extra] if c not in schema.names]
    if missing:
        raise engine.SchemaError(f"thin rows lack column(s) {missing}; make them with UIHStore.snapshot()")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if num_actors is None:
        num_actors = max(1, gpus if device == "cuda" else int(ray.cluster_resources().get("CPU", 1)))
    num_shards = int(num_shards or 2 * num_actors)
    columns = tuple(dict.fromkeys([*thin_columns, *extra]))
    keywords = engine.Order(order, seed, epoch, shuffle_window)  # bad keywords fail here, not in a task
    plan = EpochPlan.make(portable(thin_source), columns, int(batch_size), keywords, num_shards,
                          by_user=bool(affinity) and order == "stream")
    if batch_column:
        plan.require_global("batch_column")
    if resume is not None:
        plan = plan.resumed(resume)
    if scatter is None:  # a Table is in memory already; files are read once, not once per part
        scatter = not isinstance(plan.source, pa.Table) and len(plan.parts_left()) > 1
    if scatter:
        plan = plan.scattered()
    # bytes per row (an upper bound for jagged): the projected events, lengths, added and fixed-width columns
    row = projection.max_len * event_bytes + 8 + 8 * len(added) + _fixed_width(schema, extra)
    if block_batches is None:
        block_batches = max(1, _BLOCK_BYTES // (int(batch_size) * row))
    elif isinstance(block_batches, bool) or not isinstance(block_batches, numbers.Integral) or block_batches < 1:
        raise engine.InvalidArgument(f"block_batches must be an integer >= 1, got {block_batches!r}")
    block_rows = int(block_batches) * int(batch_size)
    todo = plan.parts_left()
    resources = {"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
    parts = ray.data.from_items([{"part": i} for i in todo], override_num_blocks=max(len(todo), 1))
    ds = parts.map_batches(
        reconstruct_parts, batch_size=1, batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=int(num_actors)),
        fn_kwargs={"plan": plan, "block_rows": block_rows, "ref": ref, "projection": projection,
                   "actor_cls": actor_cls, "extra": extra, "device": device,
                   "num_threads": 1 if device == "cpu" else None, "stats_column": stats_column,
                   "batch_column": batch_column},
        **resources, **ray_remote_args)
    if projection.layout == "padded":  # jagged blocks vary in bytes: Ray shapes them by size
        ds.context.target_max_block_size = max(1, int(_BLOCK_SHARE * block_rows * row))
    ds.context.execution_options.preserve_order = True  # the parts in the epoch's order
    setattr(ds, _PLAN, plan)
    return ds


def resume_state(dataset: ray.data.Dataset, consumed: int | Collection[int]) -> dict:
    """The resume state of a ``uih_dataset`` (global order) after its consumers took ``consumed`` batches.

    ``consumed``: an int, the first batches one in-order consumer took (``iter_batches(batch_size=
    batch_size)``); or the global batches all consumers took, from the ``batch_column`` of their batches
    (``streaming_split`` consumers take them out of order). A JSON-serializable ``uih-order/1`` dict:
    ``uih_dataset(..., resume=state)`` with the same keywords yields exactly the other batches, each once;
    a state of a consumed prefix is also what ``iter_batches`` writes, and either side resumes the other's.
    """
    plan = getattr(dataset, _PLAN, None)
    if plan is None:
        raise engine.InvalidArgument("resume_state needs the Dataset uih_dataset returned (not one derived "
                                     "from it)")
    return plan.state(consumed)


def _fixed_width(schema: pa.Schema, names) -> int:
    """Bytes per row of the fixed-width pass-through columns (variable-width ones count 0)."""
    total = 0
    for c in names:
        t = schema.field(c).type
        if pa.types.is_fixed_size_list(t):
            total += t.list_size * max(t.value_type.bit_width // 8, 0)
        elif not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_binary(t) or pa.types.is_string(t)
                  or pa.types.is_large_string(t) or pa.types.is_large_binary(t)):
            try:
                total += t.bit_width // 8
            except ValueError:
                pass
    return total
