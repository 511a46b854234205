"""Ray Train example: the HSTU-style model (uih.hstu) trained by TorchTrainer workers from reconstructed UIH.

Two ways to feed the workers, same model and data:

- ``--mode dataset``: ``ray_plugin.uih_dataset`` reconstructs in Ray Data tasks (disaggregated: the
  reconstruct tasks can run on CPU nodes); Ray Train hands each worker an equal split of the examples.
- ``--mode local``: trainer-local; each worker takes its user shard of the thin rows
  (``ray_plugin.local_shard``) and reconstructs it itself (through the DALI GPU pipeline when the
  worker has a GPU), so only thin rows travel.

    python bench/ray_train_hstu.py [--mode dataset|local] [--workers 2] [--max-len 256] [--epochs 2]

On a cluster: ``ray start --head`` (and ``ray start --address HEAD:6379`` on the others), put ``--root``
on storage every node sees, then ``RAY_ADDRESS=HEAD:6379 python bench/ray_train_hstu.py --root /shared/x``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

import engine
from ray_plugin import local_shard, uih_dataset
from uih.fmt import machine_line, table, write_json
from uih.hstu import HSTUish, add_task_arguments, build, heldout_ne, split_heldout, train_step

RESULTS = Path(__file__).resolve().parent / "results"  # the tracked copies: written only with --out bench/results
DEFAULT_OUT = Path("uih_bench_out")


def _quiet_placement_group_cleaner():
    """Worker setup: Ray Train's placement-group cleaner warns "Failed to query ..." every few seconds once
    the run's controller has exited (dozens of lines at the end of a run); its real errors still show."""
    import logging
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
EXTRA = ["target_item", "label"]


def _local_batches(cfg, rank, world):
    """This worker's user shard, reconstructed here; every rank takes the same number of steps (DDP)."""
    proj = engine.Projection(["item_id", "action"], max_len=cfg["max_len"])
    rec, mine = local_shard(cfg["root"], cfg["train"], proj, rank=rank, world_size=world, version=cfg["version"],
                            extra_columns=EXTRA)
    steps = torch.tensor(len(mine) // cfg["batch"])
    if dist.is_initialized():
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    if rec.device == "cuda":  # GPU worker: the DALI GPU pipeline, batches stay in device memory
        from dali_plugin import UIHIterator, uih_pipeline

        batches = UIHIterator(uih_pipeline(rec, mine, batch_size=cfg["batch"], device_id=torch.cuda.current_device(),
                                           extra_columns=EXTRA))
    else:
        batches = (b.to_torch() for b in rec.iter_batches(mine, cfg["batch"], extra_columns=EXTRA))
    for _, b in zip(range(int(steps)), batches):
        yield b


def _evaluate(model, cfg):
    """Held-out normalized entropy, reconstructed in-process (rank 0 only)."""
    proj = engine.Projection(["item_id", "action"], max_len=cfg["max_len"])
    rec, test = local_shard(cfg["root"], cfg["test"], proj, rank=0, world_size=1, version=cfg["version"],
                            device="cpu", extra_columns=EXTRA)
    return heldout_ne(model, (b.to_torch() for b in rec.iter_batches(test, 256, extra_columns=EXTRA)))


def train_loop(cfg):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = ray.train.torch.prepare_model(HSTUish(cfg["items"], cfg["max_len"]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    shard = ray.train.get_dataset_shard("train") if cfg["mode"] == "dataset" else None
    for epoch in range(cfg["epochs"]):
        model.train()
        t0, steps, seen = time.perf_counter(), 0, 0
        batches = shard.iter_torch_batches(batch_size=cfg["batch"], drop_last=True) if shard is not None else \
            _local_batches(cfg, rank, world)
        for b in batches:
            loss = train_step(model, opt, b)
            steps, seen = steps + 1, seen + len(b["lengths"])
        metrics = {"epoch": epoch, "steps": steps, "examples": seen, "train_s": time.perf_counter() - t0,
                   "loss": float(loss.detach())}
        if rank == 0 and epoch == cfg["epochs"] - 1:  # the trained weights and their held-out NE
            plain = getattr(model, "module", model)
            metrics["heldout_ne"] = _evaluate(plain, cfg)
            with tempfile.TemporaryDirectory() as d:
                torch.save(plain.state_dict(), Path(d) / "model.pt")
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["dataset", "local"], default="dataset")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-cpus", type=float, default=0.5, help="CPUs per trainer (leave some for actors)")
    ap.add_argument("--actors", type=int, default=1, help="reconstruct actors (--mode dataset)")
    ap.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to use (default: all)")
    ap.add_argument("--max-len", type=int, default=256)
    add_task_arguments(ap, users=400, history=800, epochs=2)
    ap.add_argument("--root", default=None, help="where the store and thin rows go (shared storage on a cluster)")
    ap.add_argument("--out", default=None, help=f"results folder [{DEFAULT_OUT}]; --out bench/results updates "
                    "the tracked results")
    a = ap.parse_args(argv)
    ray.init(num_cpus=a.num_cpus, include_dashboard=False,  # RAY_ADDRESS set: joins that cluster instead
             runtime_env={"worker_process_setup_hook": _quiet_placement_group_cleaner})
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.root or tmp)
        store, thin = build(root / "store", a.users, a.history, a.items, a.fav_rate, a.requests)
        train, test = split_heldout(thin)
        pq.write_table(train, root / "train.parquet")
        pq.write_table(test, root / "test.parquet")
        cfg = {"mode": a.mode, "root": str(root / "store"), "version": store.version, "max_len": a.max_len,
               "train": str(root / "train.parquet"), "test": str(root / "test.parquet"), "items": a.items,
               "epochs": a.epochs, "batch": a.batch}
        datasets = {}
        if a.mode == "dataset":
            proj = engine.Projection(["item_id", "action"], max_len=a.max_len)
            datasets["train"] = uih_dataset(store, cfg["train"], proj, batch_size=a.batch, num_actors=a.actors,
                                            extra_columns=EXTRA)
        store.close()
        use_gpu = bool(ray.cluster_resources().get("GPU", 0))
        trainer = TorchTrainer(train_loop, train_loop_config=cfg, datasets=datasets,
                               scaling_config=ScalingConfig(num_workers=a.workers, use_gpu=use_gpu,
                                                            resources_per_worker=None if use_gpu else
                                                            {"CPU": a.worker_cpus}),
                               run_config=ray.train.RunConfig(storage_path=str(root / "ray_results")))
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
    m = result.metrics
    row = {"mode": a.mode, "workers": a.workers, "max_len": a.max_len, "heldout_ne": m.get("heldout_ne"),
           "steps_rank0_last_epoch": m["steps"], "examples_rank0_last_epoch": m["examples"],
           "epoch_s": m["train_s"], "fit_s": wall, "train_examples": len(train), "test_examples": len(test)}
    print(f"ray_train_hstu on {machine_line()} (shared box: indicative): {a.users} users x {a.history} events, "
          f"{a.workers} TorchTrainer workers, mode {a.mode}")
    print(table([[row["mode"], row["max_len"], f"{row['heldout_ne']:.3f}", row["steps_rank0_last_epoch"],
                  f"{row['epoch_s']:.1f} s", f"{wall:.0f} s"]],
                ["mode", "max_len", "held-out NE", "steps/epoch (rank 0)", "last epoch", "fit"]))
    path = write_json(Path(a.out or DEFAULT_OUT) / f"ray_train_hstu_{a.mode}.json", {"row": row, "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
