"""The experiment layer: participants load only their own partition; corruption hits exactly the
unreliable ones; the server's reference and evaluation see no participant's private statistics."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_ppcdl.app.experiment import load_participant, make_model, split_data
from flwr_ppcdl.app.settings import APP_CONFIG_OVERRIDES, RunSettings, app_run_config


def test_corruption_hits_exactly_the_unreliable_participants() -> None:
    settings = RunSettings(num_partitions=5, unreliable_fraction=0.4, seed=3)
    clean = RunSettings(num_partitions=5, unreliable_fraction=0.0, seed=3)
    bad = set(settings.unreliable_ids)
    assert len(bad) == 2
    for pid in range(5):
        noisy, honest = load_participant(settings, pid), load_participant(clean, pid)
        assert noisy.unreliable == (pid in bad)
        assert torch.equal(noisy.inputs, honest.inputs)  # random targets leave features alone
        same_targets = torch.equal(noisy.targets, honest.targets)
        assert same_targets == (pid not in bad)


def test_partitions_are_disjoint_and_cover_the_training_split() -> None:
    settings = RunSettings(dataset="digits", task="classification", num_partitions=4, unreliable_fraction=0.0, unreliable_kind="random-labels")
    train, test = split_data(settings)
    sizes = [len(load_participant(settings, p).targets) for p in range(4)]
    assert sum(sizes) == len(train)
    assert len(train) + len(test) == 1797


def test_the_model_body_is_frozen_and_the_head_starts_at_zero() -> None:
    for settings in (RunSettings(), RunSettings(dataset="digits", task="classification", unreliable_kind="random-labels")):
        model = make_model(settings)
        assert not any(p.requires_grad for p in model[:-1].parameters())
        assert float(model[-1].weight.abs().sum()) == 0.0


def test_a_participant_loads_the_same_records_every_round() -> None:
    settings = RunSettings(num_partitions=3)
    a, b = load_participant(settings, 1), load_participant(settings, 1)
    np.testing.assert_array_equal(a.inputs.numpy(), b.inputs.numpy())


def test_every_setting_is_a_run_config_key_with_the_same_default() -> None:
    """`flwr run --run-config` accepts only keys declared in pyproject.toml; the App's defaults are
    RunSettings' but the number of participants, which the App takes from the federation."""
    declared = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    config = declared["tool"]["flwr"]["app"]["config"]
    assert {f.name.replace("_", "-") for f in fields(RunSettings)} == set(config)
    assert config == app_run_config() and APP_CONFIG_OVERRIDES == {"num-partitions": 0}
    assert RunSettings.from_config(config) == RunSettings(num_partitions=0)


def test_server_data_scoring_uses_only_server_records_kept_out_of_evaluation() -> None:
    from flwr_ppcdl.app.experiment import server_splits

    settings = RunSettings(reliability_method="server-data", server_validation=300)
    _, test = split_data(settings)
    evaluation, validation = server_splits(settings)
    assert validation is not None and len(validation) == 300
    assert len(evaluation) + len(validation) == len(test)
    def rows(d: object) -> np.ndarray:
        table = np.c_[d.features, d.targets]  # type: ignore[attr-defined]
        return table[np.lexsort(table.T[::-1])]

    # the two parts partition the server's split (as multisets of records)
    np.testing.assert_array_equal(rows(test), rows(type(test)(
        features=np.concatenate([evaluation.features, validation.features]),
        targets=np.concatenate([evaluation.targets, validation.targets]),
        task=test.task, num_classes=test.num_classes)))
    assert server_splits(RunSettings())[1] is None  # truth discovery holds nothing back


def test_server_data_reliability_runs_end_to_end(tmp_path: Path) -> None:
    from flwr_ppcdl.app.sweep import run_inprocess

    result = run_inprocess({
        "result-dir": str(tmp_path), "plot": False, "num-partitions": 4, "num-rounds": 2,
        "reliability-method": "server-data", "unreliable-fraction": 0.5,
    })
    assert result["failures"] == 0
    assert abs(sum(result["rounds"][-1]["weights"].values()) - 1.0) < 1e-9
    unreliable = {str(p["node_id"]) for p in result["participants"] if p["unreliable"]}
    assert not {o["node_id"] for o in result["overruled"]} & unreliable  # result.json names what the server overruled


@pytest.mark.parametrize("protocol", ["parameters", "statistics"])
@pytest.mark.parametrize(("value", "method"), [("calibrated", "calibrated")])
def test_the_reliability_method_of_the_run_config_is_the_strategys(protocol: str, value: str, method: str) -> None:
    """The App's default is the library's calibrated estimator; the legacy rule only when asked for by name."""
    from flwr_ppcdl.app.factory import make_strategy

    assert RunSettings().reliability_method == "calibrated"
    strategy = make_strategy(RunSettings(protocol=protocol, reliability_method=value))
    assert strategy.options.method == method  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("config", "protocol"),
    [({}, "statistics"), ({"strategy": "fedavg"}, "statistics"), ({"strategy": "fedmedian"}, "parameters"),
     ({"strategy": "multikrum"}, "parameters"), ({"reliability_method": "server-data"}, "parameters"),
     ({"protocol": "parameters"}, "parameters")],
)
def test_protocol_auto_shares_releases_only_where_the_strategy_can_weigh_them(config: dict, protocol: str) -> None:
    assert RunSettings(**config).protocol == protocol
