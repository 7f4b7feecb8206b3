"""Legacy-API ReliabilityWeightedFedAvg (flwr.server.strategy)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from flwr_ppcdl.strategies.compat import ReliabilityWeightedFedAvg

OK = Status(code=Code.OK, message="")
GLOBAL = [np.zeros((4, 3)), np.zeros(3)]


def _res(node_id: int, arrays, count):
    proxy = SimpleNamespace(node_id=node_id, cid=str(node_id))
    return proxy, FitRes(OK, ndarrays_to_parameters(arrays), count, {"partition-id": node_id})


def _configured(strategy):
    manager = SimpleNamespace(num_available=lambda: 0, sample=lambda num_clients, min_num_clients: [])
    strategy.configure_fit(1, ndarrays_to_parameters(GLOBAL), manager)
    return strategy


def _uploads(k, seed=0, identical=False):
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=(4, 3)), rng.normal(size=3)]
    if identical:
        return [base] * k
    return [[a + 0.1 * rng.normal(size=a.shape) for a in base] for _ in range(k)]


@pytest.mark.parametrize("identical,method", [(True, "calibrated"), (False, "fedavg")])
def test_equal_quality_matches_flower_fedavg(identical, method) -> None:
    counts = [30, 50, 20, 40]
    ups = _uploads(4, identical=identical)
    ours = _configured(ReliabilityWeightedFedAvg(method=method))
    got, metrics = ours.aggregate_fit(1, [_res(i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))], [])
    ref, _ = FedAvg().aggregate_fit(1, [_res(i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))], [])
    for a, b in zip(parameters_to_ndarrays(got), parameters_to_ndarrays(ref), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert metrics["reliability/num-included"] == 4


def test_bad_results_are_excluded_and_nothing_valid_keeps_model() -> None:
    ups = _uploads(4, seed=2)
    nan = [a.copy() for a in ups[0]]
    nan[1][0] = np.nan
    strategy = _configured(ReliabilityWeightedFedAvg(fit_metrics_aggregation_fn=lambda m: {"n": len(m)}))
    results = [_res(1, nan, 10), _res(2, [np.zeros(2)], 10), _res(3, ups[2], 0), _res(4, ups[3], 10), _res(5, ups[1], 10)]
    params, metrics = strategy.aggregate_fit(1, results, [RuntimeError("lost")])
    assert params is not None and metrics["n"] == 2
    assert set(strategy.reliability_history[-1].excluded) == {1, 2, 3}
    assert strategy.reliability_history[-1].failures == 1
    params, _ = strategy.aggregate_fit(2, [_res(1, nan, 10)], [])
    assert params is None


def test_constructor_passes_fedavg_arguments_and_validates() -> None:
    s = ReliabilityWeightedFedAvg(fraction_fit=0.5, min_fit_clients=3, false_alarm_rate=0.01)
    assert s.fraction_fit == 0.5 and s.min_fit_clients == 3 and s.options.false_alarm_rate == 0.01
    with pytest.raises(ValueError, match="bogus"):
        ReliabilityWeightedFedAvg(method="bogus")
    with pytest.raises(ValueError, match="server_loss_fn=.* is not used by method='calibrated'"):
        ReliabilityWeightedFedAvg(server_loss_fn=len)  # an option the method ignores is refused
