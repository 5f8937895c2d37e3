#!/usr/bin/env bash
# Checks the CUDA kernels of the robustvit ops against the CPU ones on a GPU machine, and times them
# (python/tests/gpu_check.py: odd sizes, NaN and Inf, rejected sizes; it prints one line per check and ends with
# `N passed, M failed`).
# Usage: scripts/gpu-check.sh [LIB] [gpu_check.py options]   (default LIB target/cuda/debug/librobustvit_ops.so)
#
# The GPU machine needs Python with torch 2.11 (cu130) only: no Rust, no compiler, no network. So:
#   1. here: make cuda    (pip's nvcc into .venv; the harness and the ops library with CUDA kernels in
#                          target/cuda/debug; the Python suite against that library, CUDA kernels registered)
#   2. carry target/cuda/debug/librobustvit_ops.so (with this script and python/tests/gpu_check.py, and
#      target/cuda/debug/harness for runs) to the GPU machine;
#   3. there: scripts/gpu-check.sh   (PYTHON=... picks the interpreter, default python3).
# Without a GPU, `scripts/gpu-check.sh LIB --device cpu` runs every check CPU against CPU (a dry run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lib=${1:-$root/target/cuda/debug/librobustvit_ops.so}
shift $(( $# > 0 ? 1 : 0 ))
exec "${PYTHON:-python3}" "$root/python/tests/gpu_check.py" "$lib" "$@"
