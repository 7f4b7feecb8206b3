"""The run config chooses the noise: keys, validation, and what a run reports it spent."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from flwr_ppcdl.app.experiment import trainer_config
from flwr_ppcdl.app.settings import RunSettings, epsilon_meaning
from flwr_ppcdl.clients import TrainerConfig


def test_the_default_run_is_gaussian_and_says_so() -> None:
    settings = RunSettings()
    assert (settings.noise, settings.delta) == ("gaussian", 1e-5)
    text = epsilon_meaning(settings)
    assert "(epsilon, delta)-DP" in text and "delta = 1e-05" in text and "per participant" in text
    laplace = RunSettings(noise="laplace")
    assert "pure epsilon-DP" in epsilon_meaning(laplace) and "delta" not in epsilon_meaning(laplace)


def test_the_image_body_follows_the_noise() -> None:
    assert RunSettings(dataset="fashion-mnist", unreliable_kind="flipped-labels").body == "scatternet"
    assert RunSettings(dataset="fashion-mnist", unreliable_kind="flipped-labels", noise="laplace").body == "pool4-rp16"
    assert RunSettings(body="pool4-rp32").body == "pool4-rp32"


def test_the_decoder_follows_the_task_and_noise() -> None:
    images = {"dataset": "fashion-mnist", "unreliable_kind": "flipped-labels"}
    assert RunSettings(**images).decoder == "lda"  # type: ignore[arg-type]
    assert RunSettings(noise="laplace", **images).decoder == "taylor"  # type: ignore[arg-type]
    assert RunSettings().decoder == "taylor"  # census is regression
    assert RunSettings(decoder="taylor", **images).decoder == "taylor"  # type: ignore[arg-type]


def test_trainer_config_carries_the_noise_and_delta() -> None:
    gauss = TrainerConfig(**trainer_config(RunSettings(), 0))
    assert (gauss.noise, gauss.delta) == ("gaussian", 1e-5)
    laplace = TrainerConfig(**trainer_config(RunSettings(noise="laplace"), 0))
    assert (laplace.noise, laplace.delta) == ("laplace", None)
    lda = TrainerConfig(**trainer_config(RunSettings(dataset="digits", unreliable_kind="flipped-labels", solver="closed-form", decoder="lda"), 0))
    assert lda.decoder == "lda"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"noise": "cauchy"}, "cauchy"),
        ({"delta": 0.0}, "0.0"),
        ({"delta": 1.5}, "1.5"),
        ({"noise": "laplace", "delta": 2.0}, "2.0"),
        ({"sampler": "opendp"}, "opendp"),
        ({"decoder": "lda"}, "lda"),  # census is regression
        ({"decoder": "svm", "dataset": "digits", "unreliable-kind": "flipped-labels"}, "svm"),
    ],
)
def test_bad_noise_keys_are_refused_naming_the_value(config: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RunSettings.from_config(config)


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_result_json_and_log_report_what_each_participant_spent(
    noise: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flwr_ppcdl.app.sweep import run_inprocess

    caplog.set_level(logging.INFO, logger="flwr")
    result = run_inprocess({
        "result-dir": str(tmp_path), "plot": False, "dataset": "digits", "unreliable-kind": "flipped-labels",
        "num-partitions": 3, "num-rounds": 2, "noise": noise, "protocol": "statistics", "strategy": "fedavg",
    })
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["privacy_spent"] == result["privacy_spent"]
    deltas = {p["delta"] for p in result["participants"]}
    if noise == "gaussian":
        assert deltas == {1e-5}
        assert all(1 - 1e-9 < p["epsilon"] <= 1.0 for p in result["participants"])
        assert result["privacy_spent"]["guarantee"] == "(epsilon, delta)-DP"
        assert "(epsilon, delta)-DP" in result["epsilon_meaning"]
    else:
        assert deltas == {0.0} and {p["epsilon"] for p in result["participants"]} == {1.0}
        assert result["privacy_spent"]["guarantee"] == "pure epsilon-DP"
    assert result["privacy_spent"]["text"] in caplog.text
    assert result["failures"] == 0


@pytest.mark.parametrize(("option", "noise"), [("gaussian", "gaussian"), ("laplace", "laplace"), ("functional_mechanism", "gaussian")])
def test_hydra_privacy_group_chooses_the_noise(option: str, noise: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from flwr_ppcdl.app.sweep import CONF_DIR, GROUPS, compose_run_config

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"privacy={option}", "privacy.epsilon=2"])
        settings = RunSettings.from_config(compose_run_config([instantiate(cfg[g]) for g in GROUPS], "/tmp/unused"))
    assert (settings.noise, settings.epsilon) == (noise, 2.0)
    assert settings.delta == RunSettings.default_value("delta")
