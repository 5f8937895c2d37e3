#!/usr/bin/env bash
# Prints the path of an nvcc to build the CUDA kernels with, or fails: $NVCC, $CUDA_HOME/bin/nvcc, nvcc on
# PATH, then pip's nvidia-cuda-nvcc in the project's .venv (installed by `make cuda-tools`).
root=$(cd "$(dirname "$0")/.." && pwd)
for c in "${NVCC:-}" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc 2>/dev/null)" \
         "$root"/.venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
  if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; exit 0; fi
done
exit 1
