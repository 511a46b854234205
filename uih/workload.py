"""Synthetic workloads: a realistic multi-tenant one for ``uih demo``/``uih bench``, and small ones for
tests and focused benchmarks (``random_events``, ``synthetic_store``).

Parameters (all in ``WorkloadConfig``) and what they mimic:

- history lengths are log-normal per user (``median_history``, ``sigma``), clipped at ``max_history``:
  most users have a few thousand events, a long tail has tens of thousands;
- a ``backfill_days`` share of each history predates the first simulated day; the rest arrives evenly
  over ``days`` days, at random instants;
- event types have skewed frequencies (``action_probs``: views >> clicks >> likes > shares > purchases);
- ``late_share`` of events arrive a day after they happened (ts in the past: late arrivals);
- ``update_share`` of freshly appended events get their ``dwell_ms`` rewritten later the same day;
- requests: each user makes Poisson(``requests_per_user_day``) requests a day, each carrying
  ``dense_features`` float32 features (~1 KB) and a label, like a real training example;
- ``tenants``: models that read the shared thin rows through different projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import Projection, UIHStore

DAY_US = 86_400_000_000
T0 = 1_767_225_600_000_000  # 2026-01-01 UTC, in microseconds

COLUMNS = {"item_id": "int64", "action": "int32", "surface": "int32", "dwell_ms": "int32"}


@dataclass(frozen=True)
class Tenant:
    name: str
    columns: tuple
    max_len: int
    actions: tuple | None = None
    window_days: float | None = None

    def projection(self, max_len=None, layout="padded"):
        return Projection(columns=list(self.columns), max_len=max_len or self.max_len, actions=self.actions,
                          window_us=None if self.window_days is None else int(self.window_days * DAY_US),
                          layout=layout)


DEFAULT_TENANTS = (
    Tenant("ranking", ("item_id", "action", "ts"), 4096),
    Tenant("retrieval", ("item_id",), 512, actions=(1, 2, 3, 4), window_days=14),
    Tenant("purchase", ("item_id", "surface", "dwell_ms"), 1024, actions=(3, 4)),
    Tenant("longseq", ("item_id", "action"), 65536),
)


@dataclass(frozen=True)
class WorkloadConfig:
    users: int = 2_000
    days: int = 4
    median_history: int = 2_000
    sigma: float = 1.0
    max_history: int = 65_536
    backfill_share: float = 0.7
    action_probs: tuple = (0.80, 0.12, 0.05, 0.02, 0.01)
    late_share: float = 0.03
    update_share: float = 0.02
    requests_per_user_day: float = 2.0
    dense_features: int = 240
    slices_per_day: int = 4
    tenants: tuple = field(default=DEFAULT_TENANTS)
    seed: int = 0

    @property
    def union_max_len(self) -> int:
        return max(t.max_len for t in self.tenants)


class Workload:
    """Generates the events and requests of each simulated day, slice by slice (reproducible)."""

    def __init__(self, cfg: WorkloadConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        lengths = rng.lognormal(np.log(cfg.median_history), cfg.sigma, cfg.users)
        self.lengths = np.clip(lengths, 1, cfg.max_history).astype(np.int64)
        self.user_ids = rng.choice(1 << 40, cfg.users, replace=False).astype(np.int64)
        self.backfill = (self.lengths * cfg.backfill_share).astype(np.int64)
        self.daily = np.maximum((self.lengths - self.backfill) // max(cfg.days, 1), 1)
        self._late = None

    def _events(self, rng, uid, t_lo, t_hi):
        n = len(uid)
        cfg = self.cfg
        ts = rng.integers(t_lo, t_hi, n)
        pop = np.minimum(rng.zipf(1.3, n), 10_000_000)  # long-tailed item popularity
        return {"user_id": uid, "ts": ts, "item_id": pop * 7919 % 50_000_000,
                "action": rng.choice(len(cfg.action_probs), n, p=cfg.action_probs).astype(np.int32),
                "surface": rng.integers(0, 8, n).astype(np.int32),
                "dwell_ms": np.minimum(rng.exponential(8_000, n), 2**31 - 1).astype(np.int32)}

    def backfill_events(self):
        """The history that predates day 0, ordered by time per user, in one table."""
        rng = np.random.default_rng(self.cfg.seed + 1)
        uid = np.repeat(self.user_ids, self.backfill)
        ev = self._events(rng, uid, T0 - 180 * DAY_US, T0)
        order = np.lexsort((ev["ts"], ev["user_id"]))
        return {k: v[order] for k, v in ev.items()}

    def day(self, d: int):
        """Yields (events, requests) per slice of day ``d``; events sorted by arrival (ts, bar late ones)."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed + 100 + d)
        start = T0 + d * DAY_US
        uid = np.repeat(self.user_ids, rng.poisson(self.daily))
        ev = self._events(rng, uid, start, start + DAY_US)
        late = rng.random(len(uid)) < cfg.late_share
        held, self._late = {k: v[late] for k, v in ev.items()}, self._late
        ev = {k: v[~late] for k, v in ev.items()}
        if self._late is not None:  # yesterday's late events arrive now, with their old ts
            ev = {k: np.concatenate([self._late[k], ev[k]]) for k in ev}
            arrival = np.r_[np.full(len(self._late["ts"]), start), ev["ts"][len(self._late["ts"]):]]
        else:
            arrival = ev["ts"]
        self._late = held
        n_req = rng.poisson(cfg.requests_per_user_day, cfg.users)
        r_uid = np.repeat(self.user_ids, n_req)
        r_ts = rng.integers(start, start + DAY_US, len(r_uid))
        step = DAY_US // cfg.slices_per_day
        for s in range(cfg.slices_per_day):
            lo, hi = start + s * step, start + (s + 1) * step
            m = (arrival >= lo) & (arrival < hi)
            order = np.argsort(arrival[m], kind="stable")
            events = {k: v[m][order] for k, v in ev.items()}
            rm = (r_ts >= lo) & (r_ts < hi)
            reqs = {"user_id": r_uid[rm], "request_ts": r_ts[rm]}
            n = int(rm.sum())
            reqs["example_id"] = (d << 40) + (s << 32) + np.arange(n, dtype=np.int64)
            reqs["label"] = rng.random(n).astype(np.float32) < 0.1
            reqs["dense"] = rng.standard_normal((n, cfg.dense_features)).astype(np.float32)
            yield events, reqs, hi


def random_events(rng, users, n, t0=0, span=1_000_000, n_actions=4) -> dict:
    """``n`` random events over ``users`` (columns ``COLUMNS``), ts roughly increasing with late arrivals."""
    uid = rng.choice(np.asarray(users, np.int64), n)
    ts = t0 + np.sort(rng.integers(0, span, n))
    late = rng.random(n) < 0.1
    ts[late] -= rng.integers(0, span // 2 + 1, late.sum())
    return {"user_id": uid, "ts": np.maximum(ts, 0),
            "item_id": rng.integers(0, 1 << 40, n), "action": rng.integers(0, n_actions, n).astype(np.int32),
            "surface": rng.integers(0, 8, n).astype(np.int32), "dwell_ms": rng.integers(0, 60_000, n).astype(np.int32)}


def synthetic_store(root: Path, users: int, history: int, seed: int = 0) -> UIHStore:
    """A store of ``users`` x ``history`` sealed events over 30 days (users 0..users-1), for speed tests.

    Requests at ``31 * DAY_US`` see every event; event types follow the default skew.
    """
    rng = np.random.default_rng(seed)
    store = UIHStore.create(root, columns=COLUMNS)
    n = users * history
    step = 2_000_000
    uid = np.tile(np.arange(users), history)
    ts = np.repeat(np.arange(history, dtype=np.int64) * (30 * DAY_US // history), users)
    for i in range(0, n, step):
        k = min(step, n - i)
        store.append({"user_id": uid[i:i + k], "ts": ts[i:i + k], "item_id": rng.integers(0, 1 << 40, k),
                      "action": rng.choice(5, k, p=[0.8, 0.12, 0.05, 0.02, 0.01]).astype(np.int32),
                      "surface": rng.integers(0, 8, k).astype(np.int32),
                      "dwell_ms": rng.integers(0, 60000, k).astype(np.int32)})
    store.seal(31 * DAY_US)
    return store
