"""The App at 100 participants, in-process: every participant's release reaches the server every
round, the weights cover exactly the participants and sum to 1, and each reports the epsilon it
spent. (1,000 participants and Flower's runtimes: ``benchmarks/scale_app.py``, docs/scale.md.)"""

from __future__ import annotations

import math

import pytest

from flwr_ppcdl.app.sweep import run_inprocess

pytestmark = pytest.mark.slow

PARTICIPANTS = 100


def test_a_hundred_participants_each_spend_epsilon_once_and_share_the_weight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_inprocess({"num-partitions": PARTICIPANTS, "num-rounds": 2, "plot": False, "result-dir": str(tmp_path)})
    assert [r["replies"] for r in result["rounds"]] == [PARTICIPANTS, PARTICIPANTS]
    assert result["failures"] == 0 and not result["excluded"] and not result["undecidable"]
    nodes = {p["node_id"] for p in result["participants"]}
    assert sorted(p["partition_id"] for p in result["participants"]) == list(range(PARTICIPANTS))
    for record in result["rounds"]:
        assert set(record["weights"]) == nodes
        assert math.isclose(sum(record["weights"].values()), 1.0, abs_tol=1e-9)
        assert min(record["weights"].values()) >= 0.0
    for participant in result["participants"]:  # one release each, charged once over both rounds
        assert participant["epsilon"] == pytest.approx(1.0) and participant["delta"] == 1e-5
        assert participant["rounds_participated"] == 2
    assert result["privacy_spent"]["epsilon"] == pytest.approx(1.0)


def test_a_hundred_noiseless_releases_sum_to_the_pooled_least_squares(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """At epsilon = inf the server's sum of 100 releases is the pooled data's statistics: R^2 = OLS."""
    result = run_inprocess({
        "num-partitions": PARTICIPANTS, "num-rounds": 1, "plot": False, "epsilon": float("inf"),
        "unreliable-fraction": 0.0, "strategy": "fedavg", "result-dir": str(tmp_path),
    })
    assert result["rounds"][0]["replies"] == PARTICIPANTS
    assert result["final_metrics"]["r2"] == pytest.approx(result["reference"]["r2"], abs=1e-3)
