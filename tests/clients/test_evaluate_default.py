"""Flower's default ``fraction_evaluate=1.0`` never turns into client errors (issue #12.7).

With local evaluation off, an evaluation request is answered without reading a record or spending
epsilon: the release's noisy objective at the global model (finite), its public ``n``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context
from flwr.serverapp.strategy import FedAvg

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.clients import (
    ClientSetup,
    FunctionalMechanismClient,
    TrainerConfig,
    load_state,
    make_client_app,
)
from tests.clients.helpers import CountingLoader, digits, digits_model

EPSILON = 5.0


def _loader(pid: int) -> CountingLoader:
    x, y, _, _ = digits()
    idx = np.array_split(np.arange(len(y)), 3)[pid]
    return CountingLoader(x[idx], y[idx])


def test_numpy_client_answers_evaluate_without_reading_records() -> None:
    context: dict[str, Any] = {}
    model = digits_model()
    data = _loader(0)
    client = FunctionalMechanismClient(model, data, context=context, task="classification", num_classes=10, epsilon=EPSILON)
    params = client.get_parameters({})
    loss, n, metrics = client.evaluate(params, {})  # before any release: nothing to report, no read
    assert (loss, metrics["fm-epsilon"]) == (0.0, 0.0) and n == 1 and data.iterations == 0
    new_params, n_fit, _ = client.fit(params, {})
    reads = data.iterations
    client = FunctionalMechanismClient(model, data, context=context, task="classification", num_classes=10, epsilon=EPSILON)
    loss, n, metrics = client.evaluate(new_params, {})
    assert data.iterations == reads  # no record read
    assert math.isfinite(loss) and loss == metrics["fm-objective"] and n == n_fit
    assert metrics["fm-epsilon"] == pytest.approx(EPSILON, rel=1e-9)  # nothing more spent


def test_message_client_app_under_flowers_default_fedavg() -> None:
    """FedAvg() as a Flower user writes it (fraction_evaluate=1.0): every evaluation reply is
    valid, the run's client-side evaluation metrics exist, each participant read its records once."""
    loaders = {pid: _loader(pid) for pid in range(3)}

    def setup(context: Context) -> ClientSetup:
        pid = int(context.node_config["partition-id"])
        return ClientSetup(digits_model(), loaders[pid], TrainerConfig(task="classification", num_classes=10, epsilon=EPSILON))

    grid = InProcessGrid(make_client_app(setup), num_nodes=3)
    result = FedAvg(min_train_nodes=3, min_evaluate_nodes=3, min_available_nodes=3).start(
        grid, ArrayRecord(digits_model().state_dict()), num_rounds=2
    )
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]
    for metrics in result.evaluate_metrics_clientapp.values():
        assert math.isfinite(float(metrics["fm-objective"])) and metrics["fm-epsilon"] == pytest.approx(EPSILON)
    for context in grid.contexts.values():
        assert load_state(context).records_read == 1
    assert all(loader.iterations == 1 for loader in loaders.values())
