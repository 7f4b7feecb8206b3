"""ServerApp (the quickstart's ``server_app.py``) with the strategy class in one line."""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch.utils.data import DataLoader

from .task import Net, load_centralized_test
from .task import test as test_fn

Strategy: Any = FedAvg  # the drop-in swap: Strategy = ReliabilityWeightedFedAvg

app = ServerApp()
RUNS: list[dict[str, Any]] = []  # what each run produced, for the test


@app.main()
def main(grid: Grid, context: Context) -> None:
    num_rounds = int(context.run_config.get("num-server-rounds", 3))
    torch.manual_seed(0)
    arrays = ArrayRecord(Net().state_dict())
    strategy = Strategy(fraction_train=1.0, min_train_nodes=5, min_available_nodes=5)

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = Net()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = test_fn(model, DataLoader(load_centralized_test(), batch_size=100))
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    result = strategy.start(
        grid=grid, initial_arrays=arrays, train_config=ConfigRecord({"lr": 0.05}),
        num_rounds=num_rounds, evaluate_fn=central_evaluate,
    )
    RUNS.append({"strategy": strategy, "result": result})
