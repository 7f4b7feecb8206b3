"""The parameter protocol scores each shared release's known-law view beside the parameters (issue #13).

A functional-mechanism participant's parameters carry its privacy noise through a local solve the server
never sees, so under label skew honest and flipped-label parameters look alike; its release's class
means have a public noise law, and the row tests catch flipped labels there. Both Flower API generations
take the view from the reply; a bad release excludes its reply, naming the node, and steers nothing.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.reliability import ReliabilityAggregator, ReliabilityOptions, ScoredView, Upload
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg, compat
from flwr_ppcdl.strategies.releases import release_view

from ..reliability.synthetic import C, P, class_rows, label_skewed_releases
from .numpy_apps import instruction
from .test_summed_hostile import EXPECTED, HONEST, HOSTILE

FLIPPED = [6, 7, 8, 9]  # they hold 16,000 of the 25,000 records


def _alike_parameters(rng: np.random.Generator, k: int) -> list[list[np.ndarray]]:
    """K uploads of a 5-class head on 6 features that no parameter test can tell apart."""
    base = [rng.normal(size=(5, 6)), rng.normal(size=5)]
    return [[(a + 0.05 * rng.normal(size=a.shape)).astype(np.float32) for a in base] for _ in range(k)]


def _shares(agg: ReliabilityAggregator, sizes: np.ndarray) -> np.ndarray:
    rep = agg.history[-1]
    return np.array([rep.weights[i] for i in range(len(sizes))]) / (sizes / sizes.sum())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_release_view_catches_flipped_labels_that_the_parameters_hide() -> None:
    """Four colluding flipped-label participants with most of the data, parameters alike (no parameter test
    can tell them apart): with the views, whose evidence adds to the parameters', the four fall to <= 0.2x
    their share in every round, and honest participants keep >= 0.8x in at least 90 % of
    participant-rounds (false alarms at the stated rate, with or without the four)."""
    rng = np.random.default_rng(3)
    kept = []
    for flipped in ([], FLIPPED):
        releases, sizes = label_skewed_releases(rng, set(flipped))
        views = [release_view(r) for r in releases]
        with_views = ReliabilityAggregator(ReliabilityOptions(seed=0))
        honest = [i for i in range(10) if i not in flipped]
        share = sizes / sizes.sum()
        for rnd in range(1, 4):
            ups = _alike_parameters(rng, 10)
            with_views.aggregate(rnd, [Upload(i, u, s, view=v) for i, (u, s, v) in enumerate(zip(ups, sizes, views, strict=True))])
            kept.extend(_shares(with_views, sizes)[honest] >= 0.8)
            if flipped:
                assert (_shares(with_views, sizes) * share)[flipped].sum() <= 0.2 * share[flipped].sum()
                assert min(with_views.history[-1].evidence[i] for i in flipped) > 0
    assert float(np.mean(kept)) >= 0.9


def test_a_view_beside_parameters_keeps_the_stated_false_alarm_rate() -> None:
    """Honest participants scored on their parameters and their views (one summed log-likelihood ratio,
    one threshold): the fraction of honest participants flagged is within a factor 2 of the stated 2 %
    (1,000 draws of ten participants of unequal precision: with 200, the rate's sd of .002 could not tell .0093 from .01)."""
    rng = np.random.default_rng(11)
    flagged = []
    for _ in range(1000):
        sd = rng.uniform(0.1, 1.0, size=10)
        stack, noise = class_rows(rng, 10, sd)
        counts = rng.integers(500, 5000, size=10).astype(float)
        agg = ReliabilityAggregator(ReliabilityOptions(seed=int(rng.integers(1 << 30))))
        ups = [[a] for a in rng.normal(size=(10, 30))]
        agg.aggregate(1, [Upload(i, ups[i], counts[i], view=ScoredView([stack[i].reshape(C, P)], [noise[i].reshape(C, P)]))
                          for i in range(10)])
        flagged.append([agg.history[-1].evidence[i] > 0 for i in range(10)])
    assert 0.01 <= float(np.mean(flagged)) <= 0.04


# -- through the Flower adapters ---------------------------------------------------------------------

HEAD = {"head.weight": np.zeros((5, 6), np.float32), "head.bias": np.zeros(5, np.float32)}


def _message(node: int, arrays: dict[str, np.ndarray], count: float, release_json: Any) -> Message:
    records: dict[str, Any] = {
        "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        "metrics": MetricRecord({"num-examples": float(count), "partition-id": node}),
    }
    if release_json is not None:
        records[wire.FM_RELEASE] = ConfigRecord({wire.RELEASE_JSON: release_json})
    return Message(RecordDict(records), reply_to=instruction(node))


def _message_strategy(sent: dict[str, np.ndarray], **kwargs: Any) -> ReliabilityWeightedFedAvg:
    strategy = ReliabilityWeightedFedAvg(seed=0, **kwargs)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in sent.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    return strategy


def _legacy_strategy(sent: dict[str, np.ndarray], **kwargs: Any) -> compat.ReliabilityWeightedFedAvg:
    strategy = compat.ReliabilityWeightedFedAvg(seed=0, **kwargs)
    manager = SimpleNamespace(num_available=lambda: 0, sample=lambda num_clients, min_num_clients: [])
    strategy.configure_fit(1, ndarrays_to_parameters(list(sent.values())), manager)
    return strategy


def _fit_result(node: int, arrays: dict[str, np.ndarray], count: float, release_json: Any) -> tuple[Any, FitRes]:
    metrics: dict[str, Any] = {"partition-id": node}
    if release_json is not None:
        metrics[wire.FM_RELEASE] = release_json
    proxy = SimpleNamespace(node_id=node, cid=str(node))
    return proxy, FitRes(Status(code=Code.OK, message=""), ndarrays_to_parameters(list(arrays.values())), int(count), metrics)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_both_api_generations_score_the_shared_releases_alike() -> None:
    """FM replies carrying their release: the Message-API and the legacy strategy give the same weights,
    the flipped four lose theirs; ``score_releases=False`` scores the parameters alone (alike: FedAvg's
    weights)."""
    rng = np.random.default_rng(4)
    releases, sizes = label_skewed_releases(rng, set(FLIPPED))
    texts = [wire.encode_release(r) for r in releases]
    ups = [dict(zip(HEAD, u, strict=True)) for u in _alike_parameters(rng, 10)]
    message = _message_strategy(HEAD)
    message.aggregate_train(1, [_message(i, ups[i], sizes[i], texts[i]) for i in range(10)])
    legacy = _legacy_strategy(HEAD)
    legacy.aggregate_fit(1, [_fit_result(i, ups[i], sizes[i], texts[i]) for i in range(10)], [])
    plain = _message_strategy(HEAD, score_releases=False)
    plain.aggregate_train(1, [_message(i, ups[i], sizes[i], texts[i]) for i in range(10)])
    w_message = np.array([message.reliability_history[-1].weights[i] for i in range(10)])
    w_legacy = np.array([legacy.reliability_history[-1].weights[i] for i in range(10)])
    w_plain = np.array([plain.reliability_history[-1].weights[i] for i in range(10)])
    share = sizes / sizes.sum()
    np.testing.assert_allclose(w_legacy, w_message, rtol=1e-12)
    assert w_message[FLIPPED].sum() <= 0.2 * share[FLIPPED].sum(), w_message / share
    np.testing.assert_allclose(w_plain, share, rtol=1e-4)


SENT = {"body.offset": np.arange(4, dtype=np.float32), "head.weight": np.zeros((1, 4), np.float32),
        "head.bias": np.zeros(1, np.float32)}


def _honest_uploads() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(8)
    return [dict(SENT, **{"head.weight": rng.normal(size=(1, 4)).astype(np.float32),
                          "head.bias": rng.normal(size=1).astype(np.float32)}) for _ in HONEST]


def _honest_messages() -> list[Message]:
    return [_message(i + 1, u, r.num_examples, wire.encode_release(r)) for i, (u, r) in enumerate(zip(_honest_uploads(), HONEST, strict=True))]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_release_beside_parameters_is_excluded_naming_the_node(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every tampered release of the statistics protocol's hostile set, sent with honest-looking
    parameters: the reply is excluded with a warning naming its node, nothing raises, and the model is
    the one aggregated from the honest replies alone."""
    honest_only, _ = _message_strategy(SENT, frozen_keys=["body.offset"], expected_release=EXPECTED).aggregate_train(
        1, _honest_messages())
    strategy = _message_strategy(SENT, frozen_keys=["body.offset"], expected_release=EXPECTED)
    hostile = _message(99, _honest_uploads()[0], HONEST[0].num_examples, HOSTILE[name])
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, [*_honest_messages(), hostile])
    excluded = strategy.reliability_history[-1].excluded
    assert 99 in excluded and wire.FM_RELEASE in excluded[99], excluded
    assert any("node p99" in r.getMessage() for r in caplog.records)
    assert arrays is not None and honest_only is not None
    for key in SENT:
        np.testing.assert_allclose(arrays[key].numpy(), honest_only[key].numpy(), rtol=1e-6)


def test_a_release_whose_n_differs_from_the_claimed_count_excludes_the_reply() -> None:
    strategy = _message_strategy(SENT, expected_release=EXPECTED)
    lying = _message(99, _honest_uploads()[0], 10 * HONEST[0].num_examples, wire.encode_release(HONEST[0]))
    strategy.aggregate_train(1, [*_honest_messages(), lying])
    assert "differs from the release" in strategy.reliability_history[-1].excluded[99]


def test_the_app_shares_the_release_where_the_server_scores_it() -> None:
    """``share-release = auto``: the statistics protocol, and the parameter protocol under the calibrated
    reliability estimator; not for Flower's rules or server-data scoring, which never read it."""
    def shares(**config: Any) -> bool:
        return RunSettings.from_config(config).shares_release

    assert shares()  # the default job: statistics protocol
    assert shares(protocol="parameters")  # reliability strategy, calibrated estimator
    assert not shares(protocol="parameters", **{"share-release": "never"})
    assert not shares(strategy="fedmedian")
    assert not shares(protocol="parameters", **{"reliability-method": "server-data"})
    assert shares(strategy="fedmedian", **{"share-release": "always"})
