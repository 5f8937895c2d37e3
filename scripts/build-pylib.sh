#!/usr/bin/env bash
# Builds the robustvit ops as a shared library for Python: torch.ops.load_library(<printed path>).
# Usage: scripts/build-pylib.sh [OUT_DIR]   (default target/pylib). CUDA kernels are compiled when nvcc is
# found (NVCC, CUDA_HOME/bin, PATH, or pip's nvidia-cuda-nvcc in .venv) unless ROBUSTVIT_CUDA=0.
set -euo pipefail
shopt -s nullglob
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/pylib}
py=${PYTHON:-$root/.venv/bin/python}
torch_dir=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
mkdir -p "$out/obj"
flags=(-std=c++17 -O3 -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 -I"$torch_dir/include"
       -I"$torch_dir/include/torch/csrc/api/include" -Wall -Wno-unused-parameter -fopenmp)
objs=()
nvcc=$("$root/scripts/find-nvcc.sh" || true)
if [ "${ROBUSTVIT_CUDA:-1}" != 0 ] && [ -n "$nvcc" ]; then
  flags+=(-DROBUSTVIT_WITH_CUDA)
  cuda_inc=$(cd "$(dirname "$nvcc")/.." && pwd)/include
  for src in "$root"/cpp/*.cu; do
    obj="$out/obj/$(basename "$src").o"
    "$nvcc" -c "$src" -o "$obj" -std=c++17 -O2 -Xcompiler -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 \
      -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include" -I"$cuda_inc" \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 &
    objs+=("$obj")
  done
fi
for src in "$root"/cpp/*.cpp; do
  obj="$out/obj/$(basename "$src").o"
  ${CXX:-g++} -c "$src" -o "$obj" "${flags[@]}" &
  objs+=("$obj")
done
for job in $(jobs -p); do wait "$job"; done
${CXX:-g++} -shared -o "$out/librobustvit_ops.so" "${objs[@]}" -L"$torch_dir/lib" \
  -Wl,-rpath,"$torch_dir/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -lgomp
echo "$out/librobustvit_ops.so"
