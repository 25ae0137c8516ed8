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
# The extension is built once: a kernels/_C*.so newer than every C++ source and setup.py is
# kept (re-running this script then takes seconds, not the ~1-2 min compile).
so=$(ls kernels/_C*.so 2>/dev/null | head -n 1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -type f 2>/dev/null | head -n 1)" ] \
   && "$PY" -c 'import kernels, sys; sys.exit(0 if kernels.ext_available() else 1)' 2>/dev/null; then
  echo "[install] installing algoperf-fast${extras}; kernels._C is up to date ($so), not rebuilding" >&2
  export ALGOPERF_BUILD_EXT=0
else
  echo "[install] building algoperf-fast${extras} (C++ extension kernels._C: about a minute on 2 cores)" >&2
fi
"${PIP[@]}" --no-build-isolation -e ".${extras}"
"$PY" -c 'import kernels; print("[install] kernels._C extension:", "built" if kernels.ext_available() else "NOT built (PyTorch fallbacks)")' >&2
