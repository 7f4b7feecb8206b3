"""Flower's DP wrappers around the strategies (issue #12.6): a correct guarantee, or a refusal saying why.

The wrappers size their Gaussian noise for clients that each move the aggregate by at most
``clipping_norm / num_sampled_clients``. The tests measure that bound directly (noise multiplier 0,
so only the aggregation is seen): replace one client's update and see how far the aggregate moves.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping as LegacyServerSide
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.strategies.compat import ReliabilityWeightedFedAvg as LegacyReliability
from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

from .numpy_apps import DIM, make_message_app

WRAPPERS = [DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyClientSideFixedClipping]
CLIP = 1.0
N = 4
COUNTS = [10, 10, 10, 1000]  # FedAvg would give the last client 97 % of the step


def _wrapped(wrapper: Any, inner: Any) -> Any:
    return wrapper(inner, noise_multiplier=0.0, clipping_norm=CLIP, num_sampled_clients=N)


def _clipped(v: np.ndarray) -> np.ndarray:
    return v * min(1.0, CLIP / float(np.linalg.norm(v)))


def _aggregate(wrapper: Any, inner: Any, updates: list[np.ndarray]) -> np.ndarray:
    """One round through ``wrapper(inner)``: configure from zeros, aggregate replies with ``updates``
    (pre-clipped for the client-side wrapper, as ``fixedclipping_mod`` would send them)."""
    strategy = _wrapped(wrapper, inner)
    grid = InProcessGrid(lambda m, c: m, num_nodes=N)
    instructions = list(strategy.configure_train(1, ArrayRecord([np.zeros(DIM)]), ConfigRecord(), grid))
    client_side = wrapper is DifferentialPrivacyClientSideFixedClipping
    replies = []
    for ins, update, count in zip(instructions, updates, COUNTS, strict=True):
        ins.metadata.__dict__["_message_id"] = f"m{ins.metadata.dst_node_id}"
        ins.metadata.__dict__["_src_node_id"] = 0
        arrays = _clipped(update) if client_side else update
        content = RecordDict({"arrays": ArrayRecord([arrays]), "metrics": MetricRecord({"num-examples": count})})
        replies.append(Message(content, reply_to=ins))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return arrays["0"].numpy()


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_reliability_weighting_under_a_dp_wrapper_is_refused_with_the_reason(wrapper: Any) -> None:
    strategy = _wrapped(wrapper, ReliabilityWeightedFedAvg(fraction_evaluate=0.0))
    grid = InProcessGrid(make_message_app(), N)
    with pytest.raises(ValueError, match="1/num_sampled_clients") as err:
        strategy.start(grid, ArrayRecord([np.zeros(DIM)]), num_rounds=1)
    assert "method='uniform'" in str(err.value) and "overstated" in str(err.value)
    assert not grid.sent  # refused before anything was sent


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_uniform_weighting_keeps_each_client_within_clip_over_n(wrapper: Any) -> None:
    rng = np.random.default_rng(0)
    honest = [rng.normal(size=DIM) for _ in range(N - 1)]
    moves = []
    for _ in range(5):  # replace the big client's update by another one, several times
        a, b = 5 * rng.normal(size=DIM), 5 * rng.normal(size=DIM)
        agg_a = _aggregate(wrapper, ReliabilityWeightedFedAvg(method="uniform"), [*honest, a])
        agg_b = _aggregate(wrapper, ReliabilityWeightedFedAvg(method="uniform"), [*honest, b])
        moves.append(float(np.linalg.norm(agg_a - agg_b)))
    assert max(moves) <= 2 * CLIP / N + 1e-9  # |w| <= 1/N, both updates clipped to CLIP
    # the same replies through plain FedAvg move it by up to 2 * CLIP * 0.97: the bound is not trivial
    fedavg = [_aggregate(wrapper, FedAvg(), [*honest, v]) for v in (5 * np.ones(DIM), -5 * np.ones(DIM))]
    assert np.linalg.norm(fedavg[0] - fedavg[1]) > 2 * CLIP / N


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_an_excluded_reply_leaves_its_share_on_the_global_model(wrapper: Any) -> None:
    rng = np.random.default_rng(1)
    updates = [_clipped(rng.normal(size=DIM)) for _ in range(N - 1)] + [np.full(DIM, np.nan)]
    inner = ReliabilityWeightedFedAvg(method="uniform")
    got = _aggregate(wrapper, inner, updates)
    np.testing.assert_allclose(got, sum(updates[:-1]) / N, atol=1e-12)  # fixed denominator N, start 0
    weights = inner.reliability_history[-1].weights
    assert all(w == pytest.approx(1 / N) for w in weights.values()) and len(weights) == N - 1


def test_client_side_wrapper_with_fixedclipping_mod_runs_end_to_end() -> None:
    inner = ReliabilityWeightedFedAvg(method="uniform", fraction_evaluate=0.0)
    strategy = DifferentialPrivacyClientSideFixedClipping(inner, noise_multiplier=0.1, clipping_norm=CLIP, num_sampled_clients=N)
    base = make_message_app()
    app = ClientApp(mods=[fixedclipping_mod])

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        return base(msg, context)

    result = strategy.start(InProcessGrid(app, N), ArrayRecord([np.zeros(DIM)]), num_rounds=2)
    assert len(inner.reliability_history) == 2
    assert all(w == pytest.approx(1 / N) for r in inner.reliability_history for w in r.weights.values())
    assert np.all(np.isfinite(result.arrays.to_numpy_ndarrays()[0]))


def test_summed_statistics_refuses_a_dp_wrapper() -> None:
    strategy = _wrapped(DifferentialPrivacyServerSideFixedClipping, SummedStatisticsFedAvg(reliability=False))
    with pytest.raises(ValueError, match="pooled released statistics"):
        list(strategy.configure_train(1, ArrayRecord([np.zeros(DIM)]), ConfigRecord(), InProcessGrid(lambda m, c: m, num_nodes=N)))


def test_accounted_mode_refuses_the_strategy() -> None:
    """Flower's accountant accepts only FedAvg.aggregate_train (its check, in its constructor)."""
    from flwr.serverapp import RdpAccountant
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod

    config = PrivacyConfig(
        target_delta=1e-5, population_size=N, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    with pytest.raises(ValueError, match="FedAvg.aggregate_train"):
        DifferentialPrivacyServerSideFixedClipping(
            ReliabilityWeightedFedAvg(method="uniform"), 1.0, CLIP, N, accountant=RdpAccountant(config)
        )


def _legacy_round(inner: LegacyReliability, updates: list[np.ndarray]) -> np.ndarray:
    strategy = LegacyServerSide(inner, noise_multiplier=0.0, clipping_norm=CLIP, num_sampled_clients=N)
    manager = SimpleNamespace(num_available=lambda: N, sample=lambda num_clients, min_num_clients: [],
                              wait_for=lambda *a, **k: True)
    strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(DIM)]), manager)
    results = [
        (SimpleNamespace(node_id=i + 1, cid=str(i + 1)), FitRes(Status(Code.OK, ""), ndarrays_to_parameters([u]), n, {}))
        for i, (u, n) in enumerate(zip(updates, COUNTS, strict=True))
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is not None
    return parameters_to_ndarrays(params)[0]


def test_legacy_server_side_wrapper_refuses_or_bounds_each_client() -> None:
    rng = np.random.default_rng(2)
    honest = [rng.normal(size=DIM) for _ in range(N - 1)]
    with pytest.raises(ValueError, match="method='uniform'"):
        _legacy_round(LegacyReliability(), [*honest, np.ones(DIM)])
    a = _legacy_round(LegacyReliability(method="uniform"), [*honest, 5 * np.ones(DIM)])
    b = _legacy_round(LegacyReliability(method="uniform"), [*honest, -5 * np.ones(DIM)])
    assert np.linalg.norm(a - b) <= 2 * CLIP / N + 1e-9
