"""What a run prints and writes (#24): the verbosity levels, FedAvg of the same replies beside every
round, and result files that say which code made them."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from flwr_ppcdl.app.sweep import run_inprocess

BASE = {"dataset": "digits", "num-partitions": 4, "num-rounds": 3, "plot": False}


def _lines(caplog: pytest.LogCaptureFixture, tmp_path: Path, level: str) -> tuple[list[str], list[str]]:
    """(the App's lines, Flower's own INFO lines) of one in-process run at ``level``."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        run_inprocess({**BASE, "verbosity": level, "result-dir": str(tmp_path / level)})
    ours = [r.getMessage() for r in caplog.records if r.name == "flwr.ppcdl" and r.levelno >= logging.INFO]
    flowers = [r.getMessage() for r in caplog.records if r.name == "flwr" and r.levelno == logging.INFO]
    return ours, flowers


def test_verbosity_quiet_normal_verbose(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    quiet, flower_quiet = _lines(caplog, tmp_path, "quiet")
    assert [line.split(" ")[1] for line in quiet] == ["finished", "results:"]  # the summary, where it went
    normal, flower_normal = _lines(caplog, tmp_path, "normal")
    rounds = [line for line in normal if line.startswith("[ppcdl] round ")]
    assert [line.split()[2] for line in rounds] == ["0", "1/3", "2/3", "3/3"]  # one line per round, from round 0
    assert len(normal) == len(rounds) + 3  # + the header, the summary, where it went
    assert flower_quiet == flower_normal == []  # Flower's own per-round log is held back...
    verbose, flower_verbose = _lines(caplog, tmp_path, "verbose")
    assert len(verbose) == len(normal)
    assert any("ROUND 1/3" in line for line in flower_verbose)  # ...and shown with verbose
    assert logging.getLogger("flwr").level == logging.DEBUG  # and restored after the run


def test_the_fedavg_comparison_is_what_fedavg_makes_of_the_same_releases(tmp_path: Path) -> None:
    """Statistics protocol, the same (reproducible, NOT private) releases: the FedAvg figures beside a
    reliability run equal a FedAvg run's own."""
    paired = {**BASE, "unreliable-fraction": 0.25, "insecure-noise-seed": 7}
    reliability = run_inprocess({**paired, "result-dir": str(tmp_path / "r")})
    fedavg = run_inprocess({**paired, "strategy": "fedavg", "result-dir": str(tmp_path / "f")})
    assert reliability["settings"]["protocol"] == fedavg["settings"]["protocol"] == "statistics"
    for ours, theirs in zip(reliability["rounds"], fedavg["rounds"], strict=True):
        assert ours["fedavg_metrics"] == pytest.approx(theirs["metrics"], rel=1e-6)
    assert reliability["fedavg_final_metrics"] == pytest.approx(fedavg["final_metrics"], rel=1e-6)
    assert fedavg["fedavg_final_metrics"] == {}  # a FedAvg run is its own comparison
    table = list(csv.DictReader((tmp_path / "r" / "rounds.csv").open()))
    assert float(table[-1]["fedavg_accuracy"]) == pytest.approx(fedavg["final_metrics"]["accuracy"], rel=1e-5)


def test_a_result_carries_round_zero_the_code_version_and_the_packages(tmp_path: Path) -> None:
    result = run_inprocess({**BASE, "result-dir": str(tmp_path), "plot": True})
    assert 0.05 < result["initial_metrics"]["accuracy"] < 0.2  # the zero head: chance, before any round
    versions = json.loads((tmp_path / "result.json").read_text())["versions"]
    assert {"flwr-ppcdl", "flwr", "torch", "numpy", "git_commit"} <= set(versions)
    assert versions["flwr"].startswith("1.42")
    assert (tmp_path / "summary.png").stat().st_size > 10_000
