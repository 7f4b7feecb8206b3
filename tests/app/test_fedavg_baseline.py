"""The App's FedAvg baseline in the parameter protocol keeps the frozen body (issue #23, item 6).

Flower's FedAvg averages every array: one node adding +1000 to a body buffer moved the global body,
and from round 2 every honest participant refused it (a run-long denial of service of the baseline).
The App's baseline is the project's FedAvg-equivalent (``method="fedavg"``: FedAvg's weights) with
the body frozen: never read from replies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flwr_ppcdl.app.experiment import body_keys, make_model
from flwr_ppcdl.app.factory import make_strategy
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import run_server
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

from .test_frozen_body import _hostile

CONFIG = {"num-partitions": 4, "num-rounds": 3, "plot": False, "unreliable-fraction": 0.0, "epsilon": 10.0,
          "strategy": "fedavg", "protocol": "parameters"}


def test_the_baseline_is_fedavg_with_the_body_frozen() -> None:
    settings = RunSettings.from_config(CONFIG)
    strategy = make_strategy(settings)
    assert isinstance(strategy, ReliabilityWeightedFedAvg) and strategy.options.method == "fedavg"
    assert strategy.frozen_keys == set(body_keys(make_model(settings)))


def test_a_hostile_body_does_not_stop_the_baseline(tmp_path: Path) -> None:
    config = {**CONFIG, "result-dir": str(tmp_path / "r")}
    grid = InProcessGrid(_hostile, num_nodes=4, run_config=config)
    run = run_server(grid, RunSettings.from_config(config))
    body = make_model(RunSettings()).state_dict()["0.shift"].numpy()
    sent = [m.content["arrays"]["0.shift"].numpy() for m in grid.sent if m.metadata.message_type == "train"]
    assert len(sent) == 4 * 3
    for array in sent:
        np.testing.assert_array_equal(array, body)
    assert run.failures == 0  # no participant refused a changed body
