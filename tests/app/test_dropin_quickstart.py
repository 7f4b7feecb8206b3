"""The drop-in promise (issue #12): a quickstart-pytorch-shaped Flower App, FedAvg swapped for
ReliabilityWeightedFedAvg in one line (``server_app.Strategy``), every client honest.

The App (``quickstart_app/``) is ordinary Flower code: a small CNN, plain SGD clients that also
answer Flower's default evaluation requests, server-side evaluation, unequal partitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

from .quickstart_app import client_app, server_app
from .quickstart_app.task import NUM_CLASSES, SIZES

ROUNDS = 3


def _run(strategy_cls: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(server_app, "Strategy", strategy_cls)  # the one-line swap
    run_config = {"num-server-rounds": ROUNDS}
    grid = InProcessGrid(client_app.app, num_nodes=len(SIZES), run_config=run_config)
    server_app.app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return server_app.RUNS[-1]


def test_the_quickstart_app_runs_with_the_strategy_swapped_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _run(ReliabilityWeightedFedAvg, monkeypatch)
    result, strategy = ours["result"], ours["strategy"]
    assert sorted(result.train_metrics_clientapp) == list(range(1, ROUNDS + 1))
    assert sorted(result.evaluate_metrics_clientapp) == list(range(1, ROUNDS + 1))  # Flower's default evaluation
    assert all(not report.excluded and len(report.weights) == len(SIZES) for report in strategy.reliability_history)
    assert set(result.arrays.keys()) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    chance = 1.0 / NUM_CLASSES
    assert result.evaluate_metrics_serverapp[ROUNDS]["accuracy"] > chance + 0.2  # it learned


def test_every_honest_client_keeps_fedavgs_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _run(ReliabilityWeightedFedAvg, monkeypatch)
    fedavg = _run(server_app.FedAvg, monkeypatch)
    shares = {}
    for report in ours["strategy"].reliability_history:
        for node, weight in report.weights.items():
            shares.setdefault(node, report.fedavg_share[node])
            assert weight >= 0.8 * report.fedavg_share[node], (report.round, node, weight, report.fedavg_share[node])
    np.testing.assert_allclose(sorted(shares.values()), sorted(np.array(SIZES) / sum(SIZES)))
    acc = {name: run["result"].evaluate_metrics_serverapp[ROUNDS]["accuracy"] for name, run in (("ours", ours), ("fedavg", fedavg))}
    assert acc["ours"] >= acc["fedavg"] - 0.02, acc


@pytest.mark.slow
def test_the_quickstart_app_under_flowers_simulation_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.simulation import run_simulation

    monkeypatch.setattr(server_app, "Strategy", ReliabilityWeightedFedAvg)
    runs_before = len(server_app.RUNS)
    run_simulation(
        server_app.app, client_app.app, num_supernodes=len(SIZES),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "log_to_driver": False}},
    )
    assert len(server_app.RUNS) == runs_before + 1
    run = server_app.RUNS[-1]
    assert sorted(run["result"].evaluate_metrics_clientapp) == list(range(1, ROUNDS + 1))
    assert all(len(r.weights) == len(SIZES) and not r.excluded for r in run["strategy"].reliability_history)
