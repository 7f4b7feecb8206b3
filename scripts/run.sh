#!/usr/bin/env bash
# Run the Flower App with `flwr run .` on the local simulation runtime, offline.
#   bash scripts/run.sh                                  # the default job (see pyproject.toml)
#   bash scripts/run.sh --run-config "epsilon=10 strategy='fedavg'"
# Any `flwr run` option passes through. Each run gets its own SuperLink on free ports, its own
# FLWR_HOME and Ray folder, and one simulated SuperNode per participant (NUM_SUPERNODES overrides);
# only the processes this run started are stopped, by PID. The exit code is 0 only when the run
# wrote a fresh result.json (the reason of a failure is printed); the summary line puts the result
# next to a non-private reference computed afterwards, outside the ServerApp (simulation only).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; fi
export PATH="$(dirname "$py"):$PATH"
exec "$py" -m flwr_ppcdl.app.local_run "$@"
