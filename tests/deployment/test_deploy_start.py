"""Starting many SuperNodes, without starting any process: the run waits for nodes that are online
(not merely registered), and every SuperNode gets a port of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flwr_ppcdl.app.deploy import LocalDeployment
from flwr_ppcdl.app.deploy_setup import online_node_ids
from flwr_ppcdl.app.deploy_start import new_port


def test_only_online_nodes_count_as_started() -> None:
    listing = {"success": True, "nodes": [
        {"node-id": "11", "status": "online"},
        {"node-id": "12", "status": "registered"},  # key registered, SuperNode not connected yet
        {"node-id": "13", "status": "offline"},  # connected once, heartbeats stopped
        {"node-id": "14", "status": "online"},
    ]}
    assert online_node_ids("Loading...\n" + json.dumps(listing)) == {11, 14}
    assert online_node_ids("") == set()
    assert online_node_ids('{"success": false, "error": "unreachable"}') == set()


def test_every_supernode_gets_its_own_port(tmp_path: Path) -> None:
    deployment = LocalDeployment(nodes=200, workdir=tmp_path, insecure=True)
    link = {deployment.port, deployment.control_port, deployment.fleet_port}
    taken = set(link)
    ports = [new_port(taken) for _ in range(200)]
    assert len(set(ports)) == 200 and not link & set(ports)


def test_the_superlink_gets_the_results_base_its_result_dir_lies_in(tmp_path: Path, monkeypatch) -> None:
    """An exported $PPCDL_RESULTS pointing elsewhere would make the ServerApp refuse deploy's
    result-dir (confinement): the deployment's own base replaces it in every process it starts."""
    from flwr_ppcdl.app.checks import RESULTS_ENV, result_path

    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "elsewhere"))
    results = tmp_path / "run" / "results"
    env = LocalDeployment(nodes=2, workdir=tmp_path / "run", insecure=True, results_base=results).env()
    assert env[RESULTS_ENV] == str(results)
    assert result_path(str(results), base=Path(env[RESULTS_ENV])) == results.resolve()
    inherited = LocalDeployment(nodes=2, workdir=tmp_path / "other", insecure=True).env()
    assert inherited[RESULTS_ENV] == str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="results base"):
        result_path(str(results), base=Path(inherited[RESULTS_ENV]))
