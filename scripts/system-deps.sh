#!/usr/bin/env bash
# System libraries the Rust build links: libhdf5 (ImageNet-segmentation's gtsegs_ijcv.mat is HDF5) and
# libturbojpeg (libjpeg-turbo, the JPEG decoder PIL uses); and Fashion-MNIST, the embedded benchmark's second
# object set, as Debian's dataset-fashion-mnist installs it (four gzip'd IDX files in
# /usr/share/datasets/fashion-mnist). Installs the Debian packages of those pkg-config cannot find (or whose
# files are missing), in one apt-get call; a no-op when all are there.
set -euo pipefail
missing=()
pkg-config --exists hdf5 2>/dev/null || missing+=(libhdf5-dev)
pkg-config --exists libturbojpeg 2>/dev/null || missing+=(libturbojpeg0-dev)
fashion=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ ! -f "$fashion/$f.gz" ]; then
    missing+=(dataset-fashion-mnist)
    break
  fi
done
if [ ${#missing[@]} = 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: ${missing[*]} not found and no apt-get; install the HDF5 C library (1.10-1.14) and" \
    "libjpeg-turbo's TurboJPEG library (2.x) with headers, or set HDF5_DIR / PKG_CONFIG_PATH; and put" \
    "Fashion-MNIST's four gzip'd IDX files (train-images-idx3-ubyte.gz, ...) in $fashion" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "system-deps: installing ${missing[*]} and pkg-config (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" pkg-config >/dev/null
