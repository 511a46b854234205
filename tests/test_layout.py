"""The layout holds: the library stays light to import, and the import contracts are real checks."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "nvidia.dali", "cupy", "cudf", "numba.cuda", "ray", "dali_plugin", "uih"]


def _imported_after(stmt: str) -> set:
    code = f"import sys; {stmt}; print(' '.join(sorted(sys.modules)))"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT)
    return set(out.stdout.split())


def test_import_engine_pulls_in_no_gpu_or_framework_package():
    mods = _imported_after("import engine, kernels")
    loaded = [h for h in HEAVY if h in mods]
    assert not loaded, f"import engine loaded {loaded}; import them lazily through engine._deps"


def test_import_contract_fails_on_a_wrong_arrow(tmp_path):
    """lint-imports catches a library module that imports the app (the check is not vacuous)."""
    import shutil
    for pkg in ("engine", "kernels", "dali_plugin", "ray_plugin", "uih"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    lint = Path(sys.executable).with_name("lint-imports")
    ok = subprocess.run([str(lint)], cwd=tmp_path, capture_output=True, text=True,
                        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert ok.returncode == 0, ok.stdout[-2000:]
    with open(tmp_path / "engine" / "_ragged.py", "a") as f:
        f.write("\nimport uih.fmt  # noqa\n")
    broken = subprocess.run([str(lint)], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert broken.returncode != 0 and "BROKEN" in broken.stdout
