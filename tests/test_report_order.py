"""bench/REPORT.md and the docs' tables are what the code renders from the checked-in bench/results JSON.

No timing is asserted: the figures are whatever the last runs measured; what is checked is that the
training-order and threading-layer sections render from them, show their numbers, and that REPORT.md and
the docs' generated tables were written by the code, not edited by hand.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest

from uih import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "docs"))
import gen_tables  # noqa: E402


def load(name) -> dict:
    return json.loads((RESULTS / name).read_text())


def section(text: str, title: str) -> str:
    """The text of ``## title`` up to the next second-level heading."""
    assert f"\n## {title}\n" in text, f"REPORT.md has no section {title!r}"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_md_is_what_the_code_renders_from_the_results():
    assert report.from_results(RESULTS) == (ROOT / "bench" / "REPORT.md").read_text(), (
        "bench/REPORT.md differs from its rendering: run python -m uih.report --from-results bench/results "
        "(never edit REPORT.md by hand)")


def test_training_order_section_shows_every_tenant_order_and_seed():
    order, ne = load(report.ORDER), load(report.ORDER_NE)
    text = section(report.from_results(RESULTS), "Training order")
    for t in order["tenants"]:
        rows = [line for line in text.splitlines() if line.startswith(t["tenant"] + " ")]
        assert len(rows) == 2, t["tenant"]  # its speed row and its bytes row
        speed, read = rows
        for k in report.ORDERS:
            r = t["runs"][k]
            assert f"{r['examples_per_s']:,.0f} ({min(r['eps_each']):,.0f}-{max(r['eps_each']):,.0f})" in speed
            assert report.mb(r["read_bytes"]) in read
        for k in ("shuffle_vs_stream", "shuffle_vs_permutation", "permutation_vs_stream", "shuffle_vs_fat"):
            s = t["ratios"][k]
            assert f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" in speed, k
    for o in report.NE_ORDERS:
        s = ne["summary"][o]
        row = next(line for line in text.splitlines() if line.startswith(report.ORDERS[o] + " "))
        assert all(f"{x:.4f}" in row for x in (*s["ne"], s["min"], s["median"], s["max"])), o


def test_threading_section_shows_every_layer_and_length():
    d = load(report.THREADING)
    text = section(report.from_results(RESULTS), "Numba threading layer")
    rows = [line for line in text.splitlines() if line.split(" ")[0].replace(",", "").isdigit()]
    assert len(rows) == len(d["rows"])
    for line, r in zip(rows, d["rows"], strict=True):
        cells = [c.strip() for c in line.split("|")]
        assert cells[:3] == [f"{r['max_len']:,}", r["layer"], f"{r['median_ms']:.1f}"]
        assert cells[5] == f"{r['vs_omp']:.2f}x"


def test_a_run_without_the_extra_results_renders_without_their_sections(tmp_path):
    """A quick run's results folder holds none of the scripts' files: REPORT.md has just uih bench's sections."""
    shutil.copy(RESULTS / "bench.json", tmp_path / "bench.json")
    text = report.from_results(tmp_path)
    assert "## Training order" not in text and "## Numba threading layer" not in text
    assert text.startswith("# UIH late materialization: benchmark report")
    shutil.copy(RESULTS / report.THREADING, tmp_path)
    assert "## Numba threading layer" in report.from_results(tmp_path)


def test_the_entry_point_writes_the_report(tmp_path, capsys):
    out = tmp_path / "REPORT.md"
    assert report.main(["--from-results", str(RESULTS), "--out", str(out)]) == 0
    assert out.read_text() == report.from_results(RESULTS)


@pytest.mark.parametrize("page, names", [("performance.md", ["order_speed", "order_bytes", "threading_layers"]),
                                         ("training-order.md", ["order_speed", "order_bytes", "order_ne"])])
def test_the_docs_carry_the_same_tables_and_are_current(page, names):
    text = (ROOT / "docs" / page).read_text()
    for name in names:
        assert f"<!-- gen_tables: {name} -->" in text, f"docs/{page} lacks the {name} table"
        headers, rows = getattr(report, name)(load({"order_ne": report.ORDER_NE,
                                                    "threading_layers": report.THREADING}.get(name, report.ORDER)))
        assert "| " + " | ".join(headers) + " |" in text
        assert all("| " + " | ".join(r) + " |" in text for r in rows), f"docs/{page}: {name} rows"
    assert gen_tables.main(["--check"]) == 0, "run: python docs/gen_tables.py"
