"""``uih_dataset``: thin rows in, a Ray Dataset of reconstructed examples out (docs/ray.md).

The plan has one stage: a dataset of shard numbers (built on the driver, no read tasks) mapped by an
actor pool of ``Reconstruct`` actors. Each call reads one user shard of the thin rows and reconstructs
it as one chunk. One stage on purpose: a read stage of tasks next to an actor pool that holds every
CPU starves on small machines, and Ray's shuffles (hash repartition, groupby) deadlock the same way
on a 2-CPU node, while splitting by user hash at read time needs no shuffle at all.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import engine

from . import _deps
from ._actor import Reconstruct
from ._shards import ShardPlan, StoreRef, pass_through_columns, portable, thin_schema

if TYPE_CHECKING:
    import ray.data

    from engine._types import StorePath, ThinSource


def uih_dataset(store: StorePath | engine.UIHStore, thin_source: ThinSource, projection: engine.Projection,
                batch_size: int = 1024, *, num_actors: int | None = None, num_shards: int | None = None,
                extra_columns: Sequence[str] | None = None, device: str = "auto", affinity: bool = True,
                stats_column: str | None = None, actor_cls: type = Reconstruct,
                order: Literal["stream", "shuffle"] = "stream", seed: int = 0, epoch: int = 0,
                shuffle_window: int | None = None, **ray_remote_args: Any) -> ray.data.Dataset:
    """A ``ray.data.Dataset`` of examples reconstructed from thin rows, each row exactly once per epoch.

    Parameters
    ----------
    store : str, Path or engine.UIHStore
        The store (a path: its newest version; an open store: its ``root`` at its ``version``). Actors
        open it read-only, pinned at that version.
    thin_source : pyarrow.Table, or Parquet file(s) / folder
        Thin rows from ``UIHStore.snapshot``.
    projection : engine.Projection
    batch_size : int
        Rows per reconstructed batch (Ray may re-batch on iteration).
    num_actors : int, optional
        Reconstruct actors; default one per GPU on a GPU cluster, else one per CPU.
    num_shards : int, optional
        User shards (one reconstruct call each); default ``4 * num_actors``. A call holds its shard's
        users' reachable events in memory at once (about ``users * max_len * bytes per event / num_shards``),
        so raise it for big datasets; each shard's read scans the thin rows once.
    extra_columns : list of str, optional
        Pass-through columns to carry; default every column that is not thin metadata or a tail.
    device : {"auto", "cpu", "cuda"}
        "auto": CUDA actors (``num_gpus=1``) when the cluster has GPUs, else CPU actors.
    affinity : bool
        True: split by user hash, so each user's events are read once per epoch. False: contiguous row
        ranges (each user read once per range it appears in); only to measure what affinity buys.
    order, seed, epoch, shuffle_window
        As ``Reconstructor.iter_batches``. ``"stream"``: user-hash shards (each user read once per epoch).
        ``"shuffle"``: shard ``i`` reconstructs share ``i`` of the epoch's global batches (``num_shards``
        shares), in the epoch's order; the examples are the same set, each once, and the same keywords give
        the same shards.
    stats_column : str, optional
        Add this column: events read from storage, on the first row of each shard (see ``Reconstruct``).
    actor_cls : type
        ``Reconstruct`` or a subclass of it (extra metrics, fault injection in tests).
    **ray_remote_args
        Ray Data's named remote parameters for the actors (``memory``, ``resources``, ``runtime_env``,
        ``label_selector``, ``accelerator_type``...), passed to ``map_batches``. Ray Data restarts a dead actor
        and retries its call by default; examples of a failed call are never kept. (Other ``ray.remote``
        options such as ``max_restarts`` still pass through, but Ray 2.60 deprecates them and 2.64 drops them.)

    Returns
    -------
    ray.data.Dataset
        Columns: per projected column a ``[max_len]`` tensor (``layout="padded"``) or a large-list column of
        the example's events (``layout="jagged"``: the jagged batch's values and offsets), ``lengths``, the
        pass-through columns.
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
    finally:
        view.close()
    schema = thin_schema(thin_source)
    extra = pass_through_columns(schema) if extra_columns is None else list(extra_columns)
    clash = [c for c in extra if c in projection.columns or c in ("lengths", stats_column)]
    if clash:
        raise engine.SchemaError(f"pass-through column(s) {clash} clash with a projected output; rename them "
                                 "or choose extra_columns")
    missing = [c for c in [*thin_columns, *extra] if c not in schema.names]
    if missing:
        raise engine.SchemaError(f"thin rows lack column(s) {missing}; make them with UIHStore.snapshot()")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if num_actors is None:
        num_actors = max(1, gpus if device == "cuda" else int(ray.cluster_resources().get("CPU", 1)))
    num_shards = int(num_shards or 4 * num_actors)
    columns = tuple(dict.fromkeys([*thin_columns, *extra]))
    engine.Order(order, seed, epoch, shuffle_window)  # bad keywords fail here, not in an actor
    keywords = None if order == "stream" else dict(batch_size=int(batch_size), order=order, seed=seed, epoch=epoch,
                                                   shuffle_window=shuffle_window)
    plan = ShardPlan(portable(thin_source), columns, num_shards, by_user=affinity, order=keywords)
    resources = {"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
    shards = ray.data.from_items([{"shard": i} for i in range(num_shards)], override_num_blocks=num_shards)
    return shards.map_batches(
        actor_cls, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=int(num_actors)),
        fn_constructor_kwargs={"ref": ref, "plan": plan, "projection": projection, "batch_size": int(batch_size),
                               "extra": extra, "device": device, "num_threads": 1 if device == "cpu" else None,
                               "stats_column": stats_column},
        **resources, **ray_remote_args)
