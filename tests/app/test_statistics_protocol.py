"""The statistics-sharing protocol: participants share their release (free), the server sums it."""

from __future__ import annotations

from flwr_ppcdl.app.sweep import run_inprocess


def test_statistics_protocol_runs_and_spends_epsilon_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = {
        "result-dir": str(tmp_path), "protocol": "statistics", "strategy": "reliability",
        "num-partitions": 4, "num-rounds": 2, "plot": False, "epsilon": 10.0,
    }
    result = run_inprocess(config)
    assert result["failures"] == 0
    assert all(10.0 - 1e-5 < p["epsilon"] <= 10.0 and p["delta"] == 1e-5 for p in result["participants"])
    weights = result["rounds"][-1]["weights"]
    assert len(weights) == 4 and abs(sum(weights.values()) - 1.0) < 1e-9
    assert result["final_metrics"]["r2"] > 0.0


def test_statistics_protocol_without_noise_is_pooled_least_squares(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """At epsilon = inf the summed statistics are the pooled least squares: R^2 equals OLS."""
    base = {"num-partitions": 4, "num-rounds": 1, "plot": False, "epsilon": float("inf"),
            "unreliable-fraction": 0.0, "strategy": "fedavg"}
    stats = run_inprocess({**base, "protocol": "statistics", "result-dir": str(tmp_path / "s")})
    assert abs(stats["final_metrics"]["r2"] - stats["reference"]["r2"]) < 1e-3
