"""Both strategy flavours under Flower's real simulation runtime (Ray). Slow."""

from __future__ import annotations

import numpy as np
import pytest

from .numpy_apps import DIM, make_legacy_app, make_message_app

pytestmark = pytest.mark.slow

BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "log_to_driver": False}}


def test_message_api_under_run_simulation() -> None:
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

    strategy = ReliabilityWeightedFedAvg(min_available_nodes=3, min_train_nodes=3, fraction_evaluate=0.0)
    results = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        results["result"] = strategy.start(grid, ArrayRecord([np.zeros(DIM)]), num_rounds=2)

    run_simulation(server, make_message_app(frozenset({0})), num_supernodes=3, backend_config=BACKEND)
    result = results["result"]
    assert len(strategy.reliability_history) == 2
    for entry in strategy.reliability_history:
        assert len(entry.weights) == 3 and not entry.excluded  # zero failures
    assert "reliability/median" in result.train_metrics_clientapp[2]


def test_legacy_api_under_run_simulation() -> None:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    from flwr_ppcdl.strategies.compat import ReliabilityWeightedFedAvg

    strategy = ReliabilityWeightedFedAvg(
        min_available_clients=3, min_fit_clients=3, fraction_evaluate=0.0,
        initial_parameters=ndarrays_to_parameters([np.zeros(DIM)]),
    )
    server = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=2)))
    run_simulation(server, make_legacy_app(frozenset({0})), num_supernodes=3, backend_config=BACKEND)
    assert len(strategy.reliability_history) == 2
    for entry in strategy.reliability_history:
        assert entry.failures == 0 and len(entry.weights) == 3 and not entry.excluded
