"""bench/bench_bytes.py's JSON renders into REPORT.md: every tenant and layout, reads and writes against
their floors (the figures are whatever the last run measured; none is asserted)."""

import json
from pathlib import Path

from uih import report

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def test_bytes_section_shows_every_tenant_layout_and_day():
    d = json.loads((RESULTS / report.BYTES).read_text())
    text = report.from_results(RESULTS)
    section = text.split("\n## Bytes against their floors, per sidecar layout\n", 1)[1].split("\n## ", 1)[0]
    names = list(d["layouts"])
    assert len(names) >= 2 and "before" in names
    for t in d["tenants"]:
        row = next(line for line in section.splitlines() if line.startswith(t["name"] + " "))
        for n in names:
            assert f"{d['layouts'][n]['reads'][t['name']]['read_vs_floor']:.2f}x" in row
    for i, w in enumerate(d["layouts"][names[-1]]["writes"]):
        row = next(line for line in section.splitlines() if line.startswith(f"{w['day']} "))
        assert f"{w['total'] / w['floor']:.3f}x" in row, i


def test_planned_bytes_counts_each_planned_row_once(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    import engine
    from uih.amplification import planned_bytes
    from uih.workload import DAY_US, synthetic_store
    store = synthetic_store(tmp_path / "s", 20, 3000)
    req = {"user_id": np.tile(np.arange(20), 2), "request_ts": np.full(40, 31 * DAY_US)}  # each user twice
    pq.write_table(store.snapshot(req), tmp_path / "t.parquet")
    sidecar_rows = store.segments[0].parts["rare"].rows
    store.close()
    thin = [str(tmp_path / "t.parquet")]
    plain = planned_bytes(tmp_path / "s", thin, engine.Projection(["item_id"], max_len=20))
    assert plain["rows"] == 20 * 20 and plain["data"] > 0 and plain["metadata"] > 0
    # 20 events of types 3 and 4 lie in about 55 of a user's ~240 rows of the rare sidecar (types 2, 3, 4)
    typed = planned_bytes(tmp_path / "s", thin, engine.Projection(["item_id"], max_len=20, actions=[3, 4]))
    assert 20 * 20 <= typed["rows"] < 0.7 * sidecar_rows  # the typed cut: a few strides per user, not whole runs
