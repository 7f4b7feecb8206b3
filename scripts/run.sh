#!/usr/bin/env bash
# Run the Flower App with `flwr run .` on the local simulation runtime, offline, and stop the
# SuperLink that `flwr run` starts (it never stops it itself).
#   bash scripts/run.sh                                  # the default job (see pyproject.toml)
#   bash scripts/run.sh --run-config "epsilon=10 strategy='fedavg'"
# NUM_SUPERNODES (default: the run config's num-partitions, 10) sets the simulated participants.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr-home}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1   # never `uv sync` a CUDA torch at run time
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
export RAY_TMPDIR="${RAY_TMPDIR:-/tmp/ppcdl-ray}"
mkdir -p "$FLWR_HOME" "$RAY_TMPDIR"
num=${NUM_SUPERNODES:-$(python -c 'from flwr_ppcdl.app.settings import RunSettings; print(RunSettings().num_partitions)')}
# Results go under the project, unless result-dir is given (absolute) in --run-config.
result_dir="$PWD/results/latest"
before=$(pgrep -f flower-superlink || true)
stop_superlink() {
    for pid in $(pgrep -f flower-superlink || true); do
        if ! grep -qx "$pid" <<<"$before"; then kill "$pid" 2>/dev/null || true; fi
    done
}
trap stop_superlink EXIT
args=("$@")
has_result_dir=0
for a in "${args[@]}"; do
    [[ "$a" == *result-dir* ]] && has_result_dir=1
    # one simulated SuperNode per participant: follow a num-partitions override
    if [ -z "${NUM_SUPERNODES:-}" ] && [[ "$a" =~ num-partitions=([0-9]+) ]]; then num=${BASH_REMATCH[1]}; fi
done
if [ "$has_result_dir" = 0 ]; then
    args+=(--run-config "result-dir='$result_dir'")
fi
flwr run . --stream --federation-config "num-supernodes=$num client-resources-num-cpus=1" "${args[@]}"
