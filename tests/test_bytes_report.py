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
