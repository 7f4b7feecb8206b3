"""`RunSettings`: one experiment, the single source of truth for every run default.

The flat kebab-case keys of ``[tool.flwr.app.config]`` in ``pyproject.toml`` (what ``flwr run .``
reads) are these fields; a test checks that pyproject declares exactly these keys with these
defaults, and the Hydra groups (``conf/``) read their defaults from here. Every field is public
configuration; none is derived from participants' data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from flwr_ppcdl.data import CENSUS_TARGET_BOUND, DEFAULT_FASHION_DIR, choose_unreliable
from flwr_ppcdl.privacy import check_epsilon


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is for: its task, the metric a run reports, its classes."""

    task: str
    metric: str
    num_classes: int | None


DATASETS: dict[str, DatasetInfo] = {
    "census2000": DatasetInfo("regression", "r2", None),
    "fashion-mnist": DatasetInfo("classification", "accuracy", 10),
    "mnist5k": DatasetInfo("classification", "accuracy", 10),
    "digits": DatasetInfo("classification", "accuracy", 10),
}
TASK_METRICS: dict[str, str] = {"regression": "r2", "classification": "accuracy"}
STRATEGIES = ("reliability", "fedavg", "fedmedian", "fedtrimmedavg", "multikrum")
UNRELIABLE_KINDS = ("random-labels", "flipped-labels", "feature-noise", "random-targets")
PROTOCOLS = ("parameters", "statistics")
RELIABILITY_METHODS = ("truth-discovery", "server-data")


def main_metric(task: str) -> str:
    """The metric a run of ``task`` reports first: R² for regression, accuracy for classification."""
    return TASK_METRICS[task]


@dataclass(frozen=True)
class RunSettings:
    """One experiment, in the flat kebab-case keys of ``[tool.flwr.app.config]`` (as snake_case).

    ``task = "auto"`` (default) takes the data set's task from :data:`DATASETS`; an explicit task
    must agree with it.
    """

    task: str = "auto"
    dataset: str = "census2000"
    num_partitions: int = 10
    num_rounds: int = 30
    epsilon: float = 1.0
    strategy: str = "reliability"
    unreliable_fraction: float = 0.3
    unreliable_kind: str = "random-targets"
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.3
    seed: int = 0
    result_dir: str = "results/latest"
    feature_set: str = "basic"
    body: str = "pool4-rp16"
    dataset_dir: str = DEFAULT_FASHION_DIR
    solver: str = "iterative"
    local_steps: int = 5
    protocol: str = "parameters"
    proximal_mu: float = 0.0
    sampler: str = "discrete"
    test_fraction: float = 0.2
    feature_noise_std: float = 0.5
    trimmed_beta: float = 0.2
    plot: bool = True
    min_nodes: int = 0  # minimum available/train nodes per round; 0 = all num-partitions
    round_timeout: float = 600.0  # seconds the server waits for replies in a round (a dead node's share)
    reliability_method: str = "truth-discovery"  # or "server-data": score uploads on server-held records
    server_validation: int = 500  # records of the server's own split held out for "server-data" scoring
    # -1 (default): every participant's privacy noise comes from the OS CSPRNG. >= 0: reproducible,
    # PREDICTABLE noise derived from this value and the partition id -- NOT PRIVATE (tests and
    # research on public data only; the deployment runtime refuses it).
    insecure_noise_seed: int = -1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {tuple(DATASETS)}; got {self.dataset!r}")
        expected_task = DATASETS[self.dataset].task
        if self.task == "auto":
            object.__setattr__(self, "task", expected_task)
        elif self.task != expected_task:
            raise ValueError(f"dataset {self.dataset!r} is a {expected_task} task; got task={self.task!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}; got {self.strategy!r}")
        if self.unreliable_kind not in UNRELIABLE_KINDS:
            raise ValueError(f"unreliable-kind must be one of {UNRELIABLE_KINDS}; got {self.unreliable_kind!r}")
        if self.task == "regression" and self.unreliable_kind in ("random-labels", "flipped-labels"):
            raise ValueError(f"unreliable-kind {self.unreliable_kind!r} needs a classification task")
        if self.task == "classification" and self.unreliable_kind == "random-targets":
            raise ValueError("unreliable-kind 'random-targets' needs a regression task")
        if not 0.0 <= self.unreliable_fraction < 1.0:
            raise ValueError(f"unreliable-fraction must be in [0, 1); got {self.unreliable_fraction!r}")
        if self.num_partitions < 1 or self.num_rounds < 1:
            raise ValueError(
                f"num-partitions and num-rounds must be >= 1; got {self.num_partitions}, {self.num_rounds}"
            )
        if self.reliability_method not in RELIABILITY_METHODS:
            raise ValueError(
                f"reliability-method must be one of {RELIABILITY_METHODS}; got {self.reliability_method!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}; got {self.protocol!r}")
        if self.protocol == "statistics" and self.strategy not in ("reliability", "fedavg"):
            raise ValueError(
                f"protocol 'statistics' sums released statistics (plainly or reliability-weighted); "
                f"strategy {self.strategy!r} aggregates parameters only"
            )
        check_epsilon(self.epsilon)
        if self.insecure_noise_seed < -1:
            raise ValueError(
                f"insecure-noise-seed must be -1 (off: noise from the OS CSPRNG) or >= 0; got {self.insecure_noise_seed!r}"
            )

    @property
    def reproducible_noise(self) -> bool:
        """Whether ``insecure-noise-seed`` is set: every release's noise is predictable (NOT private)."""
        return self.insecure_noise_seed >= 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Build from a run config (kebab-case keys); unknown keys are an error naming them."""
        names = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in config.items():
            name = str(key).replace("-", "_")
            if name not in names:
                unknown.append(key)
                continue
            kwargs[name] = _coerce(name, value, names[name].type)
        if unknown:
            raise ValueError(f"unknown run-config keys {sorted(unknown)}; known: {sorted(k.replace('_', '-') for k in names)}")
        return cls(**kwargs)

    @classmethod
    def default_value(cls, key: str) -> Any:
        """The default of run-config ``key`` (kebab- or snake-case); KeyError naming it if unknown."""
        name = key.replace("-", "_")
        for f in fields(cls):
            if f.name == name:
                return f.default
        raise KeyError(f"no run-config key {key!r}")

    @property
    def unreliable_ids(self) -> list[int]:
        """Ground truth of the experiment (evaluation only; never given to the strategy)."""
        return choose_unreliable(self.num_partitions, fraction=self.unreliable_fraction, seed=self.seed)

    @property
    def num_classes(self) -> int | None:
        return DATASETS[self.dataset].num_classes

    @property
    def target_bound(self) -> float:
        return CENSUS_TARGET_BOUND if self.task == "regression" else 1.0

    @property
    def metric(self) -> str:
        """The metric this run reports first (R² or accuracy)."""
        return main_metric(self.task)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes")
            return bool(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"run-config key {name.replace('_', '-')!r} must be {kind}; got {value!r}") from None


def privacy_warnings(settings: RunSettings) -> list[str]:
    """Why this run is NOT private, one sentence each; empty for a private run.

    Printed in the run header and saved in ``result.json`` (``not_private``).
    """
    reasons = []
    if settings.reproducible_noise:
        reasons.append(
            f"NOT PRIVATE: insecure-noise-seed={settings.insecure_noise_seed} makes every participant's "
            "noise reproducible from the run config, so the exact statistics can be recovered"
        )
    if math.isinf(settings.epsilon):
        reasons.append("NOT PRIVATE: epsilon = inf releases the statistics without noise")
    return reasons


def epsilon_meaning(settings: RunSettings) -> str:
    """What the ε of this run means, in words (printed in the run header and saved in results)."""
    eps = "inf (no noise)" if math.isinf(settings.epsilon) else f"{settings.epsilon:g}"
    meaning = (
        f"epsilon = {eps}: pure epsilon-DP, record level (replace-one neighbours), per participant, "
        "for the whole run (one functional-mechanism release; later rounds are post-processing)"
    )
    if settings.reproducible_noise:
        meaning += " -- " + privacy_warnings(settings)[0]
    return meaning
