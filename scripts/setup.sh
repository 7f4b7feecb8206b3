#!/usr/bin/env bash
# Set up flwr_ppcdl on a fresh machine: a virtual environment in .venv with the CPU build of
# torch first (so nothing pulls a multi-GB CUDA build), then the package with its data and dev extras.
# Idempotent; nothing here is needed again at run time (the default job is offline).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
echo "[setup] installing $TORCH_SPEC (CPU wheel)"
.venv/bin/pip install -q --disable-pip-version-check "$TORCH_SPEC"
echo "[setup] installing flwr_ppcdl[data,dev,bench,cps]"
.venv/bin/pip install -q --disable-pip-version-check -e ".[data,dev,bench,cps]"
# Fashion-MNIST (full 60k/10k) comes from Debian; optional: the default job uses census2000.
if [ "${PPCDL_SKIP_APT:-0}" != 1 ] && [ ! -d /usr/share/datasets/fashion-mnist ] \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's dataset-fashion-mnist (optional)"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
        || echo "[setup] dataset-fashion-mnist not installed; Fashion-MNIST runs need --run-config dataset-dir=..."
fi
echo "[setup] done: $(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)')"
