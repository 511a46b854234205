"""The report's figures read well: whole-day ticks, legends off the data, a linear read axis, notes."""

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from uih import report  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "bench.json"


@pytest.fixture(scope="module")
def R():
    r = json.loads(RESULTS.read_text())
    for d in r["writes"]["per_day"]:  # JSON made the union lengths' int keys strings
        d["fat"] = {int(k): v for k, v in d["fat"].items()}
    return r


def _inside(fig, ax, artist) -> bool:
    fig.canvas.draw()
    a, b = ax.get_window_extent(), artist.get_window_extent()
    return b.x0 < a.x1 and b.x1 > a.x0 and b.y0 < a.y1 and b.y1 > a.y0


@pytest.mark.parametrize("draw", [report._plot_writes, report._plot_write_shares], ids=["per_day", "shares"])
def test_write_plots_tick_whole_days_and_keep_the_legend_off_the_axes(R, draw):
    fig = draw(plt, R)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [d["day"] for d in R["writes"]["per_day"]]
    assert not _inside(fig, ax, ax.get_legend())
    assert "floor" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)


def test_the_floor_marks_stay_inside_the_axes(R):
    """One segment per day's bar (no oversized marker spilling past the axes or the legend)."""
    fig = report._plot_write_shares(plt, R)
    ax = fig.axes[0]
    floor = [c for c in ax.collections if c.get_label() == "floor"][0]
    lo, hi = ax.get_xlim()
    xs = [x for seg in floor.get_segments() for x, _ in seg]
    assert len(xs) == 2 * len(R["writes"]["per_day"]) and lo < min(xs) and max(xs) < hi
    plt.close(fig)


def test_reads_use_a_linear_axis_and_say_the_ratio(R):
    fig = report._plot_reads(plt, R)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    assert sum(t.get_text().startswith("fat reads ") for t in ax.texts) == len(R["reads"]["tenants"])
    plt.close(fig)


def test_peers_and_scaling_explain_their_odd_bars(R):
    fig = report._plot_peers(plt, R)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any("not a loader" in t for t in labels)
    plt.close(fig)
    fig = report._plot_scaling(plt, R)
    assert any("beat a copy" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_plots_writes_every_figure(R, tmp_path):
    figs = report.plots(R, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figs.values())
