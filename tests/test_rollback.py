"""No silent rollback (SPEC §4): a lost, damaged or replaced manifest, or a lost file of a retained
version, is a CorruptionError naming it, for every kind of open; no open, expire or orphan cleanup
deletes what may belong to a version newer than the newest readable manifest. A crash mid-seal (files
of a version that was never committed) still recovers, and its leftovers are removed."""

import json
import zlib

import pytest
from test_store_integrity import tree

import engine
from engine.serving import _manifest, _retention
from uih.cli import main
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 86_400_000_000
POSITIONS = {"oldest": 2, "middle": 3, "newest": 4}  # the retained versions of the store below
OPENS = {"writer": {}, "read_only": {"read_only": True}, "pinned-newest": {"version": 4},
         "pinned-oldest": {"version": 2}}


@pytest.fixture
def versions(tmp_path, rng):
    """A closed store of versions 2..4 (0 and 1 expired), each sealed with its own segment and log, and
    mutable events in the newest log; returns (root, what every reader sees at the newest version)."""
    root = tmp_path / "s"
    with engine.UIHStore.create(root, columns=COLUMNS) as s:
        for d in range(4):
            ev = make_events(rng, range(6), 200, t0=d * DAY, span=DAY)
            ev["action"][:3] = 7  # a rare type, so every segment has a sidecar
            s.append(ev)
            s.seal((d + 1) * DAY)
        s.expire(keep_versions=3, grace_s=0)
        s.append(make_events(rng, range(6), 30, t0=5 * DAY, span=DAY))
        assert _manifest.versions(root) == [2, 3, 4]
        return root, s.to_table()


def own_files(root, v):
    """Files that version ``v`` added: its segment's data, index and sidecar files, and its log."""
    m = _manifest.load(root, v)
    prev = _retention.files_of(_manifest.load(root, v - 1)) if v - 1 in _manifest.versions(root) else set()
    seg = m["segments"][-1]
    return {"segment": seg["main"]["file"], "index": seg["main"]["index"], "sidecar": seg["rare"]["file"],
            "sidecar-index": seg["rare"]["index"], "log": m["log"],
            "manifest": f"{_manifest.DIR}/{_manifest.path_of(root, v).name}"}, prev


def open_and_read(root, kw):
    with engine.UIHStore.open(root, **kw) as s:
        return s.to_table()


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("kind", ["manifest", "segment", "index", "sidecar", "sidecar-index", "log"])
def test_a_lost_file_is_corruption_for_every_open_and_nothing_is_deleted(versions, kind, position):
    root, want = versions
    v = POSITIONS[position]
    files, _ = own_files(root, v)
    (root / files[kind]).unlink()
    before = tree(root)
    for name, kw in OPENS.items():
        opened = kw.get("version", 4)
        if kind == "manifest":
            fails = True  # the whole store: a version inside HEAD's retained range is gone
        elif kind == "log":
            fails = v == 4 and "version" not in kw  # only a reader of the newest version replays a log
        else:
            fails = opened >= v  # every later version still names the segment
        if fails:
            with pytest.raises(engine.CorruptionError, match=files[kind].split("/")[-1]) as e:
                open_and_read(root, kw)
            assert "restore" in str(e.value).lower(), (name, str(e.value))
        else:
            open_and_read(root, kw)
        assert tree(root) == before, f"{name} open of a store missing its {position} {kind} changed files"
    assert not (root / _manifest.QUARANTINE).exists()


def test_the_issue_case_newest_manifest_removed_is_corruption_not_version_3(versions):
    root, _ = versions
    (root / _manifest.DIR / "v0000000004.json").unlink()
    before = tree(root)
    for kw in ({}, {"read_only": True}):
        with pytest.raises(engine.CorruptionError, match=r"newest committed version 4 has no manifest.*"
                                                          r"v0000000004\.json.*[Rr]estore"):
            engine.UIHStore.open(root, **kw)
    assert tree(root) == before  # the writer open deleted none of version 4's segments, index or log


def test_expire_deletes_nothing_once_the_newest_manifest_is_lost(versions):
    root, _ = versions
    with engine.UIHStore.open(root) as s:
        (root / _manifest.DIR / "v0000000004.json").unlink()
        before = tree(root)
        with pytest.raises(engine.CorruptionError, match="v0000000004"):
            s.expire(keep_versions=1, grace_s=0)
        assert tree(root) == before
        s._lock.release()  # the handle must not write HEAD back over the evidence
        s._lock, s._log = None, None


def _rewrite(root, v, change):
    body = _manifest.load(root, v)
    change(body)
    text = json.dumps(body, sort_keys=True)
    _manifest.path_of(root, v).write_text(json.dumps({"crc32": zlib.crc32(text.encode()), "body": body},
                                                     sort_keys=True))


@pytest.mark.parametrize("v", [3, 4])
def test_a_manifest_replaced_by_another_valid_one_is_corruption(versions, v):
    root, _ = versions
    _rewrite(root, v, lambda b: b.update(segments=b["segments"][:-1]))  # checksummed, but not what was committed
    for kw in ({}, {"read_only": True}):
        with pytest.raises(engine.CorruptionError, match=f"v000000000{v}.json"):
            engine.UIHStore.open(root, **kw)


def test_a_damaged_head_is_corruption_naming_it(versions):
    root, _ = versions
    head = root / _manifest.DIR / _manifest.HEAD
    raw = bytearray(head.read_bytes())
    raw[len(raw) // 2] ^= 1
    head.write_bytes(bytes(raw))
    for kw in OPENS.values():
        with pytest.raises(engine.CorruptionError, match="HEAD.*restore it"):
            engine.UIHStore.open(root, **kw)


def test_crash_mid_seal_before_the_manifest_rename_recovers_and_removes_its_leftovers(versions, rng):
    """The files of version 5 are written, its manifest never renamed (HEAD still names 4): legitimate
    orphans. Every acknowledged event is in version 4's log; the writer open deletes the leftovers."""
    root, want = versions
    head = (root / _manifest.DIR / _manifest.HEAD).read_bytes()
    with engine.UIHStore.open(root) as s:
        s.seal(10 * DAY)
        leftovers = _retention.files_of(s._manifest) - _retention.files_of(_manifest.load(root, 4))
        s._lock.release()  # killed right after the rename ...
        s._lock, s._log = None, None
    _manifest.path_of(root, 5).unlink()  # ... or rather right before it: no manifest 5, HEAD unchanged
    (root / _manifest.DIR / _manifest.HEAD).write_bytes(head)
    assert leftovers and all((root / rel).exists() for rel in leftovers)
    assert open_and_read(root, {"read_only": True}).equals(want)
    with engine.UIHStore.open(root) as s:
        assert s.version == 4 and s.to_table().equals(want)
    assert not any((root / rel).exists() for rel in leftovers)
    assert not (root / _manifest.QUARANTINE).exists()


def test_accepting_a_rollback_quarantines_the_newer_files_and_inspect_lists_them(versions, capsys):
    """Removing HEAD too says "roll back": the writer open then cannot tell the newer version's files
    from a crash's leftovers, so it moves them into the quarantine instead of deleting them."""
    root, _ = versions
    files, prev = own_files(root, 4)
    newer = _retention.files_of(_manifest.load(root, 4)) - prev  # its segment's parts and its log
    sizes = {rel: (root / rel).stat().st_size for rel in newer}
    (root / files["manifest"]).unlink()
    (root / _manifest.DIR / _manifest.HEAD).unlink()
    with engine.UIHStore.open(root) as s:
        assert s.version == 3
        got = s.stats()["quarantined"]
    assert got == {f"{_manifest.QUARANTINE}/{rel}": n for rel, n in sizes.items()}
    assert all((root / rel).read_bytes() for rel in got) and not any((root / rel).exists() for rel in newer)
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "quarantined files" in out and all(rel in out for rel in got)
    with engine.UIHStore.open(root) as s:  # later opens keep them, and expire never touches them
        s.expire(keep_versions=1, grace_s=0)
    assert set(_retention.quarantined(root)) == set(got)


def test_expire_records_the_new_oldest_version_before_removing_manifests(versions):
    root, _ = versions
    with engine.UIHStore.open(root) as s:
        s.expire(keep_versions=1, grace_s=0)
    assert _manifest.read_head(root)["oldest"] == 4 and _manifest.versions(root) == [4]
    open_and_read(root, {"read_only": True})
