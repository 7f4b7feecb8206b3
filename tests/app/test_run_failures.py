"""A run that cannot work says why, fast, and leaves no result behind (#12.8, #12.9); the ServerApp
never reads participants' records (#11.8).

In process (the same ``run_server`` the ServerApp calls): the ``flwr run`` paths are in
``test_flwr_run.py``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from flwr.app import Context, Message

from flwr_ppcdl.app import experiment, oracle, server_app
from flwr_ppcdl.app.client_app import app as client_app
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import RunFailed, run_server
from flwr_ppcdl.app.settings import RunSettings


def _settings(tmp_path: Path, **extra: object) -> tuple[dict[str, object], RunSettings]:
    config: dict[str, object] = {"result-dir": str(tmp_path), "num-partitions": 4, "num-rounds": 2, "plot": False, **extra}
    return config, RunSettings.from_config(config)


def test_too_few_supernodes_fail_with_what_to_type_and_leave_only_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_app, "NODE_STALL_SECONDS", 0.3)  # no node joins an in-process grid later
    config, settings = _settings(tmp_path)
    for name in ("result.json", "rounds.csv", "weights.csv", "summary.png"):  # an older run's files
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")  # not a run's file: left alone
    with pytest.raises(RunFailed) as err:
        run_server(InProcessGrid(client_app, num_nodes=2, run_config=config), settings)
    text = str(err.value)
    assert 'flwr run . --federation-config "num-supernodes=4"' in text and "bash scripts/run.sh" in text
    assert 'flwr run . --run-config "num-partitions=0"' in text and "2 are connected" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["error.txt", "notes.txt"]
    assert (tmp_path / "error.txt").read_text().startswith("RunFailed: this run needs 4 SuperNodes")


def test_num_partitions_zero_takes_one_participant_per_supernode(tmp_path: Path) -> None:
    """Flower's convention: without a pinned num-partitions the federation decides (here 3 nodes,
    each told num-partitions=3 by its node config, as the simulation runtime does)."""
    config, settings = _settings(tmp_path, **{"num-partitions": 0})
    run = run_server(InProcessGrid(client_app, num_nodes=3, run_config=config), settings)
    assert run.settings["num_partitions"] == 3 and run.failures == 0
    assert sorted(p["partition_id"] for p in run.participants) == [0, 1, 2]
    assert [p["partition_id"] for p in run.participants if p["unreliable"]] == RunSettings(num_partitions=3).unreliable_ids


def test_min_nodes_lets_a_smaller_federation_run(tmp_path: Path) -> None:
    config, settings = _settings(tmp_path, **{"min-nodes": 3})
    grid = InProcessGrid(client_app, num_nodes=3, run_config=config,  # partitions 0-2 of 4: one is missing
                         node_config=lambda i, nid: {"partition-id": i, "num-partitions": 4})
    run = run_server(grid, settings)
    assert run.failures == 0 and [r["replies"] for r in run.rounds] == [3, 3]


def test_every_client_failing_stops_the_run_with_the_clients_reason(tmp_path: Path) -> None:
    def broken(msg: Message, context: Context) -> Message:
        raise RuntimeError("the client's own reason")

    config, settings = _settings(tmp_path)
    with pytest.raises(RunFailed, match="round 1: no participant replied successfully.*the client's own reason"):
        run_server(InProcessGrid(broken, num_nodes=4, run_config=config), settings)
    assert not (tmp_path / "result.json").exists() and (tmp_path / "error.txt").exists()


def test_the_server_app_never_reads_participants_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The non-private reference is an oracle computed after the run, outside the ServerApp."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the ServerApp called a reader of participants' records")

    monkeypatch.setattr(experiment, "reference_metrics", forbidden)
    config, settings = _settings(tmp_path)
    run_server(InProcessGrid(client_app, num_nodes=4, run_config=config), settings)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["reference"] == {} and "never reads" in saved["reference_note"]
    assert "reference_metrics" not in inspect.getsource(server_app)
    monkeypatch.undo()
    completed = oracle.complete_run(tmp_path)  # afterwards, outside: the simulation-only oracle
    assert set(completed["reference"]) == {"mse", "r2"} and "simulation-only" in completed["reference_note"]
    assert json.loads((tmp_path / "result.json").read_text())["reference"] == completed["reference"]

