"""Corruption sweep: flip bytes of every file kind of a small store (log, segment, sidecar, index, manifest,
HEAD).

Each flip must give results identical to the undamaged store, or a CorruptionError: never silently
different data, never another exception type. CI flips a dense sample; ``-m slow`` flips every byte.
"""

import collections

import numpy as np
import pyarrow as pa
import pytest

import engine
from engine.serving import _manifest
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

RARE = 7
REQ = {"user_id": np.arange(-1, 7), "request_ts": np.full(8, 10**6)}
CI_FLIPS = {"log": 300, "segment": 300, "sidecar": 120, "index": 100, "sidecar-index": 60, "manifest": 150, "head": 80}
COUNTS = collections.Counter()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """Sealed events with a rare type (so a sidecar exists) and a log holding appends and an update."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("sweep") / "s"
    s = engine.UIHStore.create(root, columns=COLUMNS)
    ev = make_events(rng, range(6), 300, t0=0, span=1000)
    ev["action"] = np.where(rng.random(300) < 0.06, RARE, ev["action"] % 2).astype(np.int32)
    s.append(ev)
    s.seal(500)
    s.append(make_events(rng, range(6), 20, t0=1000, span=100))
    mut = s.to_table().filter(pa.compute.invert(s.to_table()["sealed"]))
    s.update({"user_id": mut["user_id"].to_numpy()[:3], "seq": mut["seq"].to_numpy()[:3], "item_id": [1, 2, 3]})
    thin = s.snapshot(REQ)
    s.close()
    m = _manifest.load(root)
    seg = m["segments"][0]
    files = {"log": m["log"], "segment": seg["main"]["file"], "sidecar": seg["rare"]["file"],
             "index": seg["main"]["index"], "sidecar-index": seg["rare"]["index"],
             "manifest": f"{_manifest.DIR}/{_manifest.path_of(root, m['version']).name}",
             "head": f"{_manifest.DIR}/{_manifest.HEAD}"}
    return root, thin, files, observe(root, thin)


def observe(root, thin):
    """Everything a reader can see: events, fat rows, and reconstructions that read the segment and sidecar."""
    with engine.UIHStore.open(root, read_only=True) as s:
        out = [s.version, s.to_table(), s.snapshot(REQ, materialize=True, max_len=1000)]
        for proj in (engine.Projection(["item_id", "ts", "dwell_ms"], max_len=64),
                     engine.Projection(["item_id", "seq"], max_len=64, actions=[RARE])):
            b = engine.Reconstructor(s, proj, device="cpu", prefetch=0).reconstruct(thin)
            out.append({k: np.array(v) for k, v in b.items()})
        return out


def same(a, b):
    if a[0] != b[0] or not a[1].equals(b[1]) or not a[2].equals(b[2]):
        return False
    return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a[3:], b[3:]))


def sweep(root, thin, rel, base, limit):
    path = root / rel
    raw = path.read_bytes()
    positions = range(len(raw)) if limit is None else \
        np.unique(np.linspace(0, len(raw) - 1, min(limit, len(raw))).astype(int))
    counts = collections.Counter()
    try:
        for pos in positions:
            bad = bytearray(raw)
            bad[pos] ^= 1 << (pos % 8)  # a single-bit flip, every bit position in turn
            path.write_bytes(bytes(bad))
            try:
                got = observe(root, thin)
            except engine.CorruptionError:
                counts["corruption"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - the point is that no other type may escape
                raise AssertionError(f"flip at byte {pos} of {rel} raised {type(e).__name__}: {e}") from e
            assert same(got, base), f"flip at byte {pos} of {rel} silently changed the data"
            counts["identical"] += 1
    finally:
        path.write_bytes(raw)
    counts["flips"] = len(positions)
    return counts


def _run(small_store, kind, limit):
    root, thin, files, base = small_store
    c = sweep(root, thin, files[kind], base, limit)
    COUNTS.update({f"{kind}:{k}": v for k, v in c.items()})
    print(f"\ncorruption sweep {kind}: {c['flips']} flips, {c['identical']} identical, "
          f"{c['corruption']} CorruptionError, 0 other")
    assert c["flips"] == c["identical"] + c["corruption"] and c["corruption"] > 0


@pytest.mark.parametrize("kind", list(CI_FLIPS))
def test_flipped_bytes_are_caught_or_harmless(small_store, kind):
    _run(small_store, kind, CI_FLIPS[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CI_FLIPS))
def test_every_flipped_byte_is_caught_or_harmless(small_store, kind):
    _run(small_store, kind, None)
