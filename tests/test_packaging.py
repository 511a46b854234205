"""The install paths stay consistent: environment.yml vs pyproject, the CPU pin, the CLI entry point."""

import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAME = {"torch": "pytorch-gpu", "numba-cuda": "numba-cuda"}
PIP_ONLY = {"nvidia-dali-cuda120"}


def _name(req: str) -> str:
    for sep in "<>=!~[ ;":
        req = req.split(sep)[0]
    return req.strip().lower()


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][:3] == ["rapidsai", "conda-forge", "nvidia"]
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    pip_names = {_name(p) for p in pip}
    assert {"cudf", "cupy", "numba", "numba-cuda", "pytorch-gpu", "pyarrow"} <= conda
    assert "-e ." in pip and PIP_ONLY <= pip_names
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in map(_name, project["dependencies"]):
        where = pip_names if dep in PIP_ONLY else conda
        assert CONDA_NAME.get(dep, dep) in where, f"{dep} is in pyproject but not in environment.yml"


def test_cpu_path_never_installs_cudf_and_pins_cpu_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(_name(d).startswith("cudf") for d in project["dependencies"])
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme and "environment.yml" in readme


def test_import_does_not_pull_gpu_libraries():
    code = ("import sys, engine, kernels, dali_plugin; "
            "bad = [m for m in ('cudf', 'cupy', 'numba.cuda') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_for_every_command():
    for cmd in ([], ["demo"], ["bench"], ["inspect"]):
        out = subprocess.run([sys.executable, "-m", "uih", *cmd, "--help"], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "usage: uih" in out.stdout
