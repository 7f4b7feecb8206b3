"""The benchmark harness's quick profile (CI): every contender yields a row with finite metrics."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "benchmarks" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_harness"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_profile_rows(tmp_path: Path) -> None:
    harness = _harness()
    path = harness.run_profile(harness.quick_profile(), tmp_path)
    rows = list(csv.DictReader(path.open()))
    by_name = {r["contender"]: r for r in rows}
    expected = ["ppcdl-reliability", "fm-fedavg", "ppcdl-statistics-reliability", "centralized", "sgd-fedavg", "flower-dp-fedavg"]
    if importlib.util.find_spec("opacus") is not None:
        expected.append("opacus-dpsgd-fedavg")
    else:
        assert "opacus not installed" in by_name["opacus-dpsgd-fedavg"]["error"]
    for name in expected:
        assert name in by_name, f"no row for {name}: {sorted(by_name)}"
        row = by_name[name]
        assert row["error"] == "", row["error"]
        assert math.isfinite(float(row["value"])), row
        assert row["hardware"] and row["device"] == "cpu"
        if name != "centralized":
            for col in ("client_s_per_round", "agg_s_per_round", "wall_s_per_round"):
                assert math.isfinite(float(row[col])) and float(row[col]) >= 0, (name, col, row[col])
    # privacy meanings are labelled, never one unlabelled column
    assert "record-level (eps, delta)" in by_name["ppcdl-reliability"]["privacy"]  # the App's default noise
    assert float(by_name["ppcdl-reliability"]["delta"]) == 1e-5
    assert "CLIENT-level" in by_name["flower-dp-fedavg"]["privacy"]
    eps = float(by_name["flower-dp-fedavg"]["epsilon_spent"])
    assert eps <= float(by_name["flower-dp-fedavg"]["epsilon_target"]) * 1.01
    if "opacus-dpsgd-fedavg" in expected:
        assert float(by_name["opacus-dpsgd-fedavg"]["epsilon_spent"]) <= 1.01
    # the reliability strategy reports weights and a detection AUROC
    assert 0.0 <= float(by_name["ppcdl-reliability"]["auroc"]) <= 1.0
    # a re-run skips the cells already measured
    harness.run_profile(harness.quick_profile(), tmp_path)
    assert len(list(csv.DictReader(path.open()))) == len(rows)


def test_auroc_and_flower_dp_calibration() -> None:
    harness = _harness()
    assert harness.auroc([0.0, 0.1], [0.5, 0.6]) == 1.0
    assert harness.auroc([0.5], [0.5]) == 0.5
    sigma = harness.flower_dp_sigma(1.0, 20)
    assert abs(harness.gaussian_rdp_epsilon(sigma, 20) - 1.0) < 0.01
