"""What travels between participants and the server: every key, and the encoding of a release.

Both sides import these names; no message key is spelt anywhere else. Pure Python (the privacy core
for :class:`~flwr_ppcdl.privacy.Release`); the Flower adapters wrap the values in records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flwr_ppcdl.privacy import Release, sensitivity_regression, sensitivity_softmax
from flwr_ppcdl.privacy.calibration import sigma_analytic, sigma_zcdp
from flwr_ppcdl.privacy.mechanism import (
    DEFAULT_REPAIR_MULTIPLIER,
    SAMPLERS_BY_NOISE,
    check_num_classes,
)
from flwr_ppcdl.privacy.release import NOISES, TASKS, noise_sd_of
from flwr_ppcdl.privacy.repair import REPAIR_RULES
from flwr_ppcdl.privacy.sensitivity import (
    NEIGHBOURING_RELATIONS,
    sensitivity_regression_l2,
    sensitivity_softmax_l2,
)

# -- records of a reply (Message API) / fields of FitRes.metrics (legacy) ----------------------------
ARRAYS = "arrays"
"""The ArrayRecord holding the model (Flower's default ``arrayrecord_key``)."""
METRICS = "metrics"
"""The MetricRecord of a reply."""
NUM_EXAMPLES = "num-examples"
"""Claimed number of local records (Flower's default ``weighted_by_key``)."""
FM_EPSILON = "fm-epsilon"
"""ε this participant has spent so far (its ledger's total)."""
FM_DELTA = "fm-delta"
"""δ of that total: 0 while every release is pure ε-DP (Laplace), else the (ε, δ)-DP δ (Gaussian)."""
FM_OBJECTIVE = "fm-objective"
"""Value of the participant's noisy objective at its reply (post-processing)."""
PARTITION_ID = "partition-id"
"""Which partition a participant holds (simulations and bookkeeping only; never trusted)."""
FM_RELEASE = "fm-release"
"""ConfigRecord (Message API) or metrics string (legacy) carrying the shared release as JSON."""
RELEASE_JSON = "json"
"""Field of the ``fm-release`` ConfigRecord holding the JSON text."""

# -- node config (``flower-supernode --node-config``; set by the simulation runtime) -----------------
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_STATE_PATH = "state-path"


def encode_release(release: Release) -> str:
    """The release as JSON text (noisy statistics and public metadata only)."""
    return json.dumps(release.to_dict())


@dataclass(frozen=True)
class ReleaseExpectation:
    """What the server knows publicly about every participant's release (its run configuration).

    Parameters
    ----------
    task : {"classification", "regression"}
    num_features : int
        ``d``, the width of the frozen body's output (the head's ``in_features``).
    epsilon : float
        The ε every participant was configured with (``inf``: no noise).
    num_classes : int, optional
        ``K`` (classification only).
    feature_bound, target_bound : float
        The public bounds (``target_bound`` for regression only).
    neighbouring : str
        The neighbouring relation of the run.
    max_examples : int, optional
        Largest plausible ``n`` of one participant (``None``: no absolute bound; the strategy still
        compares ``n`` with the round's median).
    noise, delta : str, float
        The run's noise law: ``"laplace"`` (pure ε, ``delta`` 0) or ``"gaussian"`` with its ``δ``.
    """

    task: str
    num_features: int
    epsilon: float
    num_classes: int | None = None
    feature_bound: float = 1.0
    target_bound: float | None = None
    neighbouring: str = "replace-one"
    max_examples: int | None = None
    noise: str = "laplace"
    delta: float = 0.0


TAIL_EXTRA: float = 40.0
"""A Laplace coordinate exceeds ``t * noise_scale`` with probability ``e^-t``; with ``t = ln(m) + 40``
an honest release of ``m`` coordinates fails :func:`validate_release` with probability ``<= e^-40``."""


def decode_release(text: Any, expected: ReleaseExpectation | None = None) -> Release:
    """Parse and validate a shared release (untrusted input).

    Raises ``ValueError`` naming the field and value for anything malformed or implausible (never
    another exception type): JSON that is not a release object, fields of the wrong type, and every
    check of :func:`validate_release`.
    """
    try:
        data = json.loads(text if isinstance(text, (str, bytes, bytearray)) else str(text))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"the release is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"a release must be a JSON object; got {type(data).__name__}: {str(data)[:40]!r}")
    if not isinstance(data.get("statistics"), dict):
        raise ValueError(f"release field 'statistics' must be an object; got {str(data.get('statistics'))[:40]!r}")
    try:
        release = Release.from_dict(data)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - KeyError, TypeError, ... from untrusted fields
        raise ValueError(f"malformed release ({type(err).__name__}: {err})") from None
    validate_release(release, expected)
    return release


def expected_sensitivity(release: Release) -> float:
    """The sensitivity the release's public shape and noise law imply: L1 (Laplace) or L2 (Gaussian)."""
    d, k, rel = release.num_features, int(release.num_classes or 0), release.neighbouring
    if release.noise == "gaussian":
        return sensitivity_softmax_l2(d, k, rel) if release.task == "classification" else sensitivity_regression_l2(d, rel)
    return sensitivity_softmax(d, k, rel) if release.task == "classification" else sensitivity_regression(d, rel)


def expected_noise_scale(release: Release, epsilon: float) -> float:
    """The noise scale the public shape, law and sampler imply (0 without noise): Laplace ``Δ₁/ε``;
    Gaussian ``σ`` from zCDP (hardened sampler) or the analytic profile (numpy sampler) at the
    release's ``δ``. The samplers' grid and float-summation slack add a relative ``< 1e-6``."""
    if math.isinf(epsilon):
        return 0.0
    sensitivity = expected_sensitivity(release)
    if release.noise == "gaussian":
        calibrate = sigma_analytic if release.sampler == "numpy" else sigma_zcdp
        return calibrate(epsilon, release.delta, sensitivity)
    return sensitivity / epsilon


def noise_tail(release: Release, coordinates: int) -> float:
    """A bound no honest noise coordinate of ``coordinates`` exceeds except with probability ``e^-40``."""
    if release.noise == "gaussian":  # P(|Z| > t·σ) <= 2 exp(-t²/2)
        return math.sqrt(2.0 * (math.log(2.0 * coordinates) + TAIL_EXTRA)) * release.noise_scale
    return (math.log(coordinates) + TAIL_EXTRA) * release.noise_scale


def validate_release(release: Release, expected: ReleaseExpectation | None = None) -> None:
    """Check every field of a shared release against public bounds; ``ValueError`` naming it.

    * public metadata: the task, ``K``, ``d``, bounds, neighbouring relation and ε equal
      ``expected`` (when given); the repair rule and sampler are known names; ``n >= 1``;
    * ``sensitivity`` is the one the public shape implies, and ``noise_scale`` is ``Δ/ε`` (within
      the samplers' rounding, relative ``1e-6`` below and ``1e-2`` above);
    * the statistics are finite, the Gram matrix is symmetric, and every entry is within what ``n``
      bounded records can produce: ``|entry| <= n`` (each record adds at most 1 in absolute value,
      ``|h~_j h~_l| <= 1``, ``|cross| <= 1``) plus the noise tail ``(ln m + 40) * noise_scale``; the
      bias-bias Gram entry (exactly ``n`` before noise) is within the tail of ``n``, and the feature
      diagonal sums to at most ``n`` (``||h|| <= 1``) plus ``d`` tails. A participant that scales its
      statistics up fails here; one that also inflates ``n`` is caught by the strategy's comparison
      with the round's other participants.
    """
    if release.task not in TASKS:
        raise ValueError(f"release task {release.task!r} is not one of {TASKS}")
    check_num_classes(release.task, release.num_classes)
    for name in ("num_features", "num_examples"):
        value = getattr(release, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"release {name}={value!r} must be an integer >= 1")
    if release.repair_keep not in REPAIR_RULES:
        raise ValueError(f"release repair_keep={release.repair_keep!r} is not one of {REPAIR_RULES}")
    if release.neighbouring not in NEIGHBOURING_RELATIONS:
        raise ValueError(f"release neighbouring={release.neighbouring!r} is not one of {NEIGHBOURING_RELATIONS}")
    if release.noise not in NOISES:
        raise ValueError(f"release noise={release.noise!r} is not one of {NOISES}")
    if release.sampler not in SAMPLERS_BY_NOISE[release.noise]:
        raise ValueError(f"release sampler={release.sampler!r} is not one of {SAMPLERS_BY_NOISE[release.noise]}")
    if not (0.0 <= release.delta < 1.0) or (release.noise == "laplace" and release.delta != 0.0):
        raise ValueError(f"release delta={release.delta!r} is impossible for noise={release.noise!r}")
    if release.repair_multiplier != DEFAULT_REPAIR_MULTIPLIER[release.noise]:
        raise ValueError(
            f"release repair_multiplier={release.repair_multiplier!r}; the public rule for noise="
            f"{release.noise!r} is {DEFAULT_REPAIR_MULTIPLIER[release.noise]!r}"
        )
    _positive("feature_bound", release.feature_bound)
    if release.task == "regression":
        _positive("target_bound", release.target_bound)
    if not (release.epsilon > 0):  # NaN fails too
        raise ValueError(f"release epsilon={release.epsilon!r} must be > 0")
    if expected is not None:
        _matches_expectation(release, expected)
    epsilon = release.epsilon if expected is None else float(expected.epsilon)
    if release.noise == "gaussian" and math.isfinite(epsilon) and not (0.0 < release.delta < 1.0):
        raise ValueError(f"release delta={release.delta!r} must lie in (0, 1) for a Gaussian release")
    sensitivity = expected_sensitivity(release)
    if not math.isclose(release.sensitivity, sensitivity, rel_tol=1e-9):
        raise ValueError(f"release sensitivity={release.sensitivity!r}; the public shape implies {sensitivity!r}")
    if not math.isclose(release.noise_sd, noise_sd_of(release.noise, release.noise_scale), rel_tol=1e-9, abs_tol=0.0):
        raise ValueError(f"release noise_sd={release.noise_sd!r} does not follow from its noise_scale={release.noise_scale!r}")
    scale = release.noise_scale
    want = expected_noise_scale(release, epsilon)
    if math.isinf(epsilon):
        if scale != 0.0:
            raise ValueError(f"release noise_scale={scale!r}; epsilon=inf implies 0")
    elif not (want * (1 - 1e-6) <= scale <= want * (1 + 1e-2)):
        raise ValueError(f"release noise_scale={scale!r}; epsilon={epsilon!r} and the public shape imply {want!r}")
    _check_statistics(release)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"release {name}={value!r} must be a positive finite number")


def _matches_expectation(release: Release, expected: ReleaseExpectation) -> None:
    target = expected.target_bound if expected.task == "regression" else None
    pairs = {
        "task": (release.task, expected.task),
        "num_classes": (release.num_classes, expected.num_classes if expected.task == "classification" else None),
        "num_features": (release.num_features, expected.num_features),
        "feature_bound": (release.feature_bound, float(expected.feature_bound)),
        "target_bound": (release.target_bound, None if target is None else float(target)),
        "neighbouring": (release.neighbouring, expected.neighbouring),
        "noise": (release.noise, expected.noise),
    }
    if math.isfinite(float(expected.epsilon)) and expected.noise == "gaussian":
        pairs["delta"] = (release.delta, float(expected.delta))
    for name, (got, want) in pairs.items():
        if got != want:
            raise ValueError(f"release {name}={got!r}; the run's public configuration says {want!r}")
    eps = float(expected.epsilon)
    # OpenDP's calibrated map can sit a hair below the configured epsilon; never above it
    if not (release.epsilon == eps or (math.isfinite(eps) and eps * (1 - 1e-3) <= release.epsilon <= eps)):
        raise ValueError(f"release epsilon={release.epsilon!r}; the run's public configuration says {eps!r}")
    if expected.max_examples is not None and release.num_examples > expected.max_examples:
        raise ValueError(f"release num_examples={release.num_examples!r} is above the public maximum {expected.max_examples}")


def _check_statistics(release: Release) -> None:
    stats = release.statistics
    if set(stats) != {"gram", "cross"}:
        raise ValueError(f"release statistics must be 'gram' and 'cross'; got {sorted(stats)}")
    gram, cross = stats["gram"], stats["cross"]
    for key, value in stats.items():
        if value.dtype != np.float64 or not np.all(np.isfinite(value)):
            raise ValueError(f"statistics {key!r} contain NaN/Inf or non-numbers")
    if not np.array_equal(gram, gram.T):
        raise ValueError("statistics 'gram' is not symmetric")
    n, dim = float(release.num_examples), release.dimension
    coordinates = dim * (dim + 1) // 2 + cross.size
    tail = noise_tail(release, coordinates)
    slack = 1e-9 * n  # float rounding of the sums
    for key, value in stats.items():
        peak = float(np.max(np.abs(value)))
        if peak > n + tail + slack:
            raise ValueError(
                f"statistics {key!r} reach {peak:.6g}; {release.num_examples} bounded records and noise scale "
                f"{release.noise_scale:.6g} allow at most {n + tail:.6g}"
            )
    bias = float(gram[-1, -1])
    if abs(bias - n) > tail + slack:
        raise ValueError(f"statistics 'gram' bias entry {bias:.6g} is not num_examples={release.num_examples} (+- {tail:.3g})")
    diagonal = np.diag(gram)[:-1]
    if float(diagonal.min(initial=0.0)) < -tail - slack or float(diagonal.sum()) > n + (dim - 1) * tail + slack:
        raise ValueError(
            f"statistics 'gram' feature diagonal (sum {float(diagonal.sum()):.6g}) is impossible for "
            f"{release.num_examples} records with ||h|| <= 1"
        )
