"""Does the training order change model quality? The HSTU-style loop (``uih.hstu``) trained on the same
thin rows in three orders, several seeds each, and its held-out NE (lower is better):

* ``stream``: the thin rows' own order, user by user as ``uih.hstu.build`` writes them (every batch
  holds a few users' requests, all of them);
* ``permutation``: a full random permutation (``shuffle_window`` = the training rows);
* ``shuffle``: the default shuffle (``order="shuffle"``, ``shuffle_window=None``: blocks in a random order,
  examples drawn from a window, each chunk read user-grouped).

Seed ``s`` fixes the model's initialization and the order's seed; epoch ``e`` of a run uses ``epoch=e``
(another order each epoch). The held-out users are read in stream order. Reported per order: the NE of
each seed, and their min / median / max (the seed spread).

    python bench/train_order_ne.py [--quick] [--seeds 3] [--max-len 64] [--users 1200] [--requests 20]
                                   [--epochs 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import engine
from engine.training._order import DEFAULT_WINDOW
from uih.fmt import machine_line, table, write_json
from uih.hstu import HSTUish, add_task_arguments, build, heldout_ne, split_heldout, train_step

RESULTS = Path(__file__).resolve().parent / "results"
ORDERS = ("stream", "permutation", "shuffle")
EXTRA = ["target_item", "label"]
# the default: training rows over one default window (so the default shuffle is not a full permutation)
SIZES = {"quick": dict(users=60, history=200, requests=4, epochs=1, seeds=2, max_len=32),
         "default": dict(users=1200, history=600, requests=20, epochs=1, seeds=3, max_len=64)}


def order_kwargs(order: str, n_train: int) -> dict:
    if order == "stream":
        return {"order": "stream"}
    return {"order": "shuffle", "shuffle_window": n_train if order == "permutation" else None}


def train_one(store, train, test, order: str, seed: int, a) -> dict:
    torch.manual_seed(seed)
    rec = engine.Reconstructor(store, engine.Projection(["item_id", "action"], max_len=a.max_len, align="left"),
                               device="cpu")
    model = HSTUish(a.items, a.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    kw = order_kwargs(order, train.num_rows)
    t0, steps, losses = time.perf_counter(), 0, []
    for e in range(a.epochs):
        model.train()
        for b in rec.iter_batches(train, a.batch, extra_columns=EXTRA, seed=seed, epoch=e, **kw):
            losses.append(float(train_step(model, opt, b.to_torch()).detach()))
            steps += 1
    train_s = time.perf_counter() - t0
    ne = heldout_ne(model, (b.to_torch() for b in rec.iter_batches(test, 256, extra_columns=EXTRA)))
    return {"order": order, "seed": seed, "ne": ne,
            "steps": steps, "train_s": train_s, "last_loss": float(np.mean(losses[-20:]))}


def summarize(runs: list) -> dict:
    out = {}
    for order in ORDERS:
        ne = [r["ne"] for r in runs if r["order"] == order]
        out[order] = {"ne": ne, "min": min(ne), "median": float(np.median(ne)), "max": max(ne)}
    p, s = out["permutation"], out["shuffle"]
    out["goal_shuffle_within_permutation_spread"] = bool(p["min"] <= s["median"] <= p["max"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny task, 2 seeds, one epoch (a smoke test)")
    quick, _ = ap.parse_known_args(argv)  # the mode sets the other arguments' defaults
    mode = "quick" if quick.quick else "default"
    size = SIZES[mode]
    add_task_arguments(ap, users=size["users"], history=size["history"], epochs=size["epochs"])
    ap.set_defaults(requests=size["requests"])
    ap.add_argument("--seeds", type=int, default=size["seeds"])
    ap.add_argument("--max-len", type=int, default=size["max_len"])
    ap.add_argument("--out", default=None, help=f"folder for the JSON (default {RESULTS})")
    a = ap.parse_args(argv)
    # one torch thread: beside the reconstructor's threads on a shared 2-core machine, a second one spends
    # its time spinning at each op's barrier (a step took 0.6 CPU-s with two threads, 0.03 with one)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        store, thin = build(Path(d) / "store", a.users, a.history, a.items, a.fav_rate, a.requests)
        train, test = split_heldout(thin)  # held-out users: every user in one shard only
        for seed in range(a.seeds):  # seeds outside: every order meets the machine's slow minutes alike
            for order in ORDERS:
                runs.append(train_one(store, train, test, order, seed, a))
                print(f"  seed {seed} {order}: NE {runs[-1]['ne']:.4f} ({runs[-1]['train_s']:.0f} s)", flush=True)
        store.close()
    s = summarize(runs)
    print(f"train_order_ne ({mode}) on {machine_line()}: {a.users} users x {a.history} events, {a.requests} "
          f"requests each, {train.num_rows:,} train / {test.num_rows:,} held-out examples (held-out users), "
          f"max_len {a.max_len}, {a.epochs} epoch(s), batch {a.batch}, {a.seeds} seeds, default window "
          f"{DEFAULT_WINDOW:,}; iter_batches on cpu")
    print(table([[o, " ".join(f"{x:.4f}" for x in s[o]["ne"]), f"{s[o]['min']:.4f}", f"{s[o]['median']:.4f}",
                  f"{s[o]['max']:.4f}"] for o in ORDERS], ["order", "held-out NE per seed", "min", "median", "max"]))
    print(f"  default shuffle's median NE within the full permutation's seed spread: "
          f"{'met' if s['goal_shuffle_within_permutation_spread'] else 'MISSED'}")
    path = write_json(Path(a.out or RESULTS) / f"order_ne{'' if mode == 'default' else '_' + mode}.json",
                      {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M"), "params": vars(a),
                       "train_rows": train.num_rows, "test_rows": test.num_rows, "window": DEFAULT_WINDOW,
                       "runs": runs, "summary": s, "seconds": time.perf_counter() - t0})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
