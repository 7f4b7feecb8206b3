"""Starting many SuperNodes, without starting any process: the run waits for nodes that are online
(not merely registered), and every SuperNode gets a port of its own."""

from __future__ import annotations

import json
from pathlib import Path

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
