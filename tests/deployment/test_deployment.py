"""The Flower App on the deployment runtime: a SuperLink and three SuperNodes as real processes.

Both tests start every process themselves, record their PIDs and stop them in ``finally``.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest

from flwr_ppcdl.deploy import LocalDeployment, prepare_app

pytestmark = pytest.mark.slow

RUN = "num-partitions=3 num-rounds=3 dataset='digits' task='classification' unreliable-kind='random-labels'"
HARD_TIMEOUT = 240.0


def _run(tmp_path: Path, run_config: str, kill_node: int | None = None) -> tuple[dict, LocalDeployment, str]:
    app = prepare_app(tmp_path / "app")
    results = tmp_path / "results"
    deployment = LocalDeployment(nodes=3, workdir=tmp_path / "deploy")  # TLS (generated certificates)
    watchdog = threading.Timer(HARD_TIMEOUT, deployment.stop)
    watchdog.start()
    try:
        deployment.start()
        started = [p.pid for p in deployment.procs.values()]
        assert len(started) == 4
        ok, output = deployment.run(
            f"{run_config} result-dir='{results}'", results, app=app, timeout=HARD_TIMEOUT - 40, kill_node=kill_node
        )
        assert ok, f"no result.json; flwr run said:\n{output[-3000:]}"
        result = json.loads((results / "result.json").read_text())
    finally:
        watchdog.cancel()
        deployment.stop()
    assert deployment.alive() == [], "a process outlived the test"
    for proc in deployment.procs.values():
        assert proc.poll() is not None
    return result, deployment, output


def test_superlink_and_three_supernodes(tmp_path: Path) -> None:
    result, deployment, _ = _run(tmp_path, RUN)
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert result["failures"] == 0
    assert all(r["replies"] == 3 and r["failures"] == 0 for r in result["rounds"])
    assert sorted(p["partition_id"] for p in result["participants"]) == [0, 1, 2]
    assert all(p["rounds_participated"] == 3 and p["dropped_after_round"] is None for p in result["participants"])
    assert all(p["epsilon"] == pytest.approx(1.0) for p in result["participants"])  # released once
    for pid in range(3):  # each node persisted its own release and ledger (no records)
        state = json.loads((deployment.workdir / f"node-{pid}" / "state.json").read_text())
        assert state["records_read"] == 1


def test_supernode_killed_after_round_one(tmp_path: Path) -> None:
    result, deployment, output = _run(tmp_path, RUN + " min-nodes=2", kill_node=2)
    assert "killed supernode-2" in output
    assert deployment.procs["supernode-2"].returncode == -signal.SIGKILL
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert result["rounds"][0]["replies"] == 3
    last = result["rounds"][-1]
    assert len(last["nodes"]) == 2 and len(last["weights"]) in (0, 2)
    dropped = [p for p in result["participants"] if p["dropped_after_round"] is not None]
    assert [(p["partition_id"], p["dropped_after_round"]) for p in dropped] == [(2, 1)]
    survivors = [p for p in result["participants"] if p["partition_id"] != 2]
    assert all(p["rounds_participated"] == 3 for p in survivors)
    for r in result["rounds"][1:]:  # reliability history only names live nodes
        assert set(r["weights"]) <= set(r["nodes"])
