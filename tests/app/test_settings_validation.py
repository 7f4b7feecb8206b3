"""Every run-config key is validated in one place, with the key and the bad value named (#12.9, #12.11)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from flwr_ppcdl.app.settings import RunSettings

# One bad value per key (a new key must be added here, and so validated: see the last test).
BAD: dict[str, Any] = {
    "task": "clustering",
    "dataset": "imagenet",
    "num-partitions": -1,
    "num-rounds": -1,
    "epsilon": -1,
    "strategy": "banana",
    "unreliable-fraction": 1.5,
    "unreliable-kind": "cosmic-rays",
    "partitioning": "bogus",
    "dirichlet-alpha": 0.0,
    "seed": -3,
    "result-dir": " ",
    "feature-set": "everything",
    "body": "resnet",
    "dataset-dir": "",
    "solver": "magic",
    "local-steps": -1,
    "protocol": "smoke-signals",
    "share-release": "sometimes",
    "proximal-mu": -0.5,
    "sampler": "bogus",
    "test-fraction": 1.0,
    "feature-noise-std": -1.0,
    "trimmed-beta": 0.7,
    "plot": "banana",
    "min-nodes": -2,
    "round-timeout": -5,
    "reliability-method": "astrology",
    "server-validation": 0,
    "insecure-noise-seed": -3,
    "noise": "cauchy",
    "delta": 1.5,
    "decoder": "svm",
    "verbosity": "loud",
}


@pytest.mark.parametrize("key", sorted(BAD))
def test_a_bad_value_names_its_key_and_value(key: str) -> None:
    with pytest.raises(ValueError) as err:
        RunSettings.from_config({key: BAD[key]})
    text = str(err.value)
    assert key in text or key.replace("-", "_") in text or str(BAD[key]) in text, text
    assert str(BAD[key]).strip() in text or repr(BAD[key]) in text, text


def test_every_run_config_key_has_a_bad_value_here() -> None:
    assert set(BAD) == {f.name.replace("_", "-") for f in fields(RunSettings)}


@pytest.mark.parametrize(
    "config, match",
    [
        ({"num-partitions": True}, "num-partitions"),  # a bool is not a count
        ({"epsilon": "abc"}, "epsilon"),
        ({"plot": "yes please"}, "plot"),
        ({"min-nodes": 11}, "min-nodes=11"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"protocol": "statistics", "reliability-method": "server-data"}, "server-data"),  # #12.11
        ({"protocol": "statistics", "strategy": "fedmedian"}, "fedmedian"),
        ({"protocol": "statistics", "share-release": "never"}, "share-release"),
    ],
)
def test_combinations_and_types_are_refused(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RunSettings.from_config(config)


def test_accepted_spellings() -> None:
    settings = RunSettings.from_config({"plot": "false", "num-partitions": 4.0, "min-nodes": 2, "epsilon": "inf"})
    assert settings.plot is False and settings.num_partitions == 4 and settings.epsilon == float("inf")
