"""Stop before pip pulls a CUDA build of torch into the CPU environment.

    python tools/check_torch_cpu.py PIP_INSTALL_ARGS...

asks pip what ``pip install PIP_INSTALL_ARGS`` would install (``--dry-run --report``, nothing installed) and
exits 1, with what to do instead, where that is a CUDA torch (``torch==X+cuNNN``) or any ``nvidia-*`` CUDA
runtime package (a CUDA torch from the default index brings about 16 of them, several GB). Exit 0: the
install is CPU only. ``make install`` runs it before each pip install of the CPU path.
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
    out = []
    for item in report.get("install", []):
        name, version = item["metadata"]["name"].lower(), item["metadata"]["version"]
        if name.startswith("nvidia-") or (name == "torch" and "+cu" in version):
            out.append(f"{name}=={version}")
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
