"""Retention (docs/guarantees.md): old versions are reclaimed after a grace period, readers keep working."""

import os

import numpy as np
import pytest

import engine
from engine.serving import _manifest, _retention
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 86_400_000_000


def disk_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def cycle(store, rng, d, users=range(10), n=300):
    store.append(make_events(rng, users, n, t0=d * DAY, span=DAY))
    store.seal((d + 1) * DAY)
    store.compact()


def test_seal_keeps_the_previous_log_for_readers_until_expire(store, rng, tmp_path):
    root = tmp_path / "store"
    store.append(make_events(rng, range(5), 50, t0=0, span=DAY))
    reader = engine.UIHStore.open(root, read_only=True)
    old_log = root / reader._manifest["log"]
    store.seal(DAY // 2)
    assert old_log.exists() and reader.stats()["log_bytes"] > 0  # a reader's version keeps its log until expire
    assert len(reader.to_table()) == 50
    out = store.expire(keep_versions=1, grace_s=0)
    assert out["versions_removed"] == [0] and not old_log.exists() and out["bytes_freed"] > 0
    assert reader.stats()["log_bytes"] == 0
    with pytest.raises(engine.VersionError, match="no version 0"):
        engine.UIHStore.open(root, version=0)


def test_grace_period_protects_a_reader_of_an_old_version(store, rng, tmp_path):
    root = tmp_path / "store"
    cycle(store, rng, 0)
    pinned = engine.UIHStore.open(root, version=store.version)
    want = pinned.to_table()
    for d in range(1, 6):
        cycle(store, rng, d)
    assert store.expire(keep_versions=1, grace_s=3600)["versions_removed"] == []
    pinned.view.clear_cache()  # forget open files: the reads below must find the files on disk
    assert pinned.to_table().equals(want)
    store.expire(keep_versions=1, grace_s=0)
    assert pinned.version not in _manifest.versions(root)
    pinned.view.clear_cache()
    with pytest.raises(engine.VersionError, match="retention"):
        pinned.to_table()


def test_disk_stays_within_1_5x_of_live_bytes_with_automatic_retention(tmp_path, rng):
    root = tmp_path / "s"
    store = engine.UIHStore.create(root, columns=COLUMNS, retention={"keep_versions": 1, "grace_s": 0})
    req = {"user_id": np.arange(10), "request_ts": np.full(10, 10**15)}
    thins, fats = [], []
    for d in range(12):
        cycle(store, rng, d)
        store.append(make_events(rng, range(10), 30, t0=(d + 1) * DAY, span=DAY // 2))
        thins.append(store.snapshot(req))
        fats.append(store.snapshot(req, materialize=True, max_len=10**5))
        st = store.stats()
        assert st["disk_bytes"] <= 1.5 * st["live_bytes"], st
        assert disk_bytes(root) <= 1.5 * st["live_bytes"] + 4096  # LOCK and directory slack
    assert len(_manifest.versions(root)) == 1
    # every thin row ever logged still reconstructs with the one retained version
    proj = engine.Projection(["seq", "item_id", "ts"], max_len=10**5)
    rec = engine.Reconstructor(store, proj, device="cpu")
    for thin, fat in zip(thins, fats):
        b = rec.reconstruct(thin)
        for i in range(10):
            n = int(b["lengths"][i])
            assert b["item_id"][i, :n].tolist() == fat["item_id"][i].as_py()
    store.close()


def test_keep_versions_keeps_the_newest_n_openable(store, rng, tmp_path):
    root = tmp_path / "store"
    for d in range(6):
        cycle(store, rng, d)
    vs = _manifest.versions(root)
    store.expire(keep_versions=3, grace_s=0)
    assert _manifest.versions(root) == vs[-3:]
    for v in vs[-3:]:
        with engine.UIHStore.open(root, version=v) as s:
            assert len(s.to_table()) > 0
    live = _retention.referenced(root)
    assert set(_retention.data_files(root)) == live  # nothing unreferenced is left


def test_inspect_shows_reclaimable_bytes(store, rng, tmp_path, capsys):
    from uih.cli import main
    for d in range(3):
        cycle(store, rng, d)
    st = store.stats()
    assert st["reclaimable_bytes"] > 0 and st["live_bytes"] > 0
    assert main(["inspect", str(tmp_path / "store"), "--json"]) == 0
    assert '"reclaimable_bytes"' in capsys.readouterr().out
    store.expire(keep_versions=1, grace_s=0)
    st = store.stats()
    assert st["reclaimable_bytes"] <= st["disk_bytes"] - st["live_bytes"] and st["disk_bytes"] == \
        st["live_bytes"] + st["reclaimable_bytes"]


def test_retention_option_is_validated(tmp_path):
    for bad in ({"keep_versions": 0}, {"grace_s": -1}, {"keep": 1}, 5):
        with pytest.raises(engine.InvalidArgument):
            engine.UIHStore.create(tmp_path / "s", columns=COLUMNS, retention=bad)


# ---- 6. uih demo --out ---------------------------------------------------------------------------
def test_demo_out_refuses_a_foreign_folder_and_deletes_only_its_outputs(tmp_path):
    from uih.replay import MARKER, prepare_out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(engine.UIHError, match="not empty"):
        prepare_out(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious" and not (foreign / MARKER).exists()
    out = tmp_path / "demo"
    prepare_out(out, fat_lengths=[64])
    for d in ("store", "thin", "fat", "fat_64"):
        (out / d).mkdir()
        (out / d / "x").write_bytes(b"1")
    (out / "notes.txt").write_text("keep me")
    (out / "fat_notes.txt").write_text("keep me too")  # named like an output, but not listed by the marker
    prepare_out(out)  # a rerun: the outputs the marker lists go, anything else stays
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "fat_notes.txt", "notes.txt"]
    (out / MARKER).write_text('["store", "../mine"]')
    with pytest.raises(engine.UIHError, match="does not list"):
        prepare_out(out)  # a marker naming anything but our outputs deletes nothing
    assert (foreign / "thesis.tex").exists() and (out / "notes.txt").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(engine.InvalidArgument, match="is a file"):
        prepare_out(tmp_path / "f")


def test_reader_that_loads_an_expired_version_retries_with_the_newest(store, rng, tmp_path, monkeypatch):
    root = tmp_path / "store"
    store.append(make_events(rng, range(5), 50, t0=0, span=DAY))
    stale = _manifest.load(root)
    store.seal(DAY // 2)
    store.append(make_events(rng, range(5), 5, t0=DAY, span=DAY))
    store.expire(keep_versions=1, grace_s=0)  # the stale version's log is gone
    real, served = _manifest._load, []

    def load(r, version, vs):  # the writer sealed and expired between this reader's listing and reading
        if not served and version is None:
            served.append(stale["version"])
            return stale, _manifest.crc_of(stale)
        return real(r, version, vs)
    monkeypatch.setattr(_manifest, "_load", load)
    with engine.UIHStore.open(root, read_only=True) as r:
        assert served and r.version == store.version and r.to_table().equals(store.to_table())
    with pytest.raises(engine.VersionError, match="retention"):  # without the retry: a typed error, no crash
        engine.UIHStore(root, stale, None, pinned=False, read_only_why="test")
