"""The ``uih`` command line: a bad size, count or duration is one line on stderr and exit code 2 (no
traceback, nothing run); the demo's rerun deletes only what its marker lists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uih.cli import main
from uih.replay import MARKER

ROOT = Path(__file__).resolve().parent.parent
# the smallest workload the CLI accepts: one user, one event, one day
SMALLEST = ["--users", "1", "--days", "1", "--median-history", "1", "--batch-size", "1", "--no-progress"]

BAD = {
    "users-0": ["demo", "--users", "0"],
    "users-negative": ["demo", "--users", "-5"],
    "users-fraction": ["demo", "--users", "1.5"],
    "users-word": ["demo", "--users", "many"],
    "users-huge": ["demo", "--users", str(2**40)],
    "median-history-huge": ["demo", "--median-history", "100000000"],
    "days-0": ["demo", "--days", "0"],
    "median-history-0": ["demo", "--median-history", "0"],
    "batch-size-0": ["demo", "--batch-size", "0"],
    "batch-size-negative": ["demo", "--batch-size", "-1"],
    "grace-negative": ["publish", "a", "s3://b/c", "--prune", "--grace-s", "-1"],
    "grace-nan": ["publish", "a", "s3://b/c", "--prune", "--grace-s", "nan"],
    "grace-inf": ["publish", "a", "s3://b/c", "--prune", "--grace-s", "inf"],
    "orphan-age-negative": ["publish", "a", "s3://b/c", "--prune", "--orphan-age-s", "-3"],
    "orphan-age-word": ["publish", "a", "s3://b/c", "--orphan-age-s", "day"],
}


def one_line_error(err: str, option: str):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0] and option in lines[0], lines[0]


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_number_is_one_line_and_exit_code_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "demo" else argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    one_line_error(err, next(a for a in reversed(argv) if a.startswith("--")))
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("argv", [BAD["users-0"], BAD["users-negative"], BAD["days-0"], BAD["median-history-0"]],
                         ids=["users-0", "users-negative", "days-0", "median-history-0"])
def test_python_m_uih_refuses_bad_sizes_in_one_line(argv, tmp_path):
    """The reported cases end to end: the process exits 2 with one line on stderr, no warning, no run."""
    proc = subprocess.run([sys.executable, "-m", "uih", *argv, "--out", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    one_line_error(proc.stderr, argv[1])
    assert not (tmp_path / "out").exists()


def test_an_engine_error_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "f"), *SMALLEST]) == 2
    one_line_error(capsys.readouterr().err, "is a file")


def demo(out: Path):
    proc = subprocess.run([sys.executable, "-m", "uih", "demo", "--out", str(out), *SMALLEST], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_demo_rerun_deletes_only_what_its_marker_lists(tmp_path):
    out = tmp_path / "demo"
    demo(out)
    listed = json.loads((out / MARKER).read_text())
    assert {"store", "thin", "fat"} <= set(listed)
    assert {p.name for p in out.iterdir()} <= {MARKER, *listed}  # it lists everything it left
    (out / "fat_notes.txt").write_text("mine")  # a user's file, named like a fat-row output folder
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("mine too")
    (out / "store" / "stray").write_text("x")
    demo(out)  # the rerun replaces its own outputs
    assert not (out / "store" / "stray").exists()
    assert (out / "fat_notes.txt").read_text() == "mine" and (out / "notes" / "a.txt").read_text() == "mine too"
