#!/usr/bin/env bash
# Install Debian's Fashion-MNIST package when its files are missing and apt can be used.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -n "${PARAMREUSE_DATA:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing dataset-fashion-mnist (Debian) ..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "Fashion-MNIST not found in $dir and apt is not usable here;" \
       "install dataset-fashion-mnist or set PARAMREUSE_DATA to a folder with the IDX files" >&2
fi
