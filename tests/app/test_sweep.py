"""Hydra: every config composes and instantiates; a two-job multirun writes the sweep summary."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from flwr_ppcdl.app.settings import RunSettings, epsilon_meaning
from flwr_ppcdl.app.sweep import SUMMARY_COLUMNS, Fragment, compose_run_config, mean_over_seeds

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
    """Every data set with every strategy (the unreliable kind following the data set), and every
    unreliable kind with a data set of its task."""
    task_of = {"random_targets": "census2000", "feature_noise": "census2000"}
    combos = [(d, s, "auto") for d, s in itertools.product(_options("dataset"), _options("strategy"))]
    combos += [(task_of.get(u, "digits"), "reliability", u) for u in _options("unreliable")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for dataset, strategy, unreliable in combos:
            cfg = compose(config_name="config", overrides=[f"dataset={dataset}", f"strategy={strategy}", f"unreliable={unreliable}"])
            specs = [instantiate(cfg[g]) for g in GROUPS]
            settings = RunSettings.from_config(compose_run_config(specs, "/tmp/unused"))
            assert settings.dataset == instantiate(cfg["dataset"]).values["name"]


def test_the_default_composition_is_the_flower_apps_default_run() -> None:
    """One source of truth: conf/ reads its defaults from RunSettings (as pyproject.toml must);
    only the jobs of a sweep print less (each its summary)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config")
        fragments = [instantiate(cfg[g]) for g in GROUPS]
    settings = RunSettings.from_config(compose_run_config(fragments, RunSettings().result_dir))
    assert settings == replace(RunSettings(), verbosity="quiet")


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


def test_paired_noise_gives_every_job_of_a_seed_the_same_labelled_noise() -> None:
    fragments = [Fragment("experiment", seed=3, paired_noise=True), Fragment("strategy", name="fedavg")]
    config = compose_run_config(fragments, "/tmp/unused")
    assert config["insecure-noise-seed"] == 3  # reproducible: the same releases for both arms
    settings = RunSettings.from_config(config)
    assert settings.reproducible_noise and "NOT PRIVATE" in epsilon_meaning(settings)
    assert "insecure-noise-seed" not in compose_run_config([Fragment("experiment", seed=3)], "/tmp/unused")


def test_the_summary_averages_each_setting_over_its_seeds() -> None:
    rows = [
        {**dict.fromkeys(SUMMARY_COLUMNS, "x"), "epsilon": 1.0, "seed": seed, "strategy": strategy,
         "noise_source": "fresh (OS CSPRNG)", "final": final, "fedavg": final - 0.1, "reference": 0.9,
         "relative": final / 0.9, "weight_on_unreliable": 0.0}
        for strategy, finals in (("reliability", [0.7, 0.8, 0.9]), ("fedavg", [0.5, 0.6]))
        for seed, final in enumerate(finals)
    ]
    means = {m["strategy"]: m for m in mean_over_seeds(rows)}
    assert means["reliability"]["final_mean"] == pytest.approx(0.8)
    assert means["reliability"]["final_sd"] == pytest.approx(float(np.std([0.7, 0.8, 0.9], ddof=1)))
    assert means["reliability"]["final_n"] == 3 and means["reliability"]["seeds"] == "0 1 2"
    assert means["fedavg"]["final_mean"] == pytest.approx(0.55) and means["fedavg"]["final_n"] == 2


@pytest.mark.slow
def test_two_seed_multirun_writes_the_summaries_and_prints_each_line_once(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "flwr_ppcdl.app.sweep", "-m",
        "experiment=quick", "dataset=digits", "privacy.epsilon=10", "strategy=reliability,fedavg",
        "experiment.seed=0,1", f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [("fedavg", "0"), ("fedavg", "1"), ("reliability", "0"), ("reliability", "1")]
    assert all(float(r["failures"]) == 0 and float(r["final"]) > 0.1 for r in rows)  # above chance (0.1) on digits
    means = list(csv.DictReader((sweep_dir / "summary_mean.csv").open()))
    assert sorted(m["strategy"] for m in means) == ["fedavg", "reliability"] and all(m["final_n"] == "2" for m in means)
    assert (sweep_dir / "summary.png").stat().st_size > 0
    done = [line for line in output.splitlines() if " done in " in line]
    assert len(done) == 4, output[-3000:]  # one line per job: Flower's logger no longer printed twice under Hydra
    assert len(output.splitlines()) < 60, output[-3000:]


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
