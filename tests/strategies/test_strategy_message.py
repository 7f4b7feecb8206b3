"""Message-API ReliabilityWeightedFedAvg: equality with FedAvg, bad input, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

from .numpy_apps import DIM, W_TRUE, instruction, make_message_app

GLOBAL = [np.zeros((4, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def _reply(node_id: int, arrays, count, *, metrics_key: str = "num-examples", array_key: str = "arrays") -> Message:
    """A reply as a ClientApp would send it, from ``node_id``."""
    ins = instruction(node_id)
    content = RecordDict()
    if arrays is not None:
        content[array_key] = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(["w", "b"], arrays, strict=True)})
    content["metrics"] = MetricRecord({metrics_key: count} if count is not None else {"other": 1.0})
    return Message(content, reply_to=ins)


def _configured(strategy, arrays=GLOBAL):
    grid = InProcessGrid(lambda m, c: m, num_nodes=3)
    list(strategy.configure_train(1, ArrayRecord({"w": Array(arrays[0]), "b": Array(arrays[1])}), ConfigRecord(), grid))
    return strategy


def _uploads(k: int, seed: int = 0, identical: bool = False):
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    if identical:
        return [base] * k
    return [[(a + 0.1 * rng.normal(size=a.shape)).astype(np.float32) for a in base] for _ in range(k)]


@pytest.mark.parametrize("identical,method", [(True, "calibrated"), (False, "fedavg")])
def test_equal_quality_matches_flower_fedavg(identical: bool, method: str) -> None:
    counts = [30, 50, 20, 40]
    ups = _uploads(4, identical=identical)
    ours = _configured(ReliabilityWeightedFedAvg(method=method))
    got, metrics = ours.aggregate_train(1, [_reply(10 + i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))])
    ref, _ = FedAvg().aggregate_train(1, [_reply(10 + i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))])
    for key in ("w", "b"):
        np.testing.assert_allclose(got[key].numpy(), ref[key].numpy(), atol=1e-6)
    assert metrics["reliability/num-included"] == 4


def test_iid_uploads_keep_about_fedavg_weights() -> None:
    counts = [30, 50, 20, 40, 35, 45]
    ups = _uploads(6, seed=3)
    ours = _configured(ReliabilityWeightedFedAvg())
    ours.aggregate_train(1, [_reply(10 + i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))])
    w = np.array(list(ours.reliability_history[-1].weights.values()))
    np.testing.assert_allclose(w, np.array(counts) / sum(counts), atol=0.05)


def test_bad_replies_are_excluded_with_reasons() -> None:
    ups = _uploads(10, seed=1)
    nan = [a.copy() for a in ups[0]]
    nan[0][0, 0] = np.nan
    replies = [
        _reply(1, nan, 10),
        _reply(2, [np.zeros((2, 2)), ups[1][1]], 10),  # wrong shape
        _reply(3, [1e30 * np.ones((4, 3)), ups[2][1]], 10),  # absurd norm
        _reply(4, ups[3], 0),  # zero count
        _reply(5, ups[4], -3),  # negative count
        _reply(6, ups[5], None),  # missing weighting key
        _reply(7, None, 10),  # no ArrayRecord
        _reply(8, ups[6], 10),
        _reply(8, ups[7], 10),  # a second reply of node 8: the first is kept
        _reply(9, [a.astype(np.int64) for a in ups[8]], 10),  # other dtype: accepted (numeric)
        _reply(11, ups[9], 10),
        Message(Error(0, "boom"), reply_to=instruction(12)),
    ]
    strategy = _configured(ReliabilityWeightedFedAvg())
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and np.all(np.isfinite(arrays["w"].numpy()))
    report = strategy.reliability_history[-1]
    excluded = report.excluded
    assert set(excluded) == {1, 2, 3, 4, 5, 6, 7, 8, 12}
    assert "non-finite" in excluded[1] and "repeated" in excluded[8]
    assert set(report.weights) == {8, 9, 11}  # node 8 counts once, with its first reply
    assert metrics["reliability/num-included"] == sum(w > 0 for w in report.weights.values())


def test_missing_array_keys_are_excluded() -> None:
    ups = _uploads(3)
    bad = _reply(3, ups[2], 10)
    bad.content["arrays"] = ArrayRecord({"w": Array(ups[2][0])})
    strategy = _configured(ReliabilityWeightedFedAvg())
    strategy.aggregate_train(1, [_reply(1, ups[0], 10), _reply(2, ups[1], 10), bad])
    assert "array keys differ" in strategy.reliability_history[-1].excluded[3]


def test_nothing_valid_keeps_the_global_model() -> None:
    strategy = _configured(ReliabilityWeightedFedAvg())
    nan = [np.full((4, 3), np.nan, dtype=np.float32), np.zeros(3, dtype=np.float32)]
    arrays, metrics = strategy.aggregate_train(1, [_reply(1, nan, 10), _reply(2, GLOBAL, 0)])
    assert arrays is None  # Strategy.start keeps the previous arrays
    assert metrics is not None and metrics["reliability/num-excluded"] == 2
    assert strategy.reliability_history[-1].model_updated is False


def test_single_participant_and_identical_uploads() -> None:
    ups = _uploads(1)
    strategy = _configured(ReliabilityWeightedFedAvg())
    arrays, _ = strategy.aggregate_train(1, [_reply(1, ups[0], 10)])
    np.testing.assert_allclose(arrays["w"].numpy(), ups[0][0], atol=1e-6)


@pytest.mark.parametrize("bad", [{"method": "median"}, {"false_alarm_rate": 0}, {"max_share": 2.0}, {"method": "server_data"}])
def test_bad_config_raises_value_error(bad) -> None:
    with pytest.raises(ValueError):
        ReliabilityWeightedFedAvg(**bad)


def _run(strategy, unreliable=frozenset({0, 1, 2}), rounds=3, nodes=10):
    grid = InProcessGrid(make_message_app(unreliable), nodes)
    result = strategy.start(grid, ArrayRecord([np.zeros(DIM)]), num_rounds=rounds)
    return result, grid


def test_end_to_end_in_process_down_weights_random_targets() -> None:
    strategy = ReliabilityWeightedFedAvg(fraction_evaluate=0.5, per_node_metrics=True)
    result, grid = _run(strategy)
    assert len(strategy.reliability_history) == 3
    bad_nodes = {nid for nid, ctx in grid.contexts.items() if ctx.node_config["partition-id"] in (0, 1, 2)}
    for entry in strategy.reliability_history:
        assert not entry.excluded
        mass = sum(w for n, w in entry.weights.items() if n in bad_nodes)
        assert mass <= 0.5 * 0.3
    for rnd in (1, 2, 3):
        assert any(k.startswith("reliability/weight/") for k in result.train_metrics_clientapp[rnd])
    w = result.arrays.to_numpy_ndarrays()[0]
    assert np.linalg.norm(w - W_TRUE) < np.linalg.norm(W_TRUE)


def test_server_data_method_end_to_end() -> None:
    """Through the Message API: the server's records (here: noiseless targets) confirm the flags on random
    targets, so none is overruled and the unreliable stay below half their share every round."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, DIM))
    y = x @ W_TRUE

    def loss(params):
        return float(np.mean((x @ params[0] - y) ** 2))

    strategy = ReliabilityWeightedFedAvg(method="server_data", server_loss_fn=loss, fraction_evaluate=0.0)
    result, grid = _run(strategy, unreliable=frozenset(range(3)))
    bad_nodes = {nid for nid, ctx in grid.contexts.items() if ctx.node_config["partition-id"] < 3}
    for entry in strategy.reliability_history:
        assert sum(w for n, w in entry.weights.items() if n in bad_nodes) < 0.5 * 0.3
        assert not set(entry.overruled) & bad_nodes


def test_log_lines_name_nodes_by_their_reported_partition(caplog: pytest.LogCaptureFixture) -> None:
    """Readers want partition ids, not 20-digit node ids (display only; never trusted)."""
    import logging

    ups = _uploads(3, seed=4)
    node = 12345678901234567890
    nan = [a.copy() for a in ups[0]]
    nan[0][0, 0] = np.nan
    replies = [_reply(node, nan, 10), _reply(2, ups[1], 10), _reply(3, ups[2], 10)]
    for pid, msg in enumerate(replies):
        msg.content["metrics"]["partition-id"] = pid
    with caplog.at_level(logging.INFO, logger="flwr"):
        _configured(ReliabilityWeightedFedAvg()).aggregate_train(1, replies)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "excluded reply from node p0" in text and str(node) not in text
