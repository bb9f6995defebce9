#!/usr/bin/env bash
# Build, cache and install Horovod 0.28.1 for the venv's torch (CPU, Gloo, no MPI).
#
# Horovod's last release asks for C++14, which torch >= 2.1 headers reject; the sdist builds once
# both CMakeLists ask for C++17. The wheel is cached per (Horovod, torch, Python) so CI builds it
# once: ${DEEPSPARK_WHEEL_CACHE:-$HOME/.cache/deepspark/wheels}/horovod-<v>-torch-<v>-<py>/.
# Nothing here lets pip touch torch: Horovod and its wheel are installed with --no-deps.
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
HOROVOD_VERSION=0.28.1
CACHE_ROOT=${DEEPSPARK_WHEEL_CACHE:-$HOME/.cache/deepspark/wheels}
JOBS=${HOROVOD_BUILD_JOBS:-$(nproc)}

log() { echo "[build_horovod] $*" >&2; }

torch_version=$("$PYTHON" -c "import torch; print(torch.__version__)")
py_tag=$("$PYTHON" -c "import sys; print(f'cp{sys.version_info.major}{sys.version_info.minor}')")
cache_dir="$CACHE_ROOT/horovod-$HOROVOD_VERSION-torch-$torch_version-$py_tag"

# Horovod's runtime dependencies (torch is already there and must stay as it is).
"$PYTHON" -m pip install --quiet cloudpickle psutil pyyaml packaging

if "$PYTHON" -c "import horovod, horovod.torch; assert horovod.__version__ == '$HOROVOD_VERSION'" \
    2>/dev/null; then
  log "Horovod $HOROVOD_VERSION already installed and importable against torch $torch_version"
  exit 0
fi

wheel=$(ls "$cache_dir"/horovod-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$wheel" ]]; then
  log "no cached wheel in $cache_dir; building Horovod $HOROVOD_VERSION (about 10 min on 2 cores)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
    "horovod==$HOROVOD_VERSION" -d "$work"
  tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
  src="$work/horovod-$HOROVOD_VERSION"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
  started=$(date +%s)
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_CPU_OPERATIONS=gloo \
    MAKEFLAGS="-j$JOBS" \
    "$PYTHON" -m pip wheel --no-build-isolation --no-deps --quiet -w "$work/dist" "$src"
  mkdir -p "$cache_dir"
  cp "$work"/dist/horovod-*.whl "$cache_dir/"
  wheel=$(ls "$cache_dir"/horovod-*.whl | head -n 1)
  log "built $wheel in $(( $(date +%s) - started )) s"
fi

"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$wheel"
"$PYTHON" -c "import horovod.torch as hvd; print('horovod', hvd.__version__ if hasattr(hvd, '__version__') else '')" >&2
log "installed $wheel"
