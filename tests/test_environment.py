"""environment.yml (the conda GPU path) against pyproject.toml (the pip path) and against what the pinned
packages themselves require: the same packages, pins that overlap, and no known conflict.

Conda cannot run in CI here, so the requirements of the packages we pin are data below, copied from their
own metadata (``pip download --no-deps cudf-cu12==X`` and ``numba-cuda==Y``, then Requires-Dist). A pin is
checked against the released versions listed in ``RELEASES``: every release the environment allows must
satisfy every requirement on that package, and at least one must satisfy pyproject.toml too.
"""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent

# conda name -> pip name, where they differ (CUDA 12 builds on the pip side)
PIP_NAME = {"pytorch-gpu": "torch", "cupy": "cupy-cuda12x", "cudf": "cudf-cu12"}
# on one side only, on purpose: conda's own packages, and what pip resolves as a dependency
CONDA_ONLY = {"python", "pip", "cuda-version", "cuda-core"}

# Released versions each check walks (enough to cross every bound below).
RELEASES = {
    "numba": "0.59.1 0.60.0 0.61.0 0.61.2 0.62.0 0.63.1 0.64.0 0.65.0 0.66.0 0.67.0 0.68.1",
    "numba-cuda": "0.10.0 0.15.2 0.19.1 0.19.2 0.20.0 0.21.3 0.22.0 0.22.2 0.23.0 0.24.0 0.26.0 0.28.2 0.29.0 "
                  "0.30.0 0.30.1 0.30.2 0.30.3 0.30.4 0.31.0",
    "numpy": "1.23.5 1.26.4 2.0.2 2.1.3 2.2.6 2.3.5 2.4.6 3.0.0",
    "pyarrow": "15.0.2 17.0.0 18.1.0 19.0.1 21.0.0 23.0.1 24.0.0 26.0.1",
    "cupy-cuda12x": "13.5.1 13.6.0 14.0.0 14.0.1 14.1.0 14.2.0",
    "cudf-cu12": "24.10.1 25.10.0 25.12.0 26.2.1 26.6.0 26.8.1 26.10.2",
    "cuda-core": "0.3.2 0.5.1 1.0.0 1.2.2 2.0.0",
    "python": "3.10.14 3.11.7 3.12.4 3.13.1",
    "cuda-version": "11.8 12.0 12.4 12.6 12.8 12.9 13.0",
}

# What each cudf release requires (Requires-Dist of its cudf-cu12 wheel), keyed by cudf's major.minor.
CUDF_REQUIRES = {
    "25.10": {"numba-cuda": ">=0.19.1,<0.20.0a0", "numba": ">=0.60.0,<0.62.0a0", "numpy": ">=1.23,<3.0a0",
              "pyarrow": ">=15.0.0", "cupy-cuda12x": ">=13.6.0", "python": ">=3.10", "cuda-version": "==12.*"},
    "25.12": {"numba-cuda": ">=0.19.1,<0.20.0a0", "numba": ">=0.60.0,<0.62.0a0", "numpy": ">=1.23,<3.0a0",
              "pyarrow": ">=15.0.0", "cupy-cuda12x": ">=13.6.0", "python": ">=3.10", "cuda-version": "==12.*"},
    "26.2": {"numba-cuda": ">=0.22.2,<0.23.0", "numba": ">=0.60.0,<0.62.0", "numpy": ">=1.23,<3.0",
             "pyarrow": ">=15.0.0", "cupy-cuda12x": ">=13.6.0", "python": ">=3.10", "cuda-version": "==12.*"},
    "26.6": {"numba-cuda": ">=0.22.2,<0.29.0", "numba": ">=0.60.0,<0.65.0", "numpy": ">=1.26,<3.0",
             "pyarrow": ">=19.0.0,<24", "cupy-cuda12x": ">=13.6.0,!=14.0.0,!=14.1.0", "python": ">=3.11",
             "cuda-version": "==12.*"},
    "26.8": {"numba-cuda": ">=0.22.2,<0.31.0", "numba": ">=0.60.0,<0.65.0", "numpy": ">=2.0,<3.0",
             "pyarrow": ">=19.0.0,<24", "cupy-cuda12x": ">=14.0.1,!=14.1.0", "python": ">=3.11",
             "cuda-version": "==12.*"},
    "26.10": {"numba-cuda": ">=0.22.2,<0.31.0", "numba": ">=0.60.0,<0.65.0", "numpy": ">=2.0,<3.0",
              "pyarrow": ">=19.0.0", "cupy-cuda12x": ">=14.0.1,!=14.1.0", "python": ">=3.11",
              "cuda-version": "==12.*"},
}
# Requirements of ours: the fast launch (kernels/_launch.py) needs numba.cuda._compat.CUDA_CORE_GE_1_0 and
# cudadrv.driver._to_core_stream, both first in numba-cuda 0.30.2; numba-cuda 0.30 requires cuda-core
# >=0.5.1,<2; DALI's cuda120 build and the cupy-cuda12x wheel are CUDA 12.
OURS = {"numba-cuda": ">=0.30.2", "cuda-core": ">=0.5.1,<2", "cuda-version": "==12.*"}


def conda_spec(text: str) -> tuple:
    """``name`` and a ``SpecifierSet`` from a conda match spec (``cudf=26.10``: any 26.10.x)."""
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text.split("#")[0])
    name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
    if re.fullmatch(r"=[0-9][0-9.]*", spec):
        spec = f"=={spec[1:]}.*"
    return name, SpecifierSet(spec)


def environment() -> dict:
    """Every package environment.yml names (conda and pip sections), by pip name, with its pin."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if not line.startswith("-"):
                    r = Requirement(line.split("#")[0].strip())
                    out[r.name.lower()] = r.specifier
        else:
            name, spec = conda_spec(dep)
            out[PIP_NAME.get(name, name)] = spec
    return out


# extras the conda environment leaves to the user: TorchRec's fbgemm-gpu must be the build made for the exact
# torch installed (1.8.0 for torch 2.13), and environment.yml's pytorch-gpu is conda-forge's, not pinned to it
NOT_IN_CONDA_ENV = {"torchrec"}


def pyproject() -> dict:
    """Every requirement of pyproject.toml (dependencies and the extras the conda env carries), by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name not in NOT_IN_CONDA_ENV:
            reqs += extra
    return {Requirement(r).name.lower(): Requirement(r).specifier for r in reqs}


def allowed(name: str, spec: SpecifierSet) -> list:
    return [v for v in RELEASES[name].split() if Version(v) in spec]


def cudf_release(env: dict) -> str:
    pins = {v for v in RELEASES["cudf-cu12"].split() if Version(v) in env["cudf-cu12"]}
    lines = {".".join(v.split(".")[:2]) for v in pins}
    assert len(lines) == 1, f"environment.yml must pin one cudf release line (cudf=YY.MM), allows {sorted(pins)}"
    return lines.pop()


def test_same_packages():
    env, pip = environment(), pyproject()
    missing = sorted(set(pip) - set(env))
    extra = sorted(set(env) - set(pip) - CONDA_ONLY - {"uih-latemat"})
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"


def test_pins_overlap_pyproject():
    env, pip = environment(), pyproject()
    for name in sorted(set(env) & set(pip) & set(RELEASES)):
        both = [v for v in allowed(name, env[name]) if Version(v) in pip[name]]
        assert both, f"{name}: environment.yml {env[name]} and pyproject.toml {pip[name]} share no release"


def requirements(env: dict) -> dict:
    """What the pinned cudf and our own code require, per package: a list of (who, specifier)."""
    line = cudf_release(env)
    assert line in CUDF_REQUIRES, f"cudf={line}: add its Requires-Dist to CUDF_REQUIRES before pinning it"
    out = {}
    for name, spec in CUDF_REQUIRES[line].items():
        out.setdefault(name, []).append((f"cudf {line}", SpecifierSet(spec)))
    for name, spec in OURS.items():
        out.setdefault(name, []).append(("this project", SpecifierSet(spec)))
    return out


def conflicts(env: dict) -> list:
    """Each release the environment allows that a requirement rules out, as a readable line."""
    out = []
    for name, reqs in requirements(env).items():
        assert name in env, f"environment.yml must pin {name} (required: {[str(s) for _, s in reqs]})"
        ok = allowed(name, env[name])
        if not ok:
            out.append(f"{name} {env[name]} allows no known release")
        for who, spec in reqs:
            bad = [v for v in ok if Version(v) not in spec]
            if bad:
                out.append(f"{name} {env[name]} allows {bad}, but {who} requires {name}{spec}")
    return out


def test_pins_meet_what_the_pinned_packages_require():
    assert conflicts(environment()) == []


def test_the_check_catches_the_known_conflict(monkeypatch):
    """The environment.yml this replaced: cudf=25.10 with numba and numba-cuda left open (cudf 25.10 caps
    numba-cuda below 0.20, which lacks the fast launch) and no cuda-version."""
    env = environment()
    env.update({"cudf-cu12": conda_spec("cudf=25.10")[1], "numba-cuda": SpecifierSet(""),
                "numba": SpecifierSet(">=0.60"), "cuda-version": SpecifierSet("")})
    found = "\n".join(conflicts(env))
    assert "cudf 25.10 requires numba-cuda" in found and "this project requires numba-cuda>=0.30.2" in found
    assert "cudf 25.10 requires numba" in found and "cuda-version" in found


def test_cuda_major_is_the_same_everywhere():
    env, pip = environment(), pyproject()
    assert set(allowed("cuda-version", env["cuda-version"])) <= {v for v in RELEASES["cuda-version"].split()
                                                              if v.startswith("12.")}
    dali = [n for n in env if n.startswith("nvidia-dali-cuda")]
    assert dali == ["nvidia-dali-cuda120"] and "nvidia-dali-cuda120" in pip, dali
    assert {n for n in pip if n.startswith(("cupy-cuda", "cudf-cu"))} == {"cupy-cuda12x", "cudf-cu12"}


def _check_torch_cpu():
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_torch_cpu", ROOT / "tools" / "check_torch_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(*pkgs, torch_requires=()):
    return {"install": [{"metadata": {"name": n, "version": v,
                                      **({"requires_dist": list(torch_requires)} if n == "torch" else {})}}
                        for n, v in pkgs]}


def test_cpu_check_stops_a_cuda_torch_and_passes_the_cpu_build():
    check = _check_torch_cpu()
    cuda = _report(("torch", "2.13.0"), ("nvidia-cublas-cu12", "12.8.4.1"), ("nvidia-cudnn-cu12", "9.10.2.21"),
                   ("sympy", "1.14.0"), torch_requires=['nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux"',
                                                        "nvidia-cudnn-cu12==9.10.2.21", "sympy>=1.13.3"])
    assert check.cuda_packages(cuda) == ["nvidia-cublas-cu12==12.8.4.1", "nvidia-cudnn-cu12==9.10.2.21"]
    assert check.cuda_packages(_report(("torch", "2.13.0+cu128"))) == ["torch==2.13.0+cu128"]
    assert check.cuda_packages(_report(("torch", "2.13.0+cpu"), ("numpy", "2.4.6"))) == []
    # DALI's own nvidia-* libraries beside an installed CPU torch (the CPU path's usual case), or beside a
    # CPU torch that does not require them, are not a CUDA torch
    dali = (("nvidia-dali-cuda120", "2.4.0"), ("nvidia-nvimgcodec-cu12", "0.9.0.20"))
    assert check.cuda_packages(_report(*dali)) == []
    assert check.cuda_packages(_report(("torch", "2.13.0+cpu"), *dali, torch_requires=["sympy"])) == []
    text = check.message(check.cuda_packages(cuda), ["torch==2.13.0"])
    assert "--index-url https://download.pytorch.org/whl/cpu" in text and "environment.yml" in text
