#!/usr/bin/env bash
# An aarch64 Python with crossrank's runtime, run under qemu-user on an x86-64 host: ARM's int8
# numerics exactly (ONNX Runtime picks its ARM kernels by the emulated CPU's features), never its
# speed. Cached under .cache/arm64/ (root ~80 MB, packages ~120 MB); about a minute to build.
#
#   bash tools/arm64/setup.sh            # then: .venv/bin/python -m tools.arm64.check MODEL_DIR...
#   bash tools/arm64/setup.sh valgrind   # also the root tools/arm64/instructions.py counts in
#
# Needs: mmdebstrap (Debian: apt-get install mmdebstrap), a qemu-aarch64 of version 8 or newer
# (neoverse-v1 and neoverse-n2 came in 8.x; Debian 13's qemu-user has 10.0; set QEMU=/path), and
# network access to a Debian mirror and PyPI. No root filesystem is chrooted into and no binfmt
# handler is needed: packages are only extracted, and python runs as `qemu-aarch64 -L ROOT`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .cache/arm64
CACHE=$(pwd)/.cache/arm64
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-.venv/bin/python}
QEMU=${QEMU:-$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)}

if [ -z "$QEMU" ]; then
  echo "no qemu-aarch64 found: install Debian 13's qemu-user (or set QEMU=/path/to/qemu-aarch64)" >&2
  exit 2
fi
version=$("$QEMU" --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)
if [ "${version%%.*}" -lt 8 ]; then
  echo "$QEMU is qemu $version: neoverse-v1 needs qemu 8 or newer (set QEMU=/path)" >&2
  exit 2
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 2; }

if [ ! -x "$CACHE/root/usr/bin/python3.11" ]; then
  rm -rf "$CACHE/root.tmp"
  mmdebstrap --variant=extract --architectures=arm64 \
    --include=python3.11,libpython3.11-stdlib,libstdc++6,libgomp1 \
    bookworm "$CACHE/root.tmp" "$MIRROR"
  mv "$CACHE/root.tmp" "$CACHE/root"
fi

# the runtime's dependencies as aarch64 wheels (pip downloads them here; nothing is built) and
# crossrank itself as a wheel
rm -rf "$CACHE/site.tmp" "$CACHE/wheel"
"$PY" -m pip wheel -q --no-deps -w "$CACHE/wheel" .
deps=$("$PY" - <<'PY'
import tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
)
ort=$("$PY" -c "import onnxruntime; print(onnxruntime.__version__)")
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-warn-conflicts --target "$CACHE/site.tmp" --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
  --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
  $deps "onnxruntime==$ort" "$CACHE"/wheel/crossrank-*.whl
rm -rf "$CACHE/site" && mv "$CACHE/site.tmp" "$CACHE/site"
echo "$QEMU" > "$CACHE/qemu"
"$QEMU" -L "$CACHE/root" "$CACHE/root/usr/bin/python3.11" -c \
  "import sys; sys.path.insert(0, '$CACHE/site'); import onnxruntime, crossrank, platform; \
print('aarch64 python ready:', platform.machine(), 'onnxruntime', onnxruntime.__version__, \
'crossrank', crossrank.__version__)"

# `setup.sh valgrind`: also a second aarch64 root for counting ARM instructions
# (tools/arm64/instructions.py): Debian 13's valgrind 3.24 and CPython 3.13 with the same runtime
# packages. Bookworm's valgrind 3.19 aborts reading onnxruntime's unwind tables, and 3.24's
# preload library does not work with bookworm's glibc, so this root is trixie's throughout.
if [ "${1:-}" = "valgrind" ]; then
  if [ ! -x "$CACHE/vgroot/usr/libexec/valgrind/callgrind-arm64-linux" ]; then
    rm -rf "$CACHE/vgroot.tmp"
    mmdebstrap --variant=extract --architectures=arm64 \
      --include=python3.13,libpython3.13-stdlib,libstdc++6,libgomp1,valgrind \
      trixie "$CACHE/vgroot.tmp" "$MIRROR"
    # the extract variant leaves out the merged-/usr links the dynamic loader's path needs
    for d in bin lib sbin; do [ -e "$CACHE/vgroot.tmp/$d" ] || ln -s "usr/$d" "$CACHE/vgroot.tmp/$d"; done
    mv "$CACHE/vgroot.tmp" "$CACHE/vgroot"
  fi
  rm -rf "$CACHE/site313.tmp"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --no-warn-conflicts --target "$CACHE/site313.tmp" --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.13 --implementation cp --abi cp313 \
    --abi abi3 --abi none $deps "onnxruntime==$ort" "$CACHE"/wheel/crossrank-*.whl
  rm -rf "$CACHE/site313" && mv "$CACHE/site313.tmp" "$CACHE/site313"
  echo "valgrind root ready: $CACHE/vgroot (python3.13, valgrind), packages in $CACHE/site313"
fi
