"""A training loop to copy: a small HSTU-style model trained on reconstructed UIH through DALI.

Synthetic task whose labels depend on long-range history: every user has a few favourite items that
show up sparsely (``fav_rate`` of events) anywhere in a long history of otherwise random items. A
request carries a candidate ``target_item``; it is engaged with (label 1) with probability 0.8 when the
candidate is a favourite, 0.1 otherwise. The only evidence of favourites is their scattered past
occurrences, so a model that sees more history should predict better: we report normalized entropy
(NE = log loss / entropy of the base rate; lower is better, 1.0 = knows nothing) on held-out users for
each ``max_len``.

    python bench/train_hstu.py [--lengths 64,256,1024] [--users 1500] [--history 1500] [--epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import engine
from dali_plugin import UIHIterator, uih_pipeline
from uih.fmt import machine_line, table, write_json
from uih.hstu import HSTUish, add_task_arguments, build, heldout_ne, split_heldout, train_step
from uih.jobs import ran_on

RESULTS = Path(__file__).resolve().parent / "results"


def run_length(store, train, test, max_len, items, epochs, batch, seed=0, device="auto"):
    torch.manual_seed(seed)
    proj = engine.Projection(["item_id", "action"], max_len=max_len, align="left")
    rec = engine.Reconstructor(store, proj, device=device)
    # the model lives where the reconstructor's batches land: the DALI pipeline follows the reconstructor
    model = HSTUish(items, max_len).to(rec.device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    extra = ["target_item", "label"]
    pipe = uih_pipeline(rec, train, batch_size=batch, extra_columns=extra)
    it = UIHIterator(pipe)
    t0 = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        model.train()
        for b in it:
            train_step(model, opt, b)
            steps += 1
    train_s = time.perf_counter() - t0
    ne = heldout_ne(model, UIHIterator(uih_pipeline(rec, test, batch_size=256, extra_columns=extra)))
    return {"max_len": max_len, "ne": ne,
            "steps": steps, "train_s": train_s, "examples_per_s": steps * batch / train_s,
            "device": rec.device, "dali_device": pipe.device}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="64,256,1024")
    add_task_arguments(ap, users=1500, history=1500, epochs=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        store, thin = build(Path(d) / "store", a.users, a.history, a.items, a.fav_rate, a.requests)
        train, test = split_heldout(thin)  # held-out users: every user in one shard only
        rows = [run_length(store, train, test, int(L), a.items, a.epochs, a.batch, device=a.device)
                for L in a.lengths.split(",")]
        store.close()
    print(f"train_hstu on {machine_line()}: {a.users} users x {a.history} events, {len(train)} train / "
          f"{len(test)} held-out examples (held-out users), {a.epochs} epochs, batch {a.batch}, via UIHIterator; "
          f"{ran_on(rows)}")
    print(table([[r["max_len"], f"{r['ne']:.3f}", r["steps"], f"{r['train_s']:.0f} s", f"{r['examples_per_s']:.0f}"]
                 for r in rows], ["max_len", "held-out NE", "steps", "train time", "train examples/s"]))
    path = write_json(Path(a.out or RESULTS) / "train_hstu.json", {"rows": rows, "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
