"""Published logs are checked, uploaded before their manifests, and republish repairs damaged objects."""

import shutil

import numpy as np
import pytest

import engine
from engine.serving import _fs, _manifest, _publish
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")

DAY = 86_400_000_000
BUCKET = "uih"  # the bucket conftest.py's s3 fixture creates


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small store: two seals and a compaction (so one log serves two versions), then a mutable tier
    of three log records; also the log's size after each of them (where a cut is not a torn tail)."""
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("integrity") / "store"
    ends = []
    with engine.UIHStore.create(path, columns=COLUMNS, event_type_column="action") as store:
        for day in range(2):
            store.append(make_events(rng, np.arange(6), 120, t0=day * DAY, span=DAY))
            store.seal((day + 1) * DAY)
        store.compact(full=True)
        for part in range(3):
            store.append(make_events(rng, np.arange(6), 40, t0=2 * DAY + part * DAY // 3, span=DAY // 3))
            ends.append((path / _manifest.load(path)["log"]).stat().st_size)
    return path, ends


@pytest.fixture
def local(built, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(built[0], path)
    return path


@pytest.fixture
def ends(built):
    return built[1]


def _acknowledge(path, known: bool = True):
    """Record in the newest manifest how many log bytes it acknowledged (``log_bytes``), as a commit after
    the last append would, or (``known=False``) leave the key out, as older stores' manifests do. The
    manifest is rewritten in place, so HEAD (which records its checksum) goes, as in a store of a format
    before HEAD: these tests are about the published log, not the local commit chain."""
    m = {k: v for k, v in _manifest.load(path).items() if k != "log_bytes"}
    n = (path / m["log"]).stat().st_size if known else None
    _manifest.write(path, {**m, "log_bytes": n} if known else m)
    (path / _manifest.DIR / _manifest.HEAD).unlink(missing_ok=True)
    return n


def _publish_to(path, s3, prefix, **kw):
    return engine.publish(path, f"s3://{BUCKET}/{prefix}", filesystem=s3[1], **kw)


def _open(s3, prefix):
    return engine.UIHStore.open(f"s3://{BUCKET}/{prefix}", read_only=True, filesystem=s3[1])


def _key(prefix, rel):
    return f"{BUCKET}/{prefix}/{rel}"


def _read(s3, key) -> bytes:
    with s3[1].open_input_stream(key) as f:
        return f.readall()


def _write(s3, key, data: bytes) -> None:
    with s3[1].open_output_stream(key) as f:
        f.write(data)


def test_missing_published_log_is_a_corruption_error(local, s3):
    _publish_to(local, s3, "nolog", include_log=True)
    log = _manifest.load(local)["log"]
    with _open(s3, "nolog") as store:
        assert store.stats()["mutable_events"] == 120
    s3[1].delete_file(_key("nolog", log))
    with pytest.raises(engine.CorruptionError, match=rf"s3://{BUCKET}/nolog/{log} .*include_log=True"):
        _open(s3, "nolog")


@pytest.mark.parametrize("acknowledged", [True, False], ids=["log_bytes", "older-manifest"])
@pytest.mark.parametrize("cut", ["record-boundary", "mid-record"])
def test_short_published_log(local, ends, s3, acknowledged, cut):
    """A published log shorter than the manifest's ``log_bytes`` is a CorruptionError, even cut at a record
    boundary (which replay cannot tell from a shorter log); a manifest without ``log_bytes`` (older stores)
    cannot tell, and the replay keeps what is there."""
    n = _acknowledge(local, known=acknowledged)
    prefix = f"short-{acknowledged}-{cut}"
    _publish_to(local, s3, prefix, include_log=True)
    key = _key(prefix, _manifest.load(local)["log"])
    data = _read(s3, key)
    assert ends[-1] == len(data) and n in (None, len(data))
    keep = ends[-2] if cut == "record-boundary" else ends[-2] + 10
    _write(s3, key, data[:keep])
    if acknowledged:
        with pytest.raises(engine.CorruptionError, match=rf"has {keep} bytes, but store version \d+ acknowledged {n}"):
            _open(s3, prefix)
    else:
        with _open(s3, prefix) as store:
            assert store.stats()["mutable_events"] == 80  # the third record is gone, and nothing can say so


def test_short_local_log_for_a_read_only_reader(local, ends):
    n = _acknowledge(local)
    log = local / _manifest.load(local)["log"]
    with open(log, "r+b") as f:
        f.truncate(ends[-2])
    with pytest.raises(engine.CorruptionError, match=f"acknowledged {n}"):
        engine.UIHStore.open(local, read_only=True)


def test_publish_refuses_a_local_log_shorter_than_acknowledged(local, s3):
    n = _acknowledge(local)
    log = local / _manifest.load(local)["log"]
    with open(log, "r+b") as f:
        f.truncate(n - 1)
    with pytest.raises(engine.CorruptionError, match=f"shorter than the {n} bytes"):
        _publish_to(local, s3, "refused", include_log=True)
    dest = _fs.resolve(f"s3://{BUCKET}/refused", s3[1])
    assert _manifest.load(local)["version"] not in _manifest.versions(dest)  # its manifest was not published


def test_a_log_left_out_on_purpose_gives_an_empty_tier_and_nothing_else_does(local, s3):
    got = _publish_to(local, s3, "leftout")
    dest = _fs.resolve(f"s3://{BUCKET}/leftout", s3[1])
    marks = {v: f"{BUCKET}/leftout/{_publish.left_out_marker(v)}" for v in got["versions"]}
    assert all(s3[1].get_file_info(k).size == 0 for k in marks.values())
    assert _manifest.versions(dest) == got["versions"]  # the markers are not taken for versions
    with _open(s3, "leftout") as store:
        assert store.stats()["mutable_events"] == 0 and store.stats()["sealed_events"] == 240
    s3[1].delete_file(marks[got["versions"][-1]])
    with pytest.raises(engine.CorruptionError, match="is missing"):
        _open(s3, "leftout")
    # publishing the log later replaces the markers: a log deleted afterwards is damage again
    _publish_to(local, s3, "leftout", include_log=True)
    assert all(s3[1].get_file_info(k).type == _fs.pafs.FileType.NotFound for k in marks.values())
    with _open(s3, "leftout") as store:
        assert store.stats()["mutable_events"] == 120


@pytest.mark.parametrize("include_log", [True, False])
def test_a_reader_opening_between_any_two_uploads_sees_a_whole_version(local, s3, monkeypatch, include_log):
    """Before every upload (segments, logs, manifests) a reader opens the destination: it must succeed, and
    see the mutable tier of the version it got. Each version's log goes up before its manifest."""
    _acknowledge(local)
    order, seen = [], []
    real_upload, real_mark = _publish._upload, _publish._mark

    def reader_first(rel):
        dest = _fs.resolve(f"s3://{BUCKET}/between{include_log}", s3[1])
        if _manifest.versions(dest):
            with _open(s3, f"between{include_log}") as store:  # raises if a manifest is up before its log or marker
                seen.append((store.version, store.stats()["mutable_events"]))
        order.append(rel)

    monkeypatch.setattr(_publish, "_upload", lambda src, dest, rel: reader_first(rel) or real_upload(src, dest, rel))
    monkeypatch.setattr(_publish, "_mark", lambda dest, rel: reader_first(rel) or real_mark(dest, rel))
    got = _publish_to(local, s3, f"between{include_log}", include_log=include_log)
    assert got["versions"] == _manifest.versions(local) and seen
    for v in got["versions"]:
        m = _manifest.load(local, v)
        manifest = order.index(f"{_manifest.DIR}/{_manifest.path_of(local, v).name}")
        assert (m["log"] if include_log else _publish.left_out_marker(v)) in order[:manifest]
    assert {n for _, n in seen} == ({120} if include_log else {0})  # each version's tail: 120 events in its log


def test_republish_repairs_damaged_objects_of_the_same_size(local, s3):
    first = _publish_to(local, s3, "repair", include_log=True)
    assert first["files_repaired"] == 0
    m = _manifest.load(local)
    damaged = [m["segments"][-1]["main"]["file"], m["log"],
               f"{_manifest.DIR}/{_manifest.path_of(local, m['version']).name}"]
    for rel in damaged:
        key = _key("repair", rel)
        data = bytearray(_read(s3, key))
        data[len(data) // 2] ^= 0x04
        _write(s3, key, bytes(data))
    again = _publish_to(local, s3, "repair", include_log=True)
    assert again["files_repaired"] == again["files_copied"] == len(damaged)
    assert again["bytes_copied"] == sum((local / rel).stat().st_size for rel in damaged)
    for rel in damaged:
        assert _read(s3, _key("repair", rel)) == (local / rel).read_bytes()
    with _open(s3, "repair") as store, engine.UIHStore.open(local, read_only=True) as ref:
        assert store.to_table().equals(ref.to_table())
    third = _publish_to(local, s3, "repair", include_log=True)
    assert third["files_copied"] == 0 and third["files_skipped"] == first["files_copied"]


def test_prune_removes_the_markers_of_removed_versions(local, s3):
    _publish_to(local, s3, "prunemarks")
    with engine.UIHStore.open(local) as writer:
        gone = writer.expire(keep_versions=1, grace_s=0)["versions_removed"]
    assert gone
    got = _publish_to(local, s3, "prunemarks", prune=True, grace_s=0)
    assert got["versions_removed"] == gone
    for v in _manifest.versions(_fs.resolve(f"s3://{BUCKET}/prunemarks", s3[1])):
        assert s3[1].get_file_info(f"{BUCKET}/prunemarks/{_publish.left_out_marker(v)}").size == 0
    for v in gone:
        assert s3[1].get_file_info(f"{BUCKET}/prunemarks/{_publish.left_out_marker(v)}").type == \
            _fs.pafs.FileType.NotFound
