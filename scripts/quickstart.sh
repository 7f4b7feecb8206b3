#!/usr/bin/env bash
# The README's first command: set up on a fresh machine, then run the default job offline
# (census2000 income regression, 10 private participants, 3 unreliable, epsilon = 1,
# reliability-weighted aggregation). Results: results/latest/ (result.json, CSVs, summary.png).
#   bash scripts/quickstart.sh [run.sh options, e.g. --quiet or --run-config "..."]
# Set-up options go through the environment (PPCDL_SYSTEM_PACKAGES=yes|no, see scripts/setup.sh --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/run.sh "$@"
