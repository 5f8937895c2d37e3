#!/usr/bin/env bash
# System libraries the Rust build links: libhdf5 (ImageNet-segmentation's gtsegs_ijcv.mat is HDF5).
# Installs Debian's libhdf5-dev when pkg-config cannot find HDF5; a no-op otherwise.
set -euo pipefail
if pkg-config --exists hdf5 2>/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: HDF5 not found and no apt-get; install the HDF5 C library (1.10-1.14) with headers, or set HDF5_DIR" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "system-deps: installing libhdf5-dev and pkg-config (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libhdf5-dev pkg-config >/dev/null
