"""Stop before pip pulls a CUDA build of torch into the CPU environment.

    python tools/check_torch_cpu.py PIP_INSTALL_ARGS...

asks pip what ``pip install PIP_INSTALL_ARGS`` would install (``--dry-run --report``, nothing installed) and
exits 1, with what to do instead, where that is a CUDA torch (``torch==X+cuNNN``, or a torch whose
requirements are ``nvidia-*`` CUDA runtime packages: the default index's build brings about 16 of them,
several GB). Other ``nvidia-*`` packages are not torch's: DALI (``nvidia-dali-cuda120``, a dependency that
runs CPU-only pipelines here) brings its own small codec libraries. Exit 0: torch stays CPU only.
``make install`` runs it before each pip install of the CPU path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def cuda_packages(report: dict) -> list:
    """``name==version`` of each CUDA package in a pip installation report (``pip install --report``)."""
    items = {i["metadata"]["name"].lower(): i["metadata"] for i in report.get("install", [])}
    torch = items.get("torch")
    if torch is None:  # torch already installed (the CPU build, first): nothing here can make it a CUDA one
        return []
    # what torch itself requires: a CUDA build names its runtime libraries (nvidia-cublas-cu12, ...)
    wants = {r.split(";")[0].split("[")[0].strip().split(" ")[0].split("=")[0].split(">")[0].split("<")[0].lower()
             for r in torch.get("requires_dist") or []}
    out = [f"torch=={torch['version']}"] if "+cu" in torch["version"] else []
    out += [f"{n}=={m['version']}" for n, m in items.items() if n.startswith("nvidia-") and n in wants]
    return out


def dry_run(args: list) -> dict:
    """pip's report of what ``pip install args`` would install into this interpreter's environment."""
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report",
                               str(report), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"check_torch_cpu: pip could not resolve {' '.join(args)}:\n{proc.stderr.strip()[-2000:]}")
        return json.loads(report.read_text())


def message(found: list, args: list) -> str:
    return (f"check_torch_cpu: stopped: `pip install {' '.join(args)}` would install CUDA packages into this CPU "
            f"environment ({len(found)}: {', '.join(found[:4])}{', ...' if len(found) > 4 else ''}).\n"
            f"Install the CPU build of torch first, from PyTorch's CPU index:\n"
            f"    {Path(sys.executable).name} -m pip install torch==2.13.0 --index-url {CPU_INDEX}\n"
            "then run this again. For a GPU environment use environment.yml (conda) instead.")


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit(__doc__)
    found = cuda_packages(dry_run(args))
    if found:
        print(message(found, args), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
