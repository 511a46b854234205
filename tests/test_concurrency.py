"""Readers never race the writer: reader processes open and read while a writer process appends, updates,
seals, compacts and expires; each read sees one whole version, and no untyped error ever reaches a reader."""

import multiprocessing as mp
import time
import traceback

import numpy as np
import pytest

import engine
from uih.workload import COLUMNS

BATCH = 1000  # item_id = batch * BATCH + j: which batch an event came from
MIN_BATCHES = 14  # however slow the machine, the writer makes > 3 versions (seals at 2, 5, 8, 11; compact at 6, 13)


def _writer(path, seconds, grace_s):
    rng = np.random.default_rng(0)
    store = engine.UIHStore.open(path, retention={"keep_versions": 1, "grace_s": grace_s})
    end, b, t = time.time() + seconds, 0, 1
    while time.time() < end or b < MIN_BATCHES:
        n = int(rng.integers(1, 30))
        users = rng.integers(0, 8, n)
        seqs = store.append({"user_id": users, "ts": t + np.arange(n), "item_id": b * BATCH + np.arange(n),
                             "action": rng.integers(0, 3, n).astype(np.int32),
                             "surface": np.full(n, n, np.int32), "dwell_ms": np.zeros(n, np.int32)})
        store.update({"user_id": users, "seq": seqs, "dwell_ms": np.ones(n, np.int32)})
        t += n
        if b % 3 == 2:
            store.seal(t - int(rng.integers(0, 20)))
        if b % 7 == 6:
            store.compact(full=bool(b % 2))
        b += 1
    store.close()


def check_whole(t):
    """A whole version: every batch present entirely or not at all, batches a prefix, updates whole."""
    item, surface, dwell = (t[c].to_numpy() for c in ("item_id", "surface", "dwell_ms"))
    batch = item // BATCH
    ids, counts = np.unique(batch, return_counts=True)
    assert np.array_equal(ids, np.arange(len(ids))), "a batch is missing before a later one"
    first = np.searchsorted(batch[np.argsort(batch, kind="stable")], ids)
    order = np.argsort(batch, kind="stable")
    assert np.array_equal(counts, surface[order][first]), "half a batch is visible"
    for b in ids[np.bincount(batch, weights=dwell, minlength=len(ids))[ids] % counts != 0]:
        raise AssertionError(f"batch {b} is half updated")
    u, s = t["user_id"].to_numpy(), t["seq"].to_numpy()
    for user in np.unique(u):
        assert np.array_equal(s[u == user], np.arange((u == user).sum())), "a seq gap"


def _reader(path, seconds, late_version_error_ok, q):
    reads, typed_late = 0, 0
    proj = engine.Projection(["seq", "item_id"], max_len=10**4)
    req = {"user_id": np.arange(8), "request_ts": np.full(8, 1 << 60)}
    end = time.time() + seconds
    try:
        while time.time() < end:
            r = engine.UIHStore.open(path, read_only=True)  # must never fail: it retries transparently
            try:
                check_whole(r.to_table())
                thin, fat = r.snapshot(req), r.snapshot(req, materialize=True, max_len=10**4)
                b = engine.Reconstructor(r, proj, device="cpu", prefetch=0).reconstruct(thin)
                for i in range(8):
                    assert b["item_id"][i, :b["lengths"][i]].tolist() == fat["item_id"][i].as_py()
                with engine.UIHStore.open(path, version=r.version) as pinned:  # within the grace period
                    sealed = r.to_table().filter(r.to_table()["sealed"])
                    assert pinned.to_table().filter(pinned.to_table()["sealed"]).equals(sealed)
                reads += 1
            except engine.VersionError:
                if not late_version_error_ok:
                    raise
                typed_late += 1  # grace_s=0: the version this reader holds was expired under it (typed)
            finally:
                r.close()
        q.put(("ok", reads, typed_late))
    except BaseException as e:  # noqa: BLE001 - report any failure to the parent
        q.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run(tmp_path, seconds, readers, grace_s, late_ok):
    path = tmp_path / "s"
    engine.UIHStore.create(path, columns=COLUMNS).close()
    ctx = mp.get_context("spawn")  # readers run OpenMP kernels: unsafe in a child forked after the parent did
    q = ctx.Queue()
    w = ctx.Process(target=_writer, args=(path, seconds, grace_s))
    rs = [ctx.Process(target=_reader, args=(path, seconds, late_ok, q)) for _ in range(readers)]
    w.start()
    for r in rs:
        r.start()
    results = [q.get(timeout=seconds + 120) for _ in rs]
    for p in [w, *rs]:
        p.join(timeout=60)
    assert w.exitcode == 0
    errors = [r[1] for r in results if r[0] == "error"]
    assert not errors, errors[0]
    assert sum(r[1] for r in results) >= readers  # every reader completed reads
    with engine.UIHStore.open(path, read_only=True) as s:
        check_whole(s.to_table())
        assert s.version > 3
    return results


def test_readers_with_a_grace_period_never_fail(tmp_path):
    run(tmp_path, seconds=6, readers=2, grace_s=30, late_ok=False)


def test_readers_with_no_grace_retry_at_open_and_fail_only_typed(tmp_path):
    run(tmp_path, seconds=5, readers=2, grace_s=0, late_ok=True)


@pytest.mark.slow
def test_many_readers_for_a_minute(tmp_path):
    run(tmp_path, seconds=60, readers=4, grace_s=30, late_ok=False)
