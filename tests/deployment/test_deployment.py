"""The Flower App on the deployment runtime: a SuperLink and three SuperNodes as real processes,
with TLS and SuperNode authentication (each node's key registered before it starts).

Every test starts every process itself, records its PID and stops it in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from flwr_ppcdl.app.deploy import LocalDeployment, make_node_keys
from flwr_ppcdl.app.deploy_setup import prepare_app
from flwr_ppcdl.clients import StateFile

pytestmark = pytest.mark.slow

RUN = "num-partitions=3 num-rounds=3 dataset='digits' task='classification' unreliable-kind='random-labels'"
HARD_TIMEOUT = 420.0  # a safety net for a loaded 2-core machine (runs took 80-135 s, the restart up to 160 s)


def _run(
    tmp_path: Path, run_config: str, kill_node: int | None = None, restart: bool = False, intruders: bool = False
) -> tuple[dict, LocalDeployment, str]:
    app = prepare_app(tmp_path / "app")
    results = tmp_path / "results"
    deployment = LocalDeployment(nodes=3, workdir=tmp_path / "deploy")  # TLS + SuperNode authentication
    watchdog = threading.Timer(HARD_TIMEOUT, deployment.stop)
    watchdog.start()
    try:
        with mock.patch.dict(os.environ, {"PPCDL_RESULTS": str(results)}):  # the ServerApp's results base
            deployment.start()
        started = [p.pid for p in deployment.procs.values()]
        assert len(started) == 4
        assert sorted(deployment.node_ids) == [0, 1, 2]  # every partition's key was registered
        if intruders:  # hold the CA certificate, but no registered key
            key, _ = make_node_keys(tmp_path / "intruder-keys")
            deployment.start_supernode(0, name="intruder-unregistered-key", private_key=key)
            deployment.start_supernode(1, name="intruder-no-key", no_key=True)
        ok, output = deployment.run(
            f"{run_config} result-dir='{results}'", results, app=app, timeout=HARD_TIMEOUT - 40,
            kill_node=kill_node, restart=restart,
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
    """Three registered SuperNodes complete the run; a node with an unregistered key and a node
    without a key (both holding the CA certificate) are refused and never take part."""
    result, deployment, _ = _run(tmp_path, RUN, intruders=True)
    for name, reason in (
        ("intruder-unregistered-key", "Failed to activate SuperNode"),
        ("intruder-no-key", "All SuperNodes must be registered"),
    ):
        log = deployment.logs[name].read_text(errors="replace")
        assert "Failed to initialize the connection to the SuperLink" in log and reason in log, log[-2000:]
        assert "SuperNode ID:" not in log
        assert deployment.procs[name].returncode not in (0, None)
    assert {str(p["node_id"]) for p in result["participants"]} == {str(n) for n in deployment.node_ids.values()}
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert result["failures"] == 0
    assert all(r["replies"] == 3 and r["failures"] == 0 for r in result["rounds"])
    assert sorted(p["partition_id"] for p in result["participants"]) == [0, 1, 2]
    assert all(p["rounds_participated"] == 3 and p["dropped_after_round"] is None for p in result["participants"])
    assert all(p["epsilon"] == pytest.approx(1.0) for p in result["participants"])  # released once
    for pid in range(3):  # each node persisted its own release and ledger (no records), integrity-checked
        state = StateFile(deployment.workdir / f"node-{pid}" / "state.json").load()
        assert state is not None and state.records_read == 1


ROUND_TIMEOUT = 40  # a round waits this long for a reply that never comes (the killed node's); round 1
# (ClientApp start + the release) took 15-22 s here, so a shorter timeout risks losing live replies


def test_supernode_killed_after_round_one(tmp_path: Path) -> None:
    started = time.monotonic()
    run = f"{RUN} min-nodes=2 round-timeout={ROUND_TIMEOUT}"
    result, deployment, output = _run(tmp_path, run, kill_node=2)
    elapsed = time.monotonic() - started
    assert "killed supernode-2" in output
    assert deployment.procs["supernode-2"].returncode == -signal.SIGKILL
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    first, *later = result["rounds"]
    assert first["replies"] == 3 and first["failures"] == 0 and len(first["nodes"]) == 3
    by_partition = {p["partition_id"]: p for p in result["participants"]}
    assert sorted(by_partition) == [0, 1, 2]
    dead = by_partition[2]["node_id"]
    live = {by_partition[0]["node_id"], by_partition[1]["node_id"]}
    for r in later:
        # The dead node is either still sampled (its reply is missing when the round times out),
        # or the SuperLink has marked it offline (not sampled, or an error reply): in every case
        # exactly the two live nodes contribute.
        assert set(r["nodes"]) == live, r
        assert r["replies"] - r["failures"] == 2
    dropped = [(p["partition_id"], p["dropped_after_round"]) for p in result["participants"] if p["dropped_after_round"] is not None]
    assert dropped == [(2, 1)]
    assert by_partition[2]["rounds_participated"] == 1
    assert all(by_partition[i]["rounds_participated"] == 3 for i in (0, 1))
    assert all(p["epsilon"] == pytest.approx(1.0) for p in result["participants"])
    for r in result["rounds"]:  # reliability weights: only nodes that replied, summing to 1
        assert set(r["weights"]) == set(r["nodes"]), r
        assert sum(r["weights"].values()) == pytest.approx(1.0)
    assert dead not in set().union(*(r["weights"] for r in later))
    assert not any("[ppcdl] restored" in path.read_text(errors="replace") for path in deployment.logs.values())
    assert elapsed < HARD_TIMEOUT


def test_supernode_restarted_with_its_state_path(tmp_path: Path) -> None:
    """A SuperNode SIGKILLed after round 1 and started again with the same node config reloads its
    release and ledger from ``state-path``: it does not read its records or release again, and the
    epsilon reported for its partition is the epsilon it spent (one release). ``min-nodes=3``: a
    round waits until three SuperNodes are connected, so the restarted node takes part however
    long its restart takes on a loaded machine (with 2, the run could end before it joined)."""
    run = f"{RUN} min-nodes=3 round-timeout={ROUND_TIMEOUT}"
    state_file = tmp_path / "deploy" / "node-2" / "state.json"
    result, deployment, output = _run(tmp_path, run, kill_node=2, restart=True)
    assert "killed supernode-2" in output and "restarted supernode-2" in output
    assert deployment.procs["supernode-2-killed"].returncode == -signal.SIGKILL
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    rows = [p for p in result["participants"] if p["partition_id"] == 2]
    assert len(rows) == 2, result["participants"]  # the killed node and its restart (a new node id)
    first_round = result["rounds"][0]["nodes"]
    [old] = [p for p in rows if p["node_id"] in first_round]
    [new] = [p for p in rows if p["node_id"] not in first_round]
    assert old["dropped_after_round"] == 1 and old["rounds_participated"] == 1
    # with node authentication the restart came back under a newly registered key
    registered = [str(node) for pid, node in deployment.node_ids_history if pid == 2]
    assert registered == [old["node_id"], new["node_id"]]
    # The restarted node joins when it has registered (round 2 or 3) and replies to the end:
    # it joined late, it did not drop.
    assert new["node_id"] in result["rounds"][-1]["nodes"]
    assert new["dropped_after_round"] is None and new["first_round"] in (2, 3)
    assert old["epsilon"] == pytest.approx(1.0) and new["epsilon"] == pytest.approx(1.0)
    restored = deployment.logs["supernode-2"].read_text(errors="replace").count("[ppcdl] restored the release and ledger")
    assert restored == 1  # the restarted node's first ClientApp loaded state-path (and only it)
    assert "[ppcdl] restored" not in deployment.logs["supernode-0"].read_text(errors="replace")
    state = StateFile(state_file).load()
    assert state is not None and state.ledger is not None
    assert state.records_read == 1  # after the restore it released nothing new
    assert len(state.ledger["entries"]) == 1, state.ledger
    for r in result["rounds"]:
        assert set(r["weights"]) == set(r["nodes"]) and sum(r["weights"].values()) == pytest.approx(1.0)


def test_a_node_policy_refuses_a_run_beyond_it_and_serves_one_within(tmp_path: Path) -> None:
    """Two SuperNodes whose node config says max-epsilon=1: a run submitted with epsilon=8 is refused
    by both (error replies; the run finishes failed, no result, nothing released), and a run with
    epsilon=1 on the same deployment completes, each participant spending epsilon <= 1 once."""
    app = prepare_app(tmp_path / "app")
    deployment = LocalDeployment(nodes=2, workdir=tmp_path / "deploy", node_policy="max-epsilon=1")
    run = "num-partitions=2 num-rounds=2 dataset='digits' task='classification' unreliable-kind='random-labels' unreliable-fraction=0.0"
    watchdog = threading.Timer(HARD_TIMEOUT, deployment.stop)
    watchdog.start()
    try:
        with mock.patch.dict(os.environ, {"PPCDL_RESULTS": str(tmp_path)}):  # the ServerApp's results base
            deployment.start()
        refused_dir = tmp_path / "refused"
        ok, output = deployment.run(f"{run} epsilon=8.0 result-dir='{refused_dir}'", refused_dir, app=app,
                                    timeout=HARD_TIMEOUT / 2)
        refused_status = deployment.run_status()
        states = [StateFile(deployment.workdir / f"node-{pid}" / "state.json").load() for pid in range(2)]
        served_dir = tmp_path / "served"
        served, served_output = deployment.run(f"{run} epsilon=1.0 result-dir='{served_dir}'", served_dir, app=app,
                                               timeout=HARD_TIMEOUT / 2)
        served_status = deployment.run_status()
    finally:
        watchdog.cancel()
        deployment.stop()
    assert deployment.alive() == [], "a process outlived the test"
    assert not ok and refused_status == "finished:failed", (refused_status, output[-3000:])
    reason = (refused_dir / "error.txt").read_text().splitlines()[0]  # the ServerApp's reason: both error replies
    assert reason.count("PolicyViolation") == 2 and reason.count("epsilon=8.0 per release is above max-epsilon=1") == 2, reason
    assert all(state is None for state in states)  # nothing was read, released or persisted
    for pid in range(2):
        log = deployment.logs[f"supernode-{pid}"].read_text(errors="replace")
        assert "beyond this participant's privacy policy" in log
    assert served and served_status == "finished:completed", (served_status, served_output[-3000:])
    result = json.loads((served_dir / "result.json").read_text())
    assert result["failures"] == 0 and all(0.99 < p["epsilon"] <= 1.0 for p in result["participants"])
    for pid in range(2):
        state = StateFile(deployment.workdir / f"node-{pid}" / "state.json").load()
        assert state is not None and state.records_read == 1
        log = deployment.logs[f"supernode-{pid}"].read_text(errors="replace")
        assert "[ppcdl] privacy: this participant has spent epsilon=" in log and "max-epsilon=1 " in log
