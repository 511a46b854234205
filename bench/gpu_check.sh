#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, torch, CuPy and numba-cuda (cuDF and DALI optional).
# Builds nothing; runs the CUDA kernels against their CPU twins, checks the zero-copy hand-offs, times
# the assembly kernel against a device-to-device copy, and prints a short table last. < 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 470 python bench/gpu_check.py "$@"
