#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU and numpy, pyarrow, numba + numba-cuda, CuPy and torch
# (cuDF and DALI are checked when importable, reported "not installed" otherwise). Builds and downloads
# nothing. Runs bench/gpu_check.py (see there): CUDA kernels vs CPU twins at the production block size,
# Reconstructor(device="cuda") vs "cpu" for every projection shape, zero-copy torch hand-offs, a damaged
# segment, the DALI pipeline, and times against a device-to-device copy. Prints a table last, writes
# bench/results/gpu_check.json, exits non-zero on any mismatch. Under 6 minutes, CUDA compilation included.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# numba-cuda <= 0.30 registers an overload of np.row_stack, which numpy 2.5 removed: its first kernel
# compilation then fails on AttributeError. Alias it for this process only (seen on an H200 image).
timeout 360 "$PY" -c '
import sys, runpy, numpy
if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
    print("gpu_check: numpy lacks row_stack (numba-cuda needs it): aliased to vstack", file=sys.stderr)
sys.argv = ["bench/gpu_check.py", *sys.argv[1:]]
runpy.run_path("bench/gpu_check.py", run_name="__main__")
' "$@"
