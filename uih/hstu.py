"""The HSTU-style model and its synthetic task, shared by bench/train_hstu.py (DALI) and
bench/ray_train_hstu.py (Ray Train).

Synthetic task whose labels depend on long-range history: every user has a few favourite items that
show up sparsely (``fav_rate`` of events) anywhere in a long history of otherwise random items. A
request carries a candidate ``target_item``; it is engaged with (label 1) with probability 0.8 when the
candidate is a favourite, 0.1 otherwise. The only evidence of favourites is their scattered past
occurrences, so a model that sees more history should predict better (``normalized_entropy``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

import engine

from .workload import COLUMNS


# ---- data ---------------------------------------------------------------------------------------
def build(root: Path, users: int, history: int, items: int, fav_rate: float, requests: int, seed=0):
    """A store with each user's history sealed (bar a short mutable tail) and thin rows with labels."""
    rng = np.random.default_rng(seed)
    favs = rng.integers(0, items, (users, 8))
    n = users * history
    uid = np.repeat(np.arange(users), history)
    is_fav = rng.random(n) < fav_rate
    item = np.where(is_fav, favs[uid, rng.integers(0, 8, n)], rng.integers(0, items, n))
    ts = np.tile(np.arange(history, dtype=np.int64) * 1_000_000, users)
    store = engine.UIHStore.create(root, columns=COLUMNS)
    store.append({"user_id": uid, "ts": ts, "item_id": item, "action": (rng.random(n) < 0.1).astype(np.int32),
                  "surface": rng.integers(0, 4, n).astype(np.int32),
                  "dwell_ms": rng.integers(0, 9999, n).astype(np.int32)})
    store.seal((history - 16) * 1_000_000)  # the newest 16 events per user stay mutable: logged as tails
    r_uid = np.repeat(np.arange(users), requests)
    pick_fav = rng.random(len(r_uid)) < 0.5
    target = np.where(pick_fav, favs[r_uid, rng.integers(0, 8, len(r_uid))], rng.integers(0, items, len(r_uid)))
    fav_hit = (favs[r_uid] == target[:, None]).any(1)
    label = rng.random(len(r_uid)) < np.where(fav_hit, 0.8, 0.1)
    thin = store.snapshot({"user_id": r_uid, "request_ts": np.full(len(r_uid), history * 1_000_000),
                           "target_item": target, "label": label.astype(np.float32)})
    return store, thin


# ---- model --------------------------------------------------------------------------------------
class HSTUBlock(nn.Module):
    """HSTU-style layer: pointwise projections to U, V, Q, K; causal SiLU-free softmax attention
    (SDPA) gated elementwise by U; residual."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(d)
        self.uvqk = nn.Linear(d, 4 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        B, L, d = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm(x))).chunk(4, dim=-1)
        split = lambda t: t.view(B, L, self.heads, d // self.heads).transpose(1, 2)
        # left-aligned rows: causal attention never lets a real position see padding, so no pad mask
        # is needed, and SDPA can use its fused causal kernel
        a = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        a = a.transpose(1, 2).reshape(B, L, d)
        return x + self.out(u * a)


class HSTUish(nn.Module):
    """Item and action embeddings, HSTU layers, and a next-event head scoring the candidate item.

    Item embeddings are fixed random codes (a hashing trick): with few examples per item, learned
    per-item embeddings memorise the training users' candidates instead of learning to match them.
    """

    def __init__(self, items, max_len, d=32, heads=2, layers=2):
        super().__init__()
        self.item = nn.Embedding(items, d)
        self.item.weight.requires_grad_(False)
        self.action = nn.Embedding(2, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(HSTUBlock(d, heads) for _ in range(layers))
        self.q = nn.Linear(d, d)
        self.head = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 1))

    def forward(self, item, action, lengths, target):
        B, L = item.shape
        d = self.item.embedding_dim
        pos = torch.arange(L, device=item.device)  # the batch's device: CUDA when DALI runs on the GPU
        pad = pos[None, :] < lengths[:, None]
        raw = self.item(item)
        x = raw + self.action(action) + self.pos(pos)[None]
        for blk in self.blocks:
            x = blk(x)
        t = self.item(target)
        # next-event head: the candidate attends over the encoded history; the raw match scores count
        # how often the candidate occurred (the long-range evidence)
        match = ((raw * t[:, None, :]).sum(-1) / d).masked_fill(~pad, -1.0)
        s = (self.q(t)[:, None, :] * x).sum(-1) / d ** 0.5
        w = torch.softmax(s.masked_fill(~pad, -1e9), dim=1) * pad
        ctx = (w[..., None] * x).sum(1)
        hits = torch.sigmoid((match - 0.6) * 20).sum(1, keepdim=True)
        feats = torch.cat([match.max(1).values[:, None], torch.log1p(hits), (ctx * t).sum(-1, keepdim=True) / d,
                           torch.log1p(lengths[:, None].float()) / 8], -1)
        return self.head(feats).squeeze(-1)


def normalized_entropy(p, y):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    base = np.clip(y.mean(), 1e-7, 1 - 1e-7)
    return ll / -(base * np.log(base) + (1 - base) * np.log(1 - base))


def heldout_ne(model, batches) -> float:
    """The model's normalized entropy over ``batches`` (dicts of tensors with ``target_item`` and ``label``:
    ``Batch.to_torch()``, a DALI or a DataLoader batch), in eval mode without gradients."""
    import torch
    preds, ys = [], []
    model.eval()
    with torch.no_grad():
        for t in batches:
            preds.append(torch.sigmoid(model(t["item_id"], t["action"].long(), t["lengths"].long(),
                                             t["target_item"])).cpu().numpy())
            ys.append(t["label"].cpu().numpy())
    return float(normalized_entropy(np.concatenate(preds), np.concatenate(ys)))


def split_heldout(thin: pa.Table, folds: int = 5):
    """(train, test) thin rows; the test users are one user shard, so no user is in both."""
    test = engine.shard(thin, num_shards=folds, index=0)
    return thin.filter(pc.invert(pc.is_in(thin["user_id"], test["user_id"]))), test


def add_task_arguments(ap, users: int, history: int, epochs: int) -> None:
    """The synthetic task's knobs on an ``argparse`` parser, shared by the DALI and Ray training scripts."""
    ap.add_argument("--users", type=int, default=users)
    ap.add_argument("--history", type=int, default=history)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--fav-rate", type=float, default=0.03)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch", type=int, default=64)


def train_step(model, opt, b):
    """One optimizer step on a batch (dict of tensors from DALI or Ray); returns the loss."""
    import torch.nn.functional as F
    logit = model(b["item_id"], b["action"].long(), b["lengths"].long(), b["target_item"])
    loss = F.binary_cross_entropy_with_logits(logit, b["label"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss
