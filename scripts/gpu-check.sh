#!/usr/bin/env bash
# Checks the CUDA kernels of the robustvit ops against the CPU ones on a GPU machine, and times them
# (python/tests/gpu_check.py: odd sizes, NaN and Inf, rejected sizes; it prints one line per check and ends with
# `N passed, M failed`).
# Usage: scripts/gpu-check.sh [LIB] [gpu_check.py options]   (default LIB target/pylib-cuda/librobustvit_ops.so)
#
# The GPU machine needs Python with torch 2.11 (cu130) only: no Rust, no compiler, no network. So:
#   1. here: .venv/bin/pip install "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-cccl==13.0.*" \
#              "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*"      (the four versions must match)
#            scripts/build-pylib.sh target/pylib-cuda
#            ROBUSTVIT_OPS_LIB=target/pylib-cuda/librobustvit_ops.so ROBUSTVIT_EXPECT_CUDA=1 \
#              .venv/bin/python -m pytest python/tests      (CPU tests, and the CUDA kernels are registered)
#   2. carry target/pylib-cuda (with this script and python/tests/gpu_check.py) to the GPU machine;
#   3. there: scripts/gpu-check.sh   (PYTHON=... picks the interpreter, default python3).
# Without a GPU, `scripts/gpu-check.sh LIB --device cpu` runs every check CPU against CPU (a dry run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lib=${1:-$root/target/pylib-cuda/librobustvit_ops.so}
shift $(( $# > 0 ? 1 : 0 ))
exec "${PYTHON:-python3}" "$root/python/tests/gpu_check.py" "$lib" "$@"
