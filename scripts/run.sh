#!/usr/bin/env bash
# Run the Flower App on Flower's local simulation runtime, offline (python -m flwr_ppcdl.app.local_run).
#   bash scripts/run.sh                                  # the default job (see pyproject.toml)
#   bash scripts/run.sh --quiet                          # only the summary (--verbose: Flower's log too)
#   bash scripts/run.sh --run-config "epsilon=10 strategy='fedavg'"
# Any `flwr run` option passes through. The whole run config is checked before anything starts.
# Each run gets its own SuperLink on free ports, its own FLWR_HOME and Ray folder, and one simulated
# SuperNode per participant (NUM_SUPERNODES overrides); only the processes this run started are
# stopped, by PID. Results: results/<result-dir> of this checkout ($PPCDL_RESULTS overrides). The
# exit code is 0 only when the run wrote a fresh result.json (2: a bad run config, 1: a failed run,
# with the reason); the summary puts the result next to a non-private reference computed
# afterwards, outside the ServerApp (simulation only).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; fi
export PATH="$(dirname "$py"):$PATH"
exec "$py" -m flwr_ppcdl.app.local_run "$@"
