"""The FedAvg contract a drop-in replacement must keep (issue #12), for both API generations.

Where Flower's FedAvg and ReliabilityWeightedFedAvg should agree, they are run side by side on the
same replies: honest uploads get FedAvg's weights; names, dtypes and shapes survive with or
without ``configure_train``; the metrics are FedAvg's plus a fixed set of summary keys; a round of
nothing but errors returns ``(None, None)``; a node counts once per round.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from unittest.mock import MagicMock, Mock

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.serverapp.strategy import FedAvg

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.strategies.compat import ReliabilityWeightedFedAvg as LegacyReliability

from .numpy_apps import instruction, local_step

NAMES = ("fc.weight", "fc.bias", "bn.num_batches_tracked")


def _reply(node_id: int, arrays: dict[str, np.ndarray], count: float, **metrics: float) -> Message:
    content = RecordDict({
        "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
        "metrics": MetricRecord({"num-examples": count, **metrics}),
    })
    return Message(content, reply_to=instruction(node_id))


def _honest_uploads(counts: list[int], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Local gradient steps of honest clients on IID shards of one linear regression task."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=6)
    start = np.zeros(6)
    out = []
    for n in counts:
        x = rng.normal(size=(n, 6))
        y = x @ w_true + 0.3 * rng.normal(size=n)
        w = local_step(start, x, y, lr=0.1, steps=5)
        out.append({"fc.weight": w[:5].astype(np.float32).reshape(1, 5), "fc.bias": w[5:].astype(np.float32)})
    return out


def _configure(strategy: FedAvg, arrays: dict[str, np.ndarray]) -> None:
    grid = InProcessGrid(lambda m, c: m, num_nodes=2)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in arrays.items()}), ConfigRecord(), grid))


def test_equal_evidence_gives_exactly_fedavgs_weights_for_unequal_counts() -> None:
    """Identical uploads (equal evidence) with unequal claimed counts: exactly FedAvg's weights and model."""
    counts = [20, 40, 60, 90, 120, 150, 200]
    upload = _honest_uploads([50])[0]
    ours = ReliabilityWeightedFedAvg()
    _configure(ours, {"fc.weight": np.zeros((1, 5), np.float32), "fc.bias": np.zeros(1, np.float32)})
    got, _ = ours.aggregate_train(1, [_reply(10 + i, upload, n) for i, n in enumerate(counts)])
    weights = ours.reliability_history[-1].weights
    np.testing.assert_allclose([weights[10 + i] for i in range(7)], np.array(counts) / sum(counts), rtol=1e-12)
    assert got is not None
    np.testing.assert_allclose(got["fc.weight"].numpy(), upload["fc.weight"], rtol=1e-6)


def test_honest_uploads_with_unequal_counts_get_fedavgs_weights_up_to_false_alarms() -> None:
    """Honest local steps on IID shards with unequal counts (the small ones noisier): a participant keeps
    FedAvg's weight unless its evidence passes the calibrated threshold, which an honest participant's does
    at the stated 2 % rate -- over ten seeds at least 90 % of participants keep >= 0.8x their share, and the
    aggregate is FedAvg's (within 5 %) in at least 8 of the 10 seeds."""
    counts = [20, 40, 60, 90, 120, 150, 200]
    start = {"fc.weight": np.zeros((1, 5), np.float32), "fc.bias": np.zeros(1, np.float32)}
    kept, close = [], []
    for seed in range(10):
        uploads = _honest_uploads(counts, seed)
        ours = ReliabilityWeightedFedAvg()
        _configure(ours, start)
        replies = [_reply(10 + i, u, n) for i, (u, n) in enumerate(zip(uploads, counts, strict=True))]
        got, _ = ours.aggregate_train(1, replies)
        ref, _ = FedAvg().aggregate_train(1, replies)
        weights = ours.reliability_history[-1].weights
        kept.extend(weights[10 + i] >= 0.8 * share for i, share in enumerate(np.array(counts) / sum(counts)))
        assert got is not None and ref is not None
        close.append(all(np.allclose(got[k].numpy(), ref[k].numpy(), rtol=0.05, atol=1e-3) for k in ("fc.weight", "fc.bias")))
    assert np.mean(kept) >= 0.9 and sum(close) >= 8, (np.mean(kept), close)


@pytest.mark.parametrize("configured", [True, False])
def test_names_dtypes_and_shapes_are_fedavgs_with_or_without_configure_train(configured: bool) -> None:
    rng = np.random.default_rng(3)
    template = {
        "fc.weight": rng.normal(size=(3, 4)).astype(np.float32),
        "fc.bias": rng.normal(size=3).astype(np.float64),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    uploads = [{k: (v + (i if v.dtype.kind == "i" else 0.01 * i)).astype(v.dtype) for k, v in template.items()} for i in range(4)]
    counts = [10, 10, 10, 10]
    ours = ReliabilityWeightedFedAvg(method="fedavg")  # the weights are another test's business
    if configured:
        _configure(ours, template)
    got, _ = ours.aggregate_train(1, [_reply(i + 1, u, n) for i, (u, n) in enumerate(zip(uploads, counts, strict=True))])
    ref, _ = FedAvg().aggregate_train(1, [_reply(i + 1, u, n) for i, (u, n) in enumerate(zip(uploads, counts, strict=True))])
    assert got is not None and ref is not None
    assert list(got.keys()) == list(ref.keys()) == list(NAMES)
    for key in NAMES:
        a, b = got[key].numpy(), ref[key].numpy()
        # configured: the dtype the server sent (FedAvg turns the int64 counter into float64)
        want = template[key].dtype if configured else b.dtype
        assert (a.dtype, a.shape) == (want, b.shape), key
        np.testing.assert_allclose(a, np.rint(b) if want.kind == "i" else b, rtol=1e-5)


def test_flower_style_mock_replies_without_sender_ids_are_all_aggregated() -> None:
    """Flower's own unit tests build replies as ``Mock(spec=Message)`` (no integer sender id):
    each is its own participant, never a repeat of another (issue #12.2)."""

    def mock_reply(arrays: list[np.ndarray], count: float) -> Message:
        message = Mock(spec=Message)
        message.content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": count})})
        message.has_error.side_effect = lambda: False
        message.has_content.side_effect = lambda: True
        return message

    a = [np.array([[1.0, 2.0]], np.float32), np.array([3.0], np.float32)]
    b = [np.array([[5.0, 6.0]], np.float32), np.array([7.0], np.float32)]
    got, _ = ReliabilityWeightedFedAvg(method="fedavg").aggregate_train(1, [mock_reply(a, 1), mock_reply(b, 1)])
    assert got is not None and list(got.keys()) == ["0", "1"]  # ArrayRecord(list) names, kept
    np.testing.assert_allclose(got["0"].numpy(), [[3.0, 4.0]])


def test_metrics_are_fedavgs_plus_a_fixed_set_of_summary_keys() -> None:
    def keys(k: int, **kwargs: bool) -> tuple[set[str], set[str]]:
        uploads = _honest_uploads([50] * k)
        replies = [_reply(i + 1, u, 50, loss=0.5 + i) for i, u in enumerate(uploads)]
        _, ours = ReliabilityWeightedFedAvg(**kwargs).aggregate_train(1, replies)
        _, ref = FedAvg().aggregate_train(1, replies)
        assert ours is not None and ref is not None
        assert ours["loss"] == pytest.approx(ref["loss"])  # the clients' metrics, averaged as FedAvg does
        return set(ours.keys()), set(ref.keys())

    three, flower = keys(3)
    twelve, _ = keys(12)
    assert three == twelve  # does not grow with the federation
    assert flower <= three and len(three - flower) <= 6
    assert all(k.startswith("reliability/") for k in three - flower)
    per_node, _ = keys(5, per_node_metrics=True)
    assert len([k for k in per_node if k.startswith("reliability/weight/")]) == 5  # opt-in


def test_a_round_of_errors_returns_none_none_as_fedavg() -> None:
    replies = [Message(Error(0, "boom"), reply_to=instruction(i)) for i in (1, 2)]
    assert FedAvg().aggregate_train(1, replies) == (None, None)
    assert ReliabilityWeightedFedAvg().aggregate_train(1, replies) == (None, None)
    assert ReliabilityWeightedFedAvg().aggregate_train(1, []) == (None, None)


def test_one_reply_per_node_the_first_is_kept_and_the_rest_named(caplog: pytest.LogCaptureFixture) -> None:
    first = {"fc.weight": np.ones((1, 2), np.float32), "fc.bias": np.ones(1, np.float32)}
    second = {"fc.weight": 9 * np.ones((1, 2), np.float32), "fc.bias": 9 * np.ones(1, np.float32)}
    other = {"fc.weight": 3 * np.ones((1, 2), np.float32), "fc.bias": 3 * np.ones(1, np.float32)}
    strategy = ReliabilityWeightedFedAvg(method="fedavg")
    with caplog.at_level(logging.WARNING, logger="flwr"):
        got, _ = strategy.aggregate_train(1, [_reply(5, first, 10), _reply(5, second, 10), _reply(6, other, 10)])
    assert got is not None
    np.testing.assert_allclose(got["fc.weight"].numpy(), 2 * np.ones((1, 2)))  # (1 + 3) / 2: the repeat is out
    assert "repeated reply of node 5" in strategy.reliability_history[-1].excluded[5]
    assert any("repeated reply of node 5" in r.getMessage() for r in caplog.records)


# -- legacy API --------------------------------------------------------------------------------------


def _fit_res(arrays: list[np.ndarray], count: int) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), count, {})


def test_legacy_test_double_proxies_are_distinct_nodes() -> None:
    """``MagicMock()`` proxies (``int()`` of each is 1) are not one node replying twice."""
    a, b = [np.array([1.0, 1.0])], [np.array([3.0, 3.0])]
    results = [(MagicMock(), _fit_res(a, 1)), (MagicMock(), _fit_res(b, 1))]
    got, _ = LegacyReliability(method="fedavg").aggregate_fit(1, results, [])
    ref, _ = LegacyFedAvg().aggregate_fit(1, results, [])
    assert got is not None and ref is not None
    np.testing.assert_allclose(parameters_to_ndarrays(got)[0], parameters_to_ndarrays(ref)[0])


def test_legacy_metrics_are_a_fixed_set_and_dtypes_are_kept() -> None:
    def run(k: int) -> tuple[list[np.ndarray], set[str]]:
        results = [
            (SimpleNamespace(node_id=i + 1, cid=str(i + 1)), _fit_res([np.full((2, 2), i, np.float32), np.array(float(i), np.float64)], 5))
            for i in range(k)
        ]
        params, metrics = LegacyReliability(method="fedavg").aggregate_fit(1, results, [])
        assert params is not None
        return parameters_to_ndarrays(params), set(metrics)

    arrays, three = run(3)
    _, nine = run(9)
    assert three == nine
    ref = parameters_to_ndarrays(LegacyFedAvg().aggregate_fit(1, [
        (SimpleNamespace(node_id=i + 1, cid=str(i + 1)), _fit_res([np.full((2, 2), i, np.float32), np.array(float(i), np.float64)], 5))
        for i in range(3)], [])[0])
    assert [(a.dtype, a.shape) for a in arrays] == [(b.dtype, b.shape) for b in ref]
