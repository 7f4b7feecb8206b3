"""The frozen public body is never taken from replies (issue #11.2).

A hostile participant adds +1000 to a body buffer in every reply (its weight in an average would be
tiny, yet under plain averaging every honest participant then refuses the changed body). With the
App's strategies the body the server sends never changes, no honest participant refuses, and the
result is the one the run reaches without the attacker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from flwr_ppcdl.app.client_app import app as client_app
from flwr_ppcdl.app.experiment import body_keys, make_model
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import run_server
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

HOSTILE_PARTITION = 0


def _hostile(msg: Message, context: Context) -> Message:
    reply = client_app(msg, context)
    if int(context.node_config["partition-id"]) == HOSTILE_PARTITION and not reply.has_error() and "arrays" in reply.content:
        arrays = reply.content["arrays"]
        tampered = {k: Array(v.numpy() + 1000.0) if k == "0.shift" else v for k, v in arrays.items()}
        reply.content["arrays"] = ArrayRecord(tampered)
    return reply


def _run(tmp_path: Path, protocol: str, attack: bool) -> tuple[dict[str, Any], InProcessGrid]:
    config = {
        "result-dir": str(tmp_path / f"{protocol}-{attack}"), "num-partitions": 4, "num-rounds": 4, "plot": False,
        "unreliable-fraction": 0.0, "epsilon": 10.0, "protocol": protocol,
        "insecure-noise-seed": 0,  # reproducible (NOT private) noise: the two runs must be comparable
    }
    settings = RunSettings.from_config(config)
    grid = InProcessGrid(_hostile if attack else client_app, num_nodes=4, run_config=config)
    run = run_server(grid, settings)
    return {"failures": run.failures, "final": run.final_metrics, "rounds": run.rounds}, grid


@pytest.mark.parametrize("protocol", ["parameters", "statistics"])
def test_a_hostile_body_never_reaches_the_global_model(tmp_path: Path, protocol: str) -> None:
    body = make_model(RunSettings()).state_dict()["0.shift"].numpy()
    attacked, grid = _run(tmp_path, protocol, attack=True)
    sent_bodies = [m.content["arrays"]["0.shift"].numpy() for m in grid.sent if m.metadata.message_type == "train"]
    assert len(sent_bodies) == 4 * 4
    for sent in sent_bodies:
        np.testing.assert_array_equal(sent, body)  # every round, every node: the public body
    assert attacked["failures"] == 0  # no honest node refused (BodyChangedError would be an error reply)
    clean, _ = _run(tmp_path, protocol, attack=False)
    # the attacker's head is honest, so the result is the clean run's (same insecure noise seed)
    assert attacked["final"]["r2"] == pytest.approx(clean["final"]["r2"], abs=1e-6)


def test_the_app_marks_the_body_frozen() -> None:
    from flwr_ppcdl.app.factory import make_strategy

    settings = RunSettings()
    strategy = make_strategy(settings)
    assert isinstance(strategy, ReliabilityWeightedFedAvg)
    assert strategy.frozen_keys == set(body_keys(make_model(settings))) == {"0.shift"}


def test_frozen_arrays_are_kept_as_sent_and_may_be_omitted_from_replies() -> None:
    sent = {"body": np.arange(3, dtype=np.float32), "head": np.zeros(2, np.float32)}
    strategy = ReliabilityWeightedFedAvg(method="fedavg", frozen_keys=["body"])
    grid = InProcessGrid(lambda m, c: m, num_nodes=3)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in sent.items()}), ConfigRecord(), grid))

    def reply(node: int, arrays: dict[str, np.ndarray]) -> Message:
        ins = Message(RecordDict({"config": ConfigRecord()}), node, "train")
        ins.metadata.__dict__["_message_id"] = f"m{node}"
        ins.metadata.__dict__["_src_node_id"] = 0
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                              "metrics": MetricRecord({"num-examples": 10})})
        return Message(content, reply_to=ins)

    arrays, _ = strategy.aggregate_train(1, [
        reply(1, {"body": np.full(3, np.nan, np.float32), "head": np.ones(2, np.float32)}),  # NaN body: never read
        reply(2, {"body": sent["body"] + 1000, "head": 3 * np.ones(2, np.float32)}),
        reply(3, {"head": 5 * np.ones(2, np.float32)}),  # body omitted
    ])
    assert arrays is not None and list(arrays.keys()) == ["body", "head"]
    np.testing.assert_array_equal(arrays["body"].numpy(), sent["body"])
    np.testing.assert_allclose(arrays["head"].numpy(), 3 * np.ones(2))
    assert not strategy.reliability_history[-1].excluded
