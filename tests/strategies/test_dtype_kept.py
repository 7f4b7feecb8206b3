"""The global model keeps the dtype the server sent (issue #23, item 6), in both API generations.

Flower's FedAvg takes the first reply's dtype: a float16 first reply makes the global model float16.
The project's strategies cast every upload, and the aggregate, to the dtype sent.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg, compat

from .numpy_apps import instruction

SENT = {"body": np.arange(3, dtype=np.float32), "head": np.zeros((2, 2), np.float32)}
HEADS = [np.full((2, 2), 0.1, np.float16), np.full((2, 2), 0.3, np.float64), np.full((2, 2), 0.2, np.float32)]
COUNTS = [10, 30, 60]
WANT = sum(c * h.astype(np.float64) for c, h in zip(COUNTS, HEADS, strict=True)) / sum(COUNTS)


def _reply(node: int, head: np.ndarray, count: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"body": Array(SENT["body"]), "head": Array(head)}),
                          "metrics": MetricRecord({"num-examples": count})})
    return Message(content, reply_to=instruction(node))


@pytest.mark.parametrize("frozen", [[], ["body"]])
def test_message_api_keeps_the_sent_dtype(frozen: list[str]) -> None:
    strategy = ReliabilityWeightedFedAvg(method="fedavg", frozen_keys=frozen)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=3)))
    arrays, _ = strategy.aggregate_train(1, [_reply(i + 1, h, c) for i, (h, c) in enumerate(zip(HEADS, COUNTS, strict=True))])
    assert arrays is not None
    assert {k: arrays[k].numpy().dtype for k in arrays} == {"body": np.float32, "head": np.float32}
    # the float16 reply's value (0.1 in float16 = 0.0999756) in float32 arithmetic: FedAvg's average
    np.testing.assert_allclose(arrays["head"].numpy(), WANT, rtol=1e-4)


def test_message_api_refuses_a_complex_upload_and_keeps_the_rest() -> None:
    strategy = ReliabilityWeightedFedAvg(method="fedavg")
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=3)))
    replies = [_reply(1, HEADS[2], 10), _reply(2, np.full((2, 2), 1 + 1j, np.complex64), 10)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and arrays["head"].numpy().dtype == np.float32
    assert "complex64" in strategy.reliability_history[-1].excluded[2]


def test_legacy_api_keeps_the_sent_dtype() -> None:
    strategy = compat.ReliabilityWeightedFedAvg(method="fedavg", frozen_keys=[0])
    manager = SimpleNamespace(num_available=lambda: 0, sample=lambda num_clients, min_num_clients: [])
    strategy.configure_fit(1, ndarrays_to_parameters(list(SENT.values())), manager)
    ok = Status(code=Code.OK, message="")
    results = [
        (SimpleNamespace(node_id=i + 1, cid=str(i + 1)), FitRes(ok, ndarrays_to_parameters([SENT["body"], h]), c, {}))
        for i, (h, c) in enumerate(zip(HEADS, COUNTS, strict=True))
    ]
    parameters, _ = strategy.aggregate_fit(1, results, [])
    assert parameters is not None
    body, head = parameters_to_ndarrays(parameters)
    assert (body.dtype, head.dtype) == (np.float32, np.float32)
    np.testing.assert_allclose(head, WANT, rtol=1e-4)
