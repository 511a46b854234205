"""Stores on object storage: publish to a real S3-compatible server (moto), read remotely, bit for bit."""

import pickle
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

import engine
from engine.serving import _fs, _manifest, _publish, _retention
from uih.cli import main as uih_main
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")
fs_mod = pytest.importorskip("pyarrow.fs")

DAY = 86_400_000_000
BUCKET = "uih"  # the bucket conftest.py's s3 fixture creates

PROJECTIONS = {  # plain, right-aligned with pads, rare types (sidecar), types + window, all, jagged
    "left": engine.Projection(["item_id", "action", "ts", "seq"], max_len=48),
    "right": engine.Projection(["dwell_ms", "item_id"], max_len=300, align="right", pad_value=-1),
    "rare": engine.Projection(["surface", "ts"], max_len=8, actions=[3]),
    "window": engine.Projection(["action", "item_id"], max_len=24, actions=[0, 1], window_us=DAY // 2,
                                align="right"),
    "whole": engine.Projection(["surface", "dwell_ms", "item_id"], max_len=4000, pad_value=3),
    "jagged": engine.Projection(["item_id", "ts"], max_len=20, window_us=DAY // 3, layout="jagged"),
}


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The environment a user sets for a plain ``s3://`` URI (credentials and endpoint, no filesystem=)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3[0]}")
    return s3


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A local store after seals, a compaction and updates, with mutable events left, and the thin rows
    logged along the way (each carries the version it was logged at)."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("objstore") / "store"
    store = engine.UIHStore.create(path, columns=COLUMNS, event_type_column="action")
    users = np.arange(10)
    thins = []
    for half_day in range(8):  # seal at the end of every day, compact once
        t0 = half_day * DAY // 2
        ev = make_events(rng, users, 250, t0=t0, span=DAY // 2)
        ev["action"] = np.where(rng.random(250) < 0.06, 3, ev["action"] % 3).astype(np.int32)
        seqs = store.append(ev)
        pick = rng.choice(len(seqs), 10, replace=False)
        store.update({"user_id": ev["user_id"][pick], "seq": seqs[pick], "item_id": rng.integers(0, 99, 10)})
        thins.append(store.snapshot({"user_id": np.r_[users, [1000]], "request_ts": np.full(11, t0 + DAY // 2),
                                     "example_id": np.arange(11) + 100 * half_day}))
        if half_day % 2:
            store.seal(t0 + DAY // 4)
        if half_day == 5:
            store.compact(full=True)
    store.append(make_events(rng, users, 100, t0=5 * DAY, span=DAY))  # a mutable tier for the log test
    store.close()
    return path, pa.concat_tables(thins)


def _publish_to(path, s3, prefix, **kw):
    return engine.publish(path, f"s3://{BUCKET}/{prefix}", filesystem=s3[1], **kw)


@pytest.fixture(scope="module")
def remote(local, s3):
    got = _publish_to(local[0], s3, "main")
    store = engine.UIHStore.open(f"s3://{BUCKET}/main", read_only=True, filesystem=s3[1])
    yield store, got
    store.close()


def _batches(store, proj, thin):
    return list(engine.Reconstructor(store, proj, device="cpu").iter_batches(thin, batch_size=16))


def _assert_same_batches(got, want):
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for c in w:
            assert g[c].dtype == w[c].dtype
            np.testing.assert_array_equal(g[c], w[c], err_msg=f"column {c}")


@pytest.mark.parametrize("name", list(PROJECTIONS))
def test_remote_reconstruction_is_bit_exact(local, remote, name):
    with engine.UIHStore.open(local[0], read_only=True) as ref:
        want = _batches(ref, PROJECTIONS[name], local[1])
    _assert_same_batches(_batches(remote[0], PROJECTIONS[name], local[1]), want)


def test_remote_reader_sees_the_immutable_tier_only(local, remote):
    store, got = remote
    with engine.UIHStore.open(local[0], read_only=True) as ref:
        want, table = ref.stats(), ref.to_table()
    st = store.stats()
    assert str(store.root) == f"s3://{BUCKET}/main"
    assert got["versions"] == want["versions"] == st["versions"] and st["version"] == want["version"]
    for k in ("store_id", "columns", "segments", "sealed_events", "segment_bytes", "sidecar_bytes", "rare_types"):
        assert st[k] == want[k], k
    assert want["mutable_events"] > 0 and st["mutable_events"] == 0 and st["log_bytes"] == 0
    assert st["live_bytes"] == want["live_bytes"] - want["log_bytes"]  # everything but the log was copied
    sealed = table.filter(table["sealed"])
    assert store.to_table().equals(sealed)


def test_publish_is_incremental_and_puts_each_manifest_after_its_files(local, s3, monkeypatch):
    order = []
    real = _publish._upload
    monkeypatch.setattr(_publish, "_upload", lambda src, dest, rel: order.append(rel) or real(src, dest, rel))
    first = _publish_to(local[0], s3, "ordered")
    vs = _manifest.versions(local[0])
    assert first["versions"] == vs and first["files_copied"] == len(order) == len(set(order))  # each once
    for v in vs:  # every file a manifest names went up before it
        m = _manifest.load(local[0], v)
        pos = order.index(f"{_manifest.DIR}/{_manifest.path_of(local[0], v).name}")
        assert all(order.index(f) < pos for f in _retention.files_of(m) - {m["log"]})
    assert not any(f.startswith("log/") for f in order)
    order.clear()
    again = _publish_to(local[0], s3, "ordered")
    assert order == [] and again["files_copied"] == 0
    assert again["files_skipped"] == first["files_copied"] + first["files_skipped"]


def test_republish_after_a_seal_copies_only_the_new_version(local, s3, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(local[0], path)
    first = _publish_to(path, s3, "grows")
    with engine.UIHStore.open(path) as writer:
        writer.append(make_events(np.random.default_rng(3), range(10), 50, t0=6 * DAY, span=DAY))
        new = writer.seal(8 * DAY)
    again = _publish_to(path, s3, "grows")
    assert again["versions"][-1] == new and again["files_copied"] >= 2  # its segment files + its manifest
    assert again["files_copied"] < first["files_copied"]
    with engine.UIHStore.open(f"s3://{BUCKET}/grows", read_only=True, filesystem=s3[1]) as store, \
            engine.UIHStore.open(path, read_only=True) as ref:
        assert store.version == new
        assert store.to_table().equals(ref.to_table().filter(ref.to_table()["sealed"]))


def test_a_version_whose_files_vanish_is_not_published(local, s3, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(local[0], path)
    vs = _manifest.versions(path)
    newest = _retention.files_of(_manifest.load(path))
    gone = sorted(_retention.files_of(_manifest.load(path, vs[1])) - newest - {_manifest.load(path, vs[1])["log"]})
    assert gone  # a segment that compaction replaced: as if a local expire removed it mid-publish
    (path / gone[0]).unlink()
    got = _publish_to(path, s3, "vanished")
    skipped = [v for v in vs if gone[0] in _retention.files_of(_manifest.load(path, v))]
    assert skipped and got["versions"] == [v for v in vs if v not in skipped]
    with engine.UIHStore.open(f"s3://{BUCKET}/vanished", read_only=True, filesystem=s3[1]) as store:
        assert [v for v in store.stats()["versions"] if v in skipped] == []  # no manifest names a missing file
        assert store.version == vs[-1]


def test_uri_with_credentials_from_the_environment(local, s3_env, capsys):
    assert uih_main(["publish", str(local[0]), f"s3://{BUCKET}/cli"]) == 0
    assert "files copied" in capsys.readouterr().out
    with engine.UIHStore.open(f"s3://{BUCKET}/cli", read_only=True) as store:  # no filesystem=: from_uri
        p = PROJECTIONS["left"]
        with engine.UIHStore.open(local[0], read_only=True) as ref:
            _assert_same_batches(_batches(store, p, local[1]), _batches(ref, p, local[1]))
    assert uih_main(["inspect", f"s3://{BUCKET}/cli"]) == 0
    assert "UIH store s3://" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        uih_main(["publish", "--help"])
    assert done.value.code == 0 and "usage: uih publish" in capsys.readouterr().out


def test_published_log_gives_the_mutable_tier(local, s3):
    _publish_to(local[0], s3, "withlog", include_log=True)
    with engine.UIHStore.open(f"s3://{BUCKET}/withlog", read_only=True, filesystem=s3[1]) as store, \
            engine.UIHStore.open(local[0], read_only=True) as ref:
        assert store.stats()["mutable_events"] == ref.stats()["mutable_events"] > 0
        assert store.to_table().equals(ref.to_table())
        req = {"user_id": np.arange(10), "request_ts": np.full(10, 7 * DAY)}
        assert store.snapshot(req).equals(ref.snapshot(req))


def test_pinned_version_reads_remotely(local, remote, s3):
    vs = remote[1]["versions"]
    old = vs[len(vs) // 2]
    p = PROJECTIONS["right"]
    thin = local[1].filter(pa.compute.less_equal(local[1]["version"], old))
    with engine.UIHStore.open(f"s3://{BUCKET}/main", version=old, filesystem=s3[1]) as store, \
            engine.UIHStore.open(local[0], version=old) as ref:
        assert store.version == old and len(store.view.segments) == len(ref.view.segments)
        _assert_same_batches(_batches(store, p, thin), _batches(ref, p, thin))
    with pytest.raises(engine.VersionError, match="has no version"):
        engine.UIHStore.open(f"s3://{BUCKET}/main", version=vs[-1] + 5, filesystem=s3[1])
    # workers (Ray actors, DALI processes) may get the root itself: it pickles with its filesystem
    with engine.UIHStore.open(pickle.loads(pickle.dumps(remote[0].root)), version=old) as store:
        assert store.version == old and str(store.root) == f"s3://{BUCKET}/main"


def test_writes_on_object_storage_are_refused(local, remote, s3, tmp_path):
    store = remote[0]
    with pytest.raises(engine.InvalidArgument, match="read_only=True or version=V"):
        engine.UIHStore.open(f"s3://{BUCKET}/main", filesystem=s3[1])
    ev = make_events(np.random.default_rng(0), [1], 3)
    for call in (lambda: store.append(ev), lambda: store.seal(10 * DAY), store.compact, store.expire):
        with pytest.raises(engine.UIHError, match="read-only"):
            call()
    with pytest.raises(engine.InvalidArgument, match="local"):
        engine.UIHStore.create(f"s3://{BUCKET}/new", columns=COLUMNS)
    with pytest.raises(engine.InvalidArgument, match="not a local path"):
        engine.publish(f"s3://{BUCKET}/main", str(tmp_path / "x"))
    listing = s3[1].get_file_info(fs_mod.FileSelector(f"{BUCKET}/main", recursive=True))
    assert not any(i.base_name == "LOCK" for i in listing)  # a reader never creates the writer lock


def _segment_object(local, prefix, what):
    m = _manifest.load(local[0])
    part = m["segments"][-1]["main"]
    return f"{BUCKET}/{prefix}/{part['file' if what != 'index' else 'index']}"


def _overwrite(fs, key, change):
    with fs.open_input_stream(key) as f:
        data = bytearray(f.readall())
    change(data)
    with fs.open_output_stream(key) as f:
        f.write(bytes(data))


def _zero_middle(data):
    n = len(data)
    data[n // 4:n // 2] = bytes(n // 2 - n // 4)


def _flip_last_footer_byte(data):
    data[-9] ^= 0x10  # inside the footer's metadata, before its length and magic


@pytest.mark.parametrize("what, change", [("pages", _zero_middle), ("footer", _flip_last_footer_byte),
                                          ("index", _zero_middle)], ids=["pages", "footer", "index"])
def test_corrupted_remote_files_raise_corruption_error(local, s3, what, change):
    prefix = f"corrupt-{what}"
    _publish_to(local[0], s3, prefix)
    _overwrite(s3[1], _segment_object(local, prefix, what), change)
    with pytest.raises(engine.CorruptionError, match=f"s3://{BUCKET}/{prefix}/segments/"):
        store = engine.UIHStore.open(f"s3://{BUCKET}/{prefix}", read_only=True, filesystem=s3[1])
        store.to_table()  # every column of every row group: each page is checked


def test_corrupted_remote_manifest_raises_corruption_error(local, s3):
    _publish_to(local[0], s3, "corrupt-manifest")
    newest = _manifest.path_of(local[0], _manifest.versions(local[0])[-1]).name
    key = f"{BUCKET}/corrupt-manifest/{_manifest.DIR}/{newest}"
    _overwrite(s3[1], key, lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 1))
    with pytest.raises(engine.CorruptionError, match="manifest"):
        engine.UIHStore.open(f"s3://{BUCKET}/corrupt-manifest", read_only=True, filesystem=s3[1])


@pytest.mark.parametrize("what", ["index", "segment"])
def test_missing_remote_objects_raise_typed_errors(local, s3, what):
    prefix = f"missing-{what}"
    _publish_to(local[0], s3, prefix)
    s3[1].delete_file(_segment_object(local, prefix, what))
    with pytest.raises(engine.CorruptionError, match="is missing"):
        store = engine.UIHStore.open(f"s3://{BUCKET}/{prefix}", read_only=True, filesystem=s3[1])
        store.to_table()
    with pytest.raises(engine.CorruptionError, match="no UIH store"):
        engine.UIHStore.open(f"s3://{BUCKET}/nothing-here", read_only=True, filesystem=s3[1])


def test_unreachable_endpoint_is_a_uih_error(local):
    fs = fs_mod.S3FileSystem(endpoint_override="127.0.0.1:9", scheme="http", access_key="x", secret_key="x",
                             region="us-east-1", connect_timeout=0.5, request_timeout=0.5,
                             retry_strategy=fs_mod.AwsStandardS3RetryStrategy(max_attempts=1))
    with pytest.raises(engine.UIHError, match="check the URI, the endpoint and the credentials"):
        engine.UIHStore.open(f"s3://{BUCKET}/main", read_only=True, filesystem=fs)
    with pytest.raises(engine.UIHError, match="cannot list"):
        engine.publish(local[0], f"s3://{BUCKET}/x", filesystem=fs)


def test_publish_to_a_local_folder_renames_into_place(local, tmp_path):
    got = engine.publish(local[0], tmp_path / "copy")
    assert not [p for p in (tmp_path / "copy").rglob(".tmp-*")]
    with engine.UIHStore.open(tmp_path / "copy", read_only=True) as store, \
            engine.UIHStore.open(local[0], read_only=True) as ref:
        assert store.version == ref.version and got["versions"][-1] == ref.version
        assert store.to_table().equals(ref.to_table())  # the log came too: local readers need it
        p = PROJECTIONS["window"]
        _assert_same_batches(_batches(store, p, local[1]), _batches(ref, p, local[1]))


def test_thin_rows_read_from_object_storage(local, remote, s3, s3_env):
    """Thin rows on S3 (a folder URI, a file URI, a list) give the same batches as the same rows local;
    endpoint options may ride in the URI itself; a missing prefix is a SchemaError naming it."""
    import pyarrow.parquet as pq
    thin = local[1]
    fs = s3[1]
    for i, part in enumerate((thin.slice(0, 40), thin.slice(40))):  # two files, listed in name order
        with fs.open_output_stream(f"{BUCKET}/thin/part-{i}.parquet") as f:
            pq.write_table(part, f)
    p = PROJECTIONS["window"]
    want = _batches(remote[0], p, thin)
    opts = f"?endpoint_override={s3[0]}&scheme=http&region=us-east-1"  # credentials: the environment
    for source in (f"s3://{BUCKET}/thin", f"s3://{BUCKET}/thin/{opts}",
                   [f"s3://{BUCKET}/thin/part-0.parquet", f"s3://{BUCKET}/thin/part-1.parquet{opts}"]):
        _assert_same_batches(_batches(remote[0], p, source), want)
    with pytest.raises(engine.SchemaError, match=f"s3://{BUCKET}/nothing"):
        _batches(remote[0], p, f"s3://{BUCKET}/nothing/")
    # the Ray adapter's shard reader takes the same URI (each actor reads its user shard from S3)
    shards = pytest.importorskip("ray_plugin._shards")
    cols = ["user_id", "imm_hw", "example_id"]
    for i in range(2):
        got = shards.read_shard(f"s3://{BUCKET}/thin{opts}", cols, 2, i)
        assert got.equals(engine.shard(thin.select(cols), 2, i))


def _remote_data(s3, prefix) -> dict:
    sel = fs_mod.FileSelector(f"{BUCKET}/{prefix}", recursive=True)
    cut = len(f"{BUCKET}/{prefix}") + 1
    return {i.path[cut:]: i.size for i in s3[1].get_file_info(sel) if i.type == fs_mod.FileType.File}


def test_prune_carries_local_retention_to_the_destination(local, s3, tmp_path):
    """After a local expire, publish(prune=True) removes the expired versions' manifests and every object
    no remaining manifest names; what remains reads bit for bit; without prune nothing is deleted."""
    path = tmp_path / "store"
    shutil.copytree(local[0], path)
    _publish_to(path, s3, "pruned", include_log=True)
    before = _remote_data(s3, "pruned")
    with engine.UIHStore.open(path) as writer:
        writer.append(make_events(np.random.default_rng(4), range(10), 60, t0=6 * DAY, span=DAY))
        writer.seal(8 * DAY)
        writer.compact(full=True)
        removed = writer.expire(keep_versions=1, grace_s=0)
    assert removed["versions_removed"]
    kept = _publish_to(path, s3, "pruned", include_log=True)  # no prune: the destination only grows
    assert "versions_removed" not in kept and set(before) <= set(_remote_data(s3, "pruned"))
    stray = "segments/uploading-by-another-publish.parquet"  # named by no manifest yet: must survive
    with s3[1].open_output_stream(f"{BUCKET}/pruned/{stray}") as f:
        f.write(b"x" * 10)
    grown = _remote_data(s3, "pruned")
    published = sorted(int(rel.split("/")[-1][1:11]) for rel in grown if rel.startswith(f"{_manifest.DIR}/"))
    waiting = _publish_to(path, s3, "pruned", include_log=True, prune=True, grace_s=3600)
    assert waiting["versions_removed"] == [] and _remote_data(s3, "pruned") == grown  # successors too new
    got = _publish_to(path, s3, "pruned", include_log=True, prune=True, grace_s=0)
    local_files = set(_retention.data_files(path)) | {
        f"{_manifest.DIR}/{_manifest.path_of(path, v).name}" for v in _manifest.versions(path)}
    after = _remote_data(s3, "pruned")
    assert set(after) == local_files | {stray}  # exactly what the local store holds, and the upload in flight
    assert got["versions_removed"] == [v for v in published if v in removed["versions_removed"]]
    assert got["files_removed"] > 0 and got["bytes_freed"] == sum(
        n for rel, n in grown.items() if rel not in after and not rel.startswith(f"{_manifest.DIR}/"))
    with engine.UIHStore.open(f"s3://{BUCKET}/pruned", read_only=True, filesystem=s3[1]) as store, \
            engine.UIHStore.open(path, read_only=True) as ref:
        assert store.stats()["versions"] == _manifest.versions(path)
        assert store.to_table().equals(ref.to_table())


@pytest.mark.parametrize("prune", [False, True])
def test_publish_refuses_a_destination_holding_another_store(local, s3, tmp_path, prune):
    other = tmp_path / "other"
    with engine.UIHStore.create(other, columns=COLUMNS) as s:
        s.append(make_events(np.random.default_rng(5), range(3), 20, t0=0, span=DAY))
        s.seal(DAY)
    _publish_to(other, s3, f"shared{prune}")
    before = _remote_data(s3, f"shared{prune}")
    with pytest.raises(engine.UIHError, match="another store"):
        _publish_to(local[0], s3, f"shared{prune}", prune=prune)
    assert _remote_data(s3, f"shared{prune}") == before  # nothing copied over it, nothing deleted


def test_cli_prune(local, s3_env, tmp_path, capsys):
    path = tmp_path / "store"
    shutil.copytree(local[0], path)
    uri = f"s3://{BUCKET}/cliprune"
    assert uih_main(["publish", str(path), uri]) == 0
    with engine.UIHStore.open(path) as writer:
        n = len(writer.expire(keep_versions=2, grace_s=0)["versions_removed"])
    capsys.readouterr()
    assert uih_main(["publish", str(path), uri, "--prune", "--grace-s", "0"]) == 0
    assert f"pruned: {n} expired versions" in capsys.readouterr().out and n > 0
    with engine.UIHStore.open(uri, read_only=True) as store:
        assert store.stats()["versions"] == _manifest.versions(path)


def test_reader_of_a_version_pruned_while_it_opens_retries(local, s3, monkeypatch):
    """A remote reader whose version's log and manifest a prune removed while it opened them gets
    VersionError inside and retries a listed version, never a silently empty mutable tier."""
    from engine.serving import _log
    _publish_to(local[0], s3, "racing", include_log=True)
    uri = f"s3://{BUCKET}/racing"
    real_versions, real_recover = _manifest.versions, _log.recover
    listed = real_versions(_fs.resolve(uri, s3[1]))
    calls = []

    def recover(path, repair=False, acked=(0, 0), **kw):
        calls.append(str(path))
        if len(calls) == 1:  # as if pruned between loading the manifest and replaying its log
            monkeypatch.setattr(_manifest, "versions", lambda root: real_versions(root)[:-1])
            raise FileNotFoundError(path)
        return real_recover(path, repair, acked, **kw)
    monkeypatch.setattr(_log, "recover", recover)
    with engine.UIHStore.open(uri, read_only=True, filesystem=s3[1]) as store:
        assert len(calls) == 2 and store.version == listed[-2]


def test_prune_collects_what_a_dying_publish_or_prune_left(local, s3, tmp_path):
    """Objects of the store's folders that no manifest names go once older than orphan_age_s: the files of
    versions whose manifests a prune deleted before it died, and a dead upload's; younger ones (an upload
    in flight) and objects outside the store's folders stay; what remains reads bit for bit."""
    path = tmp_path / "store"
    shutil.copytree(local[0], path)
    _publish_to(path, s3, "orphans", include_log=True)
    with engine.UIHStore.open(path) as writer:
        writer.append(make_events(np.random.default_rng(5), range(10), 60, t0=6 * DAY, span=DAY))
        writer.seal(8 * DAY)
        writer.compact(full=True)
        writer.expire(keep_versions=1, grace_s=0)
    _publish_to(path, s3, "orphans", include_log=True)
    dest = _fs.resolve(f"s3://{BUCKET}/orphans", s3[1])
    for v in set(_manifest.versions(dest)) - set(_manifest.versions(path)):  # a prune died after this step
        s3[1].delete_file(f"{BUCKET}/orphans/{_manifest.DIR}/{_manifest.path_of(dest, v).name}")
    extra = {"segments/died-mid-upload.parquet": b"x" * 10, "notes/README.txt": b"not the store's"}
    for rel, data in extra.items():
        with s3[1].open_output_stream(f"{BUCKET}/orphans/{rel}") as f:
            f.write(data)
    local_files = set(_retention.data_files(path)) | {
        f"{_manifest.DIR}/{_manifest.path_of(path, v).name}" for v in _manifest.versions(path)}
    before = _remote_data(s3, "orphans")
    orphans = set(before) - local_files - {"notes/README.txt"}
    assert "segments/died-mid-upload.parquet" in orphans and len(orphans) > 1
    young = _publish_to(path, s3, "orphans", include_log=True, prune=True, grace_s=0, orphan_age_s=3600)
    assert young["orphans_removed"] == 0 and _remote_data(s3, "orphans") == before
    time.sleep(1.1)  # object times have whole seconds: every orphan is now strictly older than "now - 0"
    got = _publish_to(path, s3, "orphans", include_log=True, prune=True, grace_s=0, orphan_age_s=0)
    assert set(_remote_data(s3, "orphans")) == local_files | {"notes/README.txt"}
    assert got["orphans_removed"] == len(orphans) and got["bytes_freed"] == sum(before[r] for r in orphans)
    with pytest.raises(engine.InvalidArgument, match="orphan_age_s"):
        _publish_to(path, s3, "orphans", prune=True, orphan_age_s=-1)
    with engine.UIHStore.open(f"s3://{BUCKET}/orphans", read_only=True, filesystem=s3[1]) as store, \
            engine.UIHStore.open(path, read_only=True) as ref:
        assert store.to_table().equals(ref.to_table())
