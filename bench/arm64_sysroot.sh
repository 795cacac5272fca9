#!/usr/bin/env bash
# An arm64 Python with onnxruntime and numpy, run through qemu-aarch64 on an x86 machine, for the
# ARM column of bench/int8_portability.py (--arm ROOT). Everything comes from Debian's arm64
# packages and PyPI's aarch64 wheels; nothing is installed system-wide but qemu-user.
#
#   bash bench/arm64_sysroot.sh /opt/arm64root
#
# onnxruntime 1.32's aarch64 wheel crashes on import under Debian 12's qemu-aarch64 (7.2,
# SIGSEGV in its extension module); 1.20.1 runs, so that is the version pinned here.
set -euo pipefail
ROOT=${1:?usage: arm64_sysroot.sh ROOT}
ORT_VERSION=${ORT_VERSION:-1.20.1}
command -v qemu-aarch64 >/dev/null || apt-get install -y -qq qemu-user
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -qq
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
    libpython3.11-stdlib:arm64 libc6:arm64 libexpat1:arm64 zlib1g:arm64 libssl3:arm64 \
    libffi8:arm64 libbz2-1.0:arm64 liblzma5:arm64 libstdc++6:arm64 libgcc-s1:arm64 \
    libsqlite3-0:arm64 libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 \
    libcrypt1:arm64 libnsl2:arm64 libtirpc3:arm64 2>/dev/null
)
mkdir -p "$ROOT/site"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$ROOT"; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  -d "$work/wheels" "onnxruntime==$ORT_VERSION" "numpy>=2,<2.5" packaging flatbuffers
for wheel in "$work"/wheels/*.whl; do
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$ROOT/site"
done
PYTHONPATH="$ROOT/site" qemu-aarch64 -L "$ROOT" "$ROOT/usr/bin/python3.11" -c \
  'import platform, onnxruntime; print("arm64 python ready:", platform.machine(), "onnxruntime", onnxruntime.__version__)'
