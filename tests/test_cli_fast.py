"""The ``uih`` command for a new user: ``--version``; help and argument errors answer without loading the
engine (so in a fraction of a second); inspect points to the store inside a demo folder; publish counts
what it copied; bench writes into a working folder, not into the tracked bench/."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uih import cli

ROOT = Path(__file__).resolve().parent.parent


def run(*argv, code: str | None = None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "uih", *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_version():
    from importlib.metadata import version
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"uih {version('uih-latemat')}"


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["demo", "--users", "0"], ["nope"],
                                  ["publish", "a", "s3://b", "--grace-s", "-1"]],
                         ids=["help", "demo-help", "bad-size", "bad-command", "bad-seconds"])
def test_help_and_argument_errors_load_no_engine(argv):
    """What makes them fast: neither the engine nor Numba (seconds to import) is loaded to answer."""
    proc = run(code=f"""import sys
from uih.cli import main
try:
    main({argv!r})
except SystemExit as e:
    print('exit', e.code, file=sys.stderr)
heavy = sorted(m for m in ('engine', 'numba', 'pyarrow', 'torch', 'kernels') if m in sys.modules)
print('heavy', heavy, file=sys.stderr)""")
    assert "heavy []" in proc.stderr, proc.stderr
    if argv[-1] != "--help":
        assert "exit 2" in proc.stderr and proc.stderr.count("error") == 1


def test_publish_defaults_are_the_engines():
    from engine.serving._publish import DEFAULT_ORPHAN_AGE_S
    from engine.serving._retention import DEFAULT_GRACE_S
    assert (cli.GRACE_S, cli.ORPHAN_AGE_S) == (DEFAULT_GRACE_S, DEFAULT_ORPHAN_AGE_S)


def small_store(path: Path, versions: int = 3):
    from engine import UIHStore
    rng = np.random.default_rng(0)
    store = UIHStore.create(path, columns={"item_id": "int64", "action": "int32"})
    for v in range(versions):
        store.append({"user_id": rng.integers(0, 5, 50), "ts": np.arange(50) + 100 * v,
                      "item_id": rng.integers(0, 1000, 50), "action": rng.integers(0, 3, 50).astype(np.int32)})
        store.seal(100 * v + 100)
    store.close()


def test_inspect_points_to_the_store_inside_a_folder(tmp_path, capsys):
    small_store(tmp_path / "uih_demo" / "store")
    assert cli.main(["inspect", str(tmp_path / "uih_demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"run uih inspect {tmp_path / 'uih_demo' / 'store'}"), err
    assert cli.main(["inspect", str(tmp_path / "elsewhere")]) == 2  # nothing inside: the engine's own message
    assert "uih inspect" not in capsys.readouterr().err


def test_publish_to_a_fresh_folder_counts_every_file_once(tmp_path, capsys):
    """Files several versions share are copied once and never counted as "already there"."""
    small_store(tmp_path / "store")
    dest = tmp_path / "published"
    assert cli.main(["publish", str(tmp_path / "store"), str(dest)]) == 0
    files = [p for p in dest.rglob("*") if p.is_file()]
    out = capsys.readouterr().out
    assert f", {len(files)} files copied (" in out and ", 0 already there" in out and len(files) > 3, out
    assert cli.main(["publish", str(tmp_path / "store"), str(dest)]) == 0
    out = capsys.readouterr().out
    assert ", 0 files copied (" in out and f", {len(files)} already there" in out, out


def test_bench_writes_into_a_working_folder_by_default(tmp_path, monkeypatch):
    from uih import report

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(report, "build", stop)  # only where it writes matters here
    monkeypatch.setattr(report, "warm_up", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Stop):
        cli.main(["bench", "--quick", "--no-progress"])
    assert [p.name for p in tmp_path.iterdir()] == [report.DEFAULT_OUT]
    with pytest.raises(SystemExit):  # one place or the other
        cli.main(["bench", "--out", "x", "--update-repo"])


def test_object_storage_errors_advise_what_the_command_line_can_do(capsys):
    """The engine's advice (``filesystem=``) is for Python; the CLI's says where the options go instead."""
    assert cli.main(["inspect", "s3://bucket/store?no_such_option=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "filesystem=" not in err[0], err
    assert "?endpoint_override=" in err[0] and "AWS_ENDPOINT_URL" in err[0]
