#!/usr/bin/env bash
# Install algoperf-fast into the active Python and build its C++ extension.
#   bash scripts/install.sh          # runtime
#   bash scripts/install.sh --dev    # + pytest, pytest-benchmark
# When torch is missing, the CPU build of torch is installed first: an unpinned
# `pip install torch` pulls several GB of CUDA wheels onto CPU-only machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off)
TORCH_VERSION=2.13.0

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "[install] torch not found: installing the CPU build torch==${TORCH_VERSION}+cpu" >&2
  # 1) configured indexes / local wheelhouse, 2) PyTorch's CPU index, 3) plain pin.
  "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
    || "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" --index-url https://download.pytorch.org/whl/cpu \
         --extra-index-url https://pypi.org/simple \
    || "${PIP[@]}" "torch==${TORCH_VERSION}"
fi

# Build requirements, installed here because the build runs without isolation (it
# must compile against the torch installed above, not a freshly downloaded one).
"${PIP[@]}" "setuptools>=64" wheel "pybind11>=2.12" ninja
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
echo "[install] building algoperf-fast${extras} (C++ extension kernels._C: about a minute on 2 cores)" >&2
"${PIP[@]}" --no-build-isolation -e ".${extras}"
"$PY" -c 'import kernels; print("[install] kernels._C extension:", "built" if kernels.ext_available() else "NOT built (PyTorch fallbacks)")' >&2
