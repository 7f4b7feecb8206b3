"""Hydra: every config composes and instantiates; a two-job multirun writes the sweep summary."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.app.sweep import Fragment, compose_run_config

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
GROUPS = ("dataset", "model", "privacy", "strategy", "unreliable", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_config_option_composes_and_instantiates() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for group in GROUPS:
            for option in _options(group):
                cfg = compose(config_name="config", overrides=[f"{group}={option}"])
                spec = instantiate(cfg[group])
                assert spec.run_config(), (group, option)


def test_composed_configs_are_valid_run_settings() -> None:
    compatible = {name: ["random_targets", "feature_noise"] for name in ("census2000", "cps2004")}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for dataset, strategy in itertools.product(_options("dataset"), _options("strategy")):
            for unreliable in compatible.get(dataset, ["random_labels", "flipped_labels", "feature_noise"]):
                cfg = compose(config_name="config", overrides=[f"dataset={dataset}", f"strategy={strategy}", f"unreliable={unreliable}"])
                specs = [instantiate(cfg[g]) for g in GROUPS]
                settings = RunSettings.from_config(compose_run_config(specs, "/tmp/unused"))
                assert settings.dataset == instantiate(cfg["dataset"]).values["name"]


def test_the_default_composition_is_the_flower_apps_default_run() -> None:
    """One source of truth: conf/ reads its defaults from RunSettings (as pyproject.toml must)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config")
        fragments = [instantiate(cfg[g]) for g in GROUPS]
    settings = RunSettings.from_config(compose_run_config(fragments, RunSettings().result_dir))
    assert settings == RunSettings()


def test_a_misspelt_option_is_rejected_naming_it() -> None:
    with pytest.raises(ValueError, match="epsilom"):
        Fragment("privacy", epsilom=1.0)


def test_bad_values_are_rejected_naming_them() -> None:
    with pytest.raises(ValueError, match="banana"):
        RunSettings.from_config({"strategy": "banana"})
    with pytest.raises(ValueError, match="num-round"):
        RunSettings.from_config({"num-round": 3})
    with pytest.raises(ValueError, match="random-labels"):
        RunSettings.from_config({"unreliable-kind": "random-labels"})  # census is regression
    with pytest.raises(ValueError, match="-1"):
        RunSettings.from_config({"epsilon": -1})


@pytest.mark.slow
def test_two_job_multirun_writes_the_summary(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "flwr_ppcdl.app.sweep", "-m",
        "experiment=quick", "dataset=digits", "unreliable=random_labels",
        "privacy.epsilon=10", "strategy=reliability,fedavg", f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = sweep_dir / "summary.csv"
    assert summary.exists(), (proc.stdout + proc.stderr)[-3000:]
    rows = list(csv.DictReader(summary.open()))
    assert sorted(r["strategy"] for r in rows) == ["fedavg", "reliability"]
    assert all(float(r["failures"]) == 0 for r in rows)
    assert all(float(r["final"]) > 0.1 for r in rows)  # above chance (0.1) on digits
    assert (sweep_dir / "summary.png").stat().st_size > 0


@pytest.mark.slow
def test_one_job_without_multirun_writes_its_result(tmp_path: Path) -> None:
    """``python -m flwr_ppcdl.app.sweep`` without ``-m`` runs one job (issue #12.11)."""
    import json

    run_dir = tmp_path / "job"
    cmd = [
        sys.executable, "-m", "flwr_ppcdl.app.sweep",
        "experiment=quick", "dataset=digits", "unreliable=random_labels", "privacy.epsilon=10", f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["failures"] == 0 and len(result["rounds"]) == 3
    assert "simulation-only oracle" in result["reference_note"]  # added outside the ServerApp
    row = json.loads((run_dir / "row.json").read_text())
    assert row["final"] > 0.1 and row["reference"] > 0.1  # both above chance on digits
