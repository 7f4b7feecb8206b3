"""The issue's Gram forgery through the real strategies (issue #23, item 2).

Ten regression participants release hardened Gaussian statistics at epsilon = 1 (the App's law). One
keeps its honest target moments and sets one off-diagonal Gram entry to -n. Pooled as before the
checks, it moves the pooled head 2.8 honest spreads; now both protocols exclude its reply
(naming Cauchy-Schwarz) and the aggregate stays where the honest participants put it.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.privacy import (
    FunctionalMechanism,
    Release,
    combine_releases,
    linear_head_parameters,
)
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

from .test_summed_hostile import SENT, W_TRUE, D, _head, _reply

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # seeded (NOT private) test noise

N, PARTICIPANTS, FORGER = 2000, 10, 9
EXPECTED = wire.ReleaseExpectation(
    task="regression", num_features=D, epsilon=1.0, target_bound=1.0, noise="gaussian", delta=1e-5, sampler="discrete"
)


def _release(seed: int) -> Release:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.clip(x @ W_TRUE + 0.05 * rng.normal(size=N), -1, 1)
    fm = FunctionalMechanism(task="regression", epsilon=1.0, noise="gaussian", delta=1e-5, insecure_noise_seed=seed)
    return fm.release(x, y)


def _forged(release: Release) -> Release:
    gram = release.statistics["gram"].copy()
    gram[0, 1] = gram[1, 0] = -float(release.num_examples)  # honest target moments, one entry forged
    return Release(**{**release.__dict__, "statistics": {"gram": gram, "cross": release.statistics["cross"]}})


RELEASES = [_release(seed) for seed in range(PARTICIPANTS)]
FORGED = [*RELEASES[:FORGER], _forged(RELEASES[FORGER])]


def _solution(release: Release) -> np.ndarray:
    weight, bias = linear_head_parameters(release.solve(), release)
    return np.concatenate([np.ravel(weight), np.ravel(bias)])


def _honest_spread() -> float:
    """RMS distance of the honest participants' own solutions to their mean: one honest spread."""
    own = np.array([_solution(r) for r in RELEASES[:FORGER]])
    return float(np.sqrt(np.mean(np.sum((own - own.mean(axis=0)) ** 2, axis=1))))


def _replies(releases: list[Release]) -> list:
    out = []
    for node, release in enumerate(releases, start=1):
        weight, bias = linear_head_parameters(release.solve(), release)
        arrays = dict(SENT, **{"head.weight": weight.reshape(1, D).astype(np.float32), "head.bias": bias.reshape(1).astype(np.float32)})
        out.append(_reply(node, wire.encode_release(release), release.num_examples, arrays))
    return out


def _configured(strategy: ReliabilityWeightedFedAvg) -> ReliabilityWeightedFedAvg:
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    return strategy


def test_pooled_without_the_checks_the_forgery_moves_the_head_over_two_spreads() -> None:
    """What the checks prevent (the issue's reproduction, in miniature): the plain pooled sum."""
    honest = _solution(combine_releases(RELEASES[:FORGER]))
    forged = _solution(combine_releases(FORGED))
    assert np.linalg.norm(forged - honest) > 2 * _honest_spread()  # measured: 2.8 spreads


@pytest.mark.parametrize("reliability", [True, False])
def test_the_statistics_protocol_excludes_the_forgery(reliability: bool) -> None:
    honest_only, _ = _configured(SummedStatisticsFedAvg(reliability=reliability, expected_release=EXPECTED)).aggregate_train(
        1, _replies(RELEASES[:FORGER]))
    strategy = _configured(SummedStatisticsFedAvg(reliability=reliability, expected_release=EXPECTED))
    arrays, _ = strategy.aggregate_train(1, _replies(FORGED))
    excluded = strategy.reliability_history[-1].excluded
    assert set(excluded) == {FORGER + 1} and "Cauchy-Schwarz" in excluded[FORGER + 1], excluded
    assert np.linalg.norm(_head(arrays) - _head(honest_only)) <= _honest_spread()


def test_the_parameter_protocol_excludes_the_reply_with_the_forged_release() -> None:
    strategy = _configured(ReliabilityWeightedFedAvg(expected_release=EXPECTED, frozen_keys=["body.offset"]))
    honest = _configured(ReliabilityWeightedFedAvg(expected_release=EXPECTED, frozen_keys=["body.offset"]))
    honest_only, _ = honest.aggregate_train(1, _replies(RELEASES[:FORGER]))
    arrays, _ = strategy.aggregate_train(1, _replies(FORGED))
    excluded = strategy.reliability_history[-1].excluded
    assert set(excluded) == {FORGER + 1}, excluded
    assert wire.FM_RELEASE in excluded[FORGER + 1] and "Cauchy-Schwarz" in excluded[FORGER + 1]
    assert np.linalg.norm(_head(arrays) - _head(honest_only)) <= _honest_spread()
