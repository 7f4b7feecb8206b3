"""Hostile replies through both Flower strategies with their defaults (issues #11, #23.3, #25).

The pure core is tested scenario by scenario in ``tests/reliability/test_hostile_uploads.py``; here
the same well-formed hostile uploads travel as Flower replies (Message API and legacy API), so the
conversion, the count handling and the frozen arrays of the adapters are covered too: no exception
leaves ``aggregate_train``/``aggregate_fit`` and the aggregate stays within one honest spread
(RMS distance of the honest uploads to their mean) of the honest mean.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.strategies.compat import (
    ReliabilityWeightedFedAvg as LegacyReliabilityWeightedFedAvg,
)

KEYS = ("head.weight", "head.bias")
SHAPES = [(10, 17), (10,)]
K = 10


def _honest_round(seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[float]]:
    """Near convergence: the global model, honest uploads around a small common drift, counts."""
    rng = np.random.default_rng(seed)
    theta = [rng.normal(size=s) for s in SHAPES]
    drift = [0.05 * rng.normal(size=s) / np.sqrt(np.prod(s)) for s in SHAPES]
    ups = [[t + d + 0.02 * rng.normal(size=s) / np.sqrt(np.prod(s)) for t, d, s in zip(theta, drift, SHAPES, strict=True)]
           for _ in range(K)]
    return theta, ups, [float(c) for c in rng.integers(500, 2000, size=K)]


def _sign_flip(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    for i in range(3):  # three colluders send the honest delta reversed, x10
        ups[i] = [t - 10 * (u - t) for t, u in zip(theta, ups[i + 3], strict=True)]
    return [0, 1, 2]


def _identical_far(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    for i in range(4):  # four colluders agree on one far point
        ups[i] = [t + 2.0 for t in theta]
    return [0, 1, 2, 3]


def _count_liar(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    ups[0] = [t + 3.0 for t in theta]
    counts[0] = 1e12
    return [0]


def _three_spreads(ups: list[list[np.ndarray]], honest: list[int], seed: int = 0) -> list[np.ndarray]:
    """A point three honest spreads from the honest mean, in a random direction."""
    flat = np.stack([_flat(ups[i]) for i in honest])
    mean = flat.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((flat - mean) ** 2, axis=1))))
    direction = np.random.default_rng(seed + 11).normal(size=mean.shape)
    point = mean + 3.0 * spread * direction / np.linalg.norm(direction)
    return [point[:170].reshape(SHAPES[0]), point[170:].reshape(SHAPES[1])]


def _count_liar_three_spreads(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    """Issue #23.3: no max_num_examples, a 1e12 claim with an upload three honest spreads away."""
    ups[0] = _three_spreads(ups, list(range(1, K)))
    counts[0] = 1e12
    return [0]


def _colluders_three_spreads(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    """Issue #25: four identical uploads three honest spreads away."""
    far = _three_spreads(ups, list(range(4, K)))
    for i in range(4):
        ups[i] = [a.copy() for a in far]
    return [0, 1, 2, 3]


def _huge(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    ups[0] = [t + 1e11 for t in theta]  # below max_abs: scored, not excluded as absurd
    return [0]


def _negative_count(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[int]:
    ups[0] = [t + 5.0 for t in theta]
    counts[0] = -1e6
    return [0]


ATTACKS: dict[str, Callable[..., list[int]]] = {
    "3/10 sign-flipped x10": _sign_flip,
    "4/10 identical far": _identical_far,
    "count liar 1e12": _count_liar,
    "count liar 1e12, three spreads": _count_liar_three_spreads,
    "4/10 identical, three spreads": _colluders_three_spreads,
    "one 1e11 upload": _huge,
    "negative count": _negative_count,
}


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def _message_api(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[np.ndarray]:
    strategy = ReliabilityWeightedFedAvg()
    grid = InProcessGrid(lambda m, c: m, num_nodes=K)
    list(strategy.configure_train(1, ArrayRecord({k: Array(t) for k, t in zip(KEYS, theta, strict=True)}), ConfigRecord(), grid))
    replies = []
    for node, (up, count) in enumerate(zip(ups, counts, strict=True), start=1):
        ins = Message(RecordDict({"config": ConfigRecord()}), node, "train")
        ins.metadata.__dict__["_message_id"] = f"m{node}"
        content = RecordDict({
            "arrays": ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(KEYS, up, strict=True)}),
            "metrics": MetricRecord({"num-examples": count}),
        })
        replies.append(Message(content, reply_to=ins))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return [arrays[k].numpy() for k in KEYS]


def _legacy_api(theta: list[np.ndarray], ups: list[list[np.ndarray]], counts: list[float]) -> list[np.ndarray]:
    strategy = LegacyReliabilityWeightedFedAvg()
    manager = SimpleNamespace(num_available=lambda: 0, sample=lambda num_clients, min_num_clients: [])
    strategy.configure_fit(1, ndarrays_to_parameters(theta), manager)
    ok = Status(code=Code.OK, message="")
    results: list[Any] = []
    for node, (up, count) in enumerate(zip(ups, counts, strict=True), start=1):
        # FitRes declares an int count; a hostile client sends whatever it likes
        results.append((SimpleNamespace(node_id=node, cid=str(node)), FitRes(ok, ndarrays_to_parameters(up), count, {})))  # type: ignore[arg-type]
    parameters, _ = strategy.aggregate_fit(1, results, [])
    assert parameters is not None
    return parameters_to_ndarrays(parameters)


@pytest.mark.parametrize("api", [_message_api, _legacy_api], ids=["message-api", "legacy-api"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("seed", range(2))
def test_hostile_replies_do_not_steer_either_strategy(api: Callable[..., list[np.ndarray]], attack: str, seed: int) -> None:
    theta, ups, counts = _honest_round(seed)
    hostile = ATTACKS[attack](theta, ups, counts)
    honest = np.stack([_flat(u) for i, u in enumerate(ups) if i not in hostile])
    mean = honest.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((honest - mean) ** 2, axis=1))))
    aggregate = _flat(api(theta, ups, counts))
    assert np.all(np.isfinite(aggregate))
    distance = float(np.linalg.norm(aggregate - mean))
    assert distance <= spread, f"{attack}: aggregate {distance:.3g} from the honest mean, honest spread {spread:.3g}"
