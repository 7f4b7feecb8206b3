"""`RunSettings`: one experiment, the single source of truth for every run default.

The flat kebab-case keys of ``[tool.flwr.app.config]`` in ``pyproject.toml`` (what ``flwr run .``
reads) are these fields; a test checks that pyproject declares exactly these keys with these
defaults, and the Hydra groups (``conf/``) read their defaults from here. Every field is public
configuration; none is derived from participants' data.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from flwr_ppcdl.data import (
    CENSUS_FEATURE_SETS,
    DEFAULT_FASHION_DIR,
    PARTITIONINGS,
    REGRESSION_CONSTANTS,
    choose_unreliable,
)
from flwr_ppcdl.privacy import check_epsilon
from flwr_ppcdl.privacy.decoders import DECODERS
from flwr_ppcdl.privacy.mechanism import check_noise
from flwr_ppcdl.privacy.release import NOISES


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is for: its task, the metric a run reports, its classes."""

    task: str
    metric: str
    num_classes: int | None


DATASETS: dict[str, DatasetInfo] = {
    "census2000": DatasetInfo("regression", "r2", None),
    "cps2004": DatasetInfo("regression", "r2", None),  # needs the GPL-3 extra: pip install 'flwr_ppcdl[cps]'
    "fashion-mnist": DatasetInfo("classification", "accuracy", 10),
    "mnist5k": DatasetInfo("classification", "accuracy", 10),
    "digits": DatasetInfo("classification", "accuracy", 10),
}
TASK_METRICS: dict[str, str] = {"regression": "r2", "classification": "accuracy"}
STRATEGIES = ("reliability", "fedavg", "fedmedian", "fedtrimmedavg", "multikrum")
UNRELIABLE_KINDS = ("auto", "random-labels", "flipped-labels", "feature-noise", "random-targets")
AUTO_UNRELIABLE = {"regression": "random-targets", "classification": "flipped-labels"}
"""``unreliable-kind = "auto"`` (default): the corruption of the data set's task."""
VERBOSITIES = ("quiet", "normal", "verbose")
"""``verbosity``: ``quiet`` (the summary and the result path), ``normal`` (and one line per round),
``verbose`` (and Flower's own per-round log)."""
DEFAULT_PARTITIONS = 10
"""Participants of the default experiment, and the SuperNodes (or in-process nodes) a runner that
starts them itself starts when ``num-partitions = 0``."""
APP_CONFIG_OVERRIDES: dict[str, Any] = {"num-partitions": 0}
"""Where the Flower App's run config (``[tool.flwr.app.config]``) differs from RunSettings' defaults:
``num-partitions = 0`` takes the number of participants from the federation (one per SuperNode,
Flower's ``num-partitions`` node config), as Flower's own templates do; in Python, and for the
runners that start the SuperNodes themselves, the default experiment has 10."""
PROTOCOLS = ("parameters", "statistics")
SHARE_RELEASE = ("auto", "always", "never")
"""``share-release``: whether participants also reply with their (already private) release. ``auto``:
where the server uses it -- the statistics protocol sums it, and in the parameter protocol the
reliability strategy's calibrated estimator tests its known-law view beside the parameters."""
RELIABILITY_METHODS = ("calibrated", "server-data")
"""``calibrated``: the library's default estimator, from the uploads; ``server-data``: score uploads on
server-held records. (The legacy truth-discovery rule is a benchmark contender, ``benchmarks/contenders``.)"""
SOLVERS = ("iterative", "closed-form")
AUTO_BODY = {"gaussian": "scatternet", "laplace": "pool4-rp16"}
"""``body = "auto"``: the image body of each noise (Gaussian: the ScatterNet body, 128 features; Laplace,
whose L1 sensitivity grows with the dimension: pooling + projection to 16). Why: docs/decisions.md,
measurements: docs/results-scatternet.md."""


def auto_decoder(task: str, noise: str) -> str:
    """``"lda"`` for classification with Gaussian noise, ``"taylor"`` otherwise (regression has no
    LDA; why Laplace keeps the Taylor decoder: docs/decisions.md)."""
    return "lda" if task == "classification" and noise == "gaussian" else "taylor"


def auto_protocol(strategy: str, reliability_method: str) -> str:
    """``"statistics"`` where the strategy can weigh whole releases (reliability, fedavg), else ``"parameters"``.

    Both protocols spend the same privacy (the shared release is what the parameters are computed
    from). Flower's robust rules (FedMedian, FedTrimmedAvg, MultiKrum) and ``server-data`` scoring
    aggregate parameters, so they get the parameter protocol -- the paper's, where participants
    share only model parameters. Measured accuracy of both: docs/decisions.md.
    """
    if strategy in ("reliability", "fedavg") and reliability_method != "server-data":
        return "statistics"
    return "parameters"


def main_metric(task: str) -> str:
    """The metric a run of ``task`` reports first: R² for regression, accuracy for classification."""
    return TASK_METRICS[task]


@dataclass(frozen=True)
class RunSettings:
    """One experiment, in the flat kebab-case keys of ``[tool.flwr.app.config]`` (as snake_case).

    ``task = "auto"`` (default) takes the data set's task from :data:`DATASETS`; an explicit task
    must agree with it, as must an explicit ``unreliable-kind`` (``auto``: :data:`AUTO_UNRELIABLE`).
    ``num-partitions = 0`` means one participant per SuperNode of the federation
    (:meth:`with_partitions` fixes it once known). ``result-dir`` is a folder under the results
    base (:func:`~flwr_ppcdl.app.checks.result_path`). ``body = "auto"`` (default) takes the image body of the noise
    (:data:`AUTO_BODY`), ``decoder = "auto"`` (default) the decoder (:func:`auto_decoder`). ``noise = "gaussian"`` (default) gives (epsilon, delta)-DP with ``delta``;
    ``noise = "laplace"`` gives pure epsilon-DP and ignores ``delta``.
    """

    task: str = "auto"
    dataset: str = "census2000"
    num_partitions: int = DEFAULT_PARTITIONS  # 0: one per SuperNode of the federation (the Flower App's default)
    num_rounds: int = 30
    epsilon: float = 1.0
    strategy: str = "reliability"
    unreliable_fraction: float = 0.3
    unreliable_kind: str = "auto"  # the data set's task's corruption (AUTO_UNRELIABLE)
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.3
    seed: int = 0
    result_dir: str = "latest"  # under the results base (checks.result_path): ./results/latest
    feature_set: str = "basic"
    body: str = "auto"
    dataset_dir: str = DEFAULT_FASHION_DIR
    solver: str = "iterative"
    local_steps: int = 5
    protocol: str = "auto"  # statistics where the strategy can weigh releases, else parameters (auto_protocol)
    share_release: str = "auto"  # participants also reply with their release: auto (where used), always, never
    proximal_mu: float = 0.0
    sampler: str = "discrete"
    noise: str = "gaussian"  # or "laplace" (pure epsilon-DP; more noise with more features)
    delta: float = 1e-5  # (epsilon, delta)-DP of each release, noise = "gaussian" only; keep it << 1/n
    decoder: str = "auto"  # closed-form / statistics-protocol solves: "taylor", "lda" or auto (lda: Gaussian images)
    test_fraction: float = 0.2
    feature_noise_std: float = 0.5
    trimmed_beta: float = 0.2
    plot: bool = True
    min_nodes: int = 0  # minimum available/train nodes per round; 0 = all num-partitions
    round_timeout: float = 600.0  # seconds the server waits for replies in a round (a dead node's share)
    reliability_method: str = "calibrated"  # or "server-data" (server-held records)
    server_validation: int = 500  # records of the server's own split held out for "server-data" scoring
    # -1 (default): every participant's privacy noise comes from the OS CSPRNG. >= 0: reproducible,
    # PREDICTABLE noise derived from this value and the partition id -- NOT PRIVATE (tests and
    # research on public data only; the deployment runtime refuses it).
    insecure_noise_seed: int = -1
    verbosity: str = "normal"  # quiet | normal (one line per round) | verbose (and Flower's own log)

    def __post_init__(self) -> None:
        """Validate every field (the one place): a bad value raises ``ValueError`` naming its
        run-config key and the value."""
        _choice("dataset", self.dataset, tuple(DATASETS))
        expected_task = DATASETS[self.dataset].task
        if self.task == "auto":
            object.__setattr__(self, "task", expected_task)
        elif self.task != expected_task:
            raise ValueError(f"dataset {self.dataset!r} is a {expected_task} task; got task={self.task!r}")
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("unreliable-kind", self.unreliable_kind, UNRELIABLE_KINDS)
        if self.unreliable_kind == "auto":
            object.__setattr__(self, "unreliable_kind", AUTO_UNRELIABLE[self.task])
        wrong_task = {"regression": ("random-labels", "flipped-labels"), "classification": ("random-targets",)}
        if self.unreliable_kind in wrong_task[self.task]:
            fits = [k for k in UNRELIABLE_KINDS if k not in ("auto", AUTO_UNRELIABLE[self.task], *wrong_task[self.task])]
            raise ValueError(
                f"unreliable-kind {self.unreliable_kind!r} does not fit dataset {self.dataset!r}, a "
                f"{self.task} task: add unreliable-kind='{AUTO_UNRELIABLE[self.task]}' (or one of "
                f"{fits}), or leave it 'auto' to follow the data set"
            )
        _real("unreliable-fraction", self.unreliable_fraction, low=0.0, high=1.0, high_open=True)
        _integer("num-partitions", self.num_partitions, low=0)  # 0: one per SuperNode of the federation
        _integer("num-rounds", self.num_rounds, low=1)
        check_epsilon(self.epsilon)
        _choice("partitioning", self.partitioning, PARTITIONINGS)
        _real("dirichlet-alpha", self.dirichlet_alpha, low=0.0, low_open=True)
        _integer("seed", self.seed, low=0)
        _text("result-dir", self.result_dir)
        regression = REGRESSION_CONSTANTS.get(self.dataset)
        _choice("feature-set", self.feature_set, regression.feature_sets if regression else CENSUS_FEATURE_SETS)
        _choice("noise", self.noise, NOISES)
        _real("delta", self.delta, low=0.0, low_open=True, high=1.0, high_open=True)  # used by noise=gaussian
        if self.body == "auto":
            object.__setattr__(self, "body", AUTO_BODY[self.noise])
        from flwr_ppcdl.models import IMAGE_BODIES  # torch: only when a run is actually configured

        _choice("body", self.body, IMAGE_BODIES)
        _text("dataset-dir", self.dataset_dir)
        _choice("solver", self.solver, SOLVERS)
        _integer("local-steps", self.local_steps, low=1)
        if self.protocol == "auto":
            object.__setattr__(self, "protocol", auto_protocol(self.strategy, self.reliability_method))
        _choice("protocol", self.protocol, PROTOCOLS)
        _choice("share-release", self.share_release, SHARE_RELEASE)
        if self.protocol == "statistics" and self.share_release == "never":
            raise ValueError("protocol 'statistics' sums the shared releases: share-release='never' needs protocol='parameters'")
        _real("proximal-mu", self.proximal_mu, low=0.0)
        check_noise(self.noise, self.sampler, self.delta if self.noise == "gaussian" else None)  # sampler per noise
        if self.decoder == "auto":
            object.__setattr__(self, "decoder", auto_decoder(self.task, self.noise))
        _choice("decoder", self.decoder, DECODERS)
        if self.decoder == "lda" and self.task != "classification":
            raise ValueError(f"decoder 'lda' needs a classification task; dataset {self.dataset!r} is {self.task}")
        _real("test-fraction", self.test_fraction, low=0.0, low_open=True, high=1.0, high_open=True)
        _real("feature-noise-std", self.feature_noise_std, low=0.0)
        _real("trimmed-beta", self.trimmed_beta, low=0.0, low_open=True, high=0.5, high_open=True)
        if not isinstance(self.plot, bool):
            raise ValueError(f"run-config key 'plot' must be true or false; got {self.plot!r}")
        _integer("min-nodes", self.min_nodes, low=0)
        if self.num_partitions and self.min_nodes > self.num_partitions:
            raise ValueError(f"min-nodes={self.min_nodes} is above num-partitions={self.num_partitions}")
        _real("round-timeout", self.round_timeout, low=0.0, low_open=True)
        _choice("reliability-method", self.reliability_method, RELIABILITY_METHODS)
        _integer("server-validation", self.server_validation, low=1)
        if self.protocol == "statistics" and self.strategy not in ("reliability", "fedavg"):
            raise ValueError(
                f"protocol 'statistics' sums released statistics (plainly or reliability-weighted); "
                f"strategy {self.strategy!r} aggregates parameters only"
            )
        if self.protocol == "statistics" and self.reliability_method == "server-data":
            raise ValueError(
                "reliability-method 'server-data' scores parameter uploads on server-held records; "
                "protocol 'statistics' weights the released statistics from the releases themselves: "
                "use protocol='parameters' with server-data, or reliability-method='calibrated'"
            )
        _integer("insecure-noise-seed", self.insecure_noise_seed, low=-1)  # -1 = off (OS CSPRNG)
        _choice("verbosity", self.verbosity, VERBOSITIES)

    def with_partitions(self, num_partitions: int) -> RunSettings:
        """These settings with ``num-partitions`` fixed to the federation's size, if the run config
        left it to the federation (0); unchanged otherwise. ``ValueError`` if the size is < 1."""
        if self.num_partitions:
            return self
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or num_partitions < 1:
            raise ValueError(
                "num-partitions = 0 takes the number of participants from the federation (the "
                f"'num-partitions' node config, one per SuperNode), which gave {num_partitions!r}: pin "
                "it with --run-config \"num-partitions=N\", or give every SuperNode "
                "--node-config \"partition-id=i num-partitions=N\""
            )
        return replace(self, num_partitions=num_partitions)

    @property
    def shares_release(self) -> bool:
        """Whether participants reply with their release (``share-release``, :data:`SHARE_RELEASE`).

        Sharing costs no privacy (the release is what the parameters are computed from); ``auto``
        shares where the server uses it: the statistics protocol, and the parameter protocol under the
        calibrated reliability estimator, which scores each release's known-law view beside the
        parameters (measured: docs/decisions.md).
        """
        if self.share_release != "auto":
            return self.share_release == "always"
        return self.protocol == "statistics" or (
            self.strategy == "reliability" and self.reliability_method == "calibrated"
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
            known = sorted(k.replace("_", "-") for k in names)
            hints = "; ".join(f"{key!r}: did you mean {_suggest(str(key).replace('_', '-'), known)}?" for key in sorted(unknown, key=str)
                              if _suggest(str(key).replace("_", "-"), known))
            raise ValueError(f"unknown run-config keys {sorted(unknown, key=str)}{' (' + hints + ')' if hints else ''}; known: {known}")
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
        return REGRESSION_CONSTANTS[self.dataset].bound if self.task == "regression" else 1.0

    @property
    def metric(self) -> str:
        """The metric this run reports first (R² or accuracy)."""
        return main_metric(self.task)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = str(annotation)
    key = name.replace("_", "-")
    try:
        if kind in ("int", "float"):
            if isinstance(value, bool):
                raise ValueError
            if kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            return float(value)
        if kind == "bool":
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"run-config key {key!r} must be {kind}; got {value!r}") from None


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _suggest(value: object, choices: list[str] | tuple[str, ...]) -> str:
    """``'closest'`` (quoted) of ``choices`` to a misspelt ``value``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return repr(close[0]) if close else ""


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = _suggest(value, choices)
        raise ValueError(
            f"run-config key {key!r} must be one of {choices}; got {value!r}"
            + (f" (did you mean {hint}?)" if hint else "")
        )


def _integer(key: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"run-config key {key!r} must be an integer >= {low}; got {value!r}")


def _real(
    key: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if math.isinf(high):
            bound = f"{'>' if low_open else '>='} {low:g}"
        else:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"run-config key {key!r} must be a finite number {bound}; got {value!r}")


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"run-config key {key!r} must be a non-empty string; got {value!r}")


def app_run_config() -> dict[str, Any]:
    """The Flower App's run config, ``[tool.flwr.app.config]``: every RunSettings key with its
    default, but :data:`APP_CONFIG_OVERRIDES`."""
    return {f.name.replace("_", "-"): f.default for f in fields(RunSettings)} | APP_CONFIG_OVERRIDES


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
    """What the ε (and δ) of this run means, in words (printed in the run header and saved in results)."""
    scope = (
        "record level (replace-one neighbours), per participant, for the whole run (one "
        "functional-mechanism release; later rounds are post-processing)"
    )
    if math.isinf(settings.epsilon):
        meaning = f"epsilon = inf (no noise): NO differential privacy; {scope}"
    elif settings.noise == "gaussian":
        meaning = (
            f"epsilon = {settings.epsilon:g}, delta = {settings.delta:g}: (epsilon, delta)-DP "
            f"(Gaussian noise, calibrated through rho-zCDP), {scope}"
        )
    else:
        meaning = f"epsilon = {settings.epsilon:g}: pure epsilon-DP (Laplace noise), {scope}"
    if settings.reproducible_noise:
        meaning += " -- " + privacy_warnings(settings)[0]
    return meaning
