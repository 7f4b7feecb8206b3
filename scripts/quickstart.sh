#!/usr/bin/env bash
# The README's first command: set up on a fresh machine, then run the default job offline
# (census2000 income regression, 10 private participants, 3 unreliable, epsilon = 1,
# reliability-weighted aggregation). Results: results/latest/ (result.json, CSVs, summary.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/run.sh "$@"
