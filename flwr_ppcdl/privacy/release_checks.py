"""Checks of a shared release (untrusted input): its metadata, and every statistic it carries.

A server receives each participant's release (``share_statistics``) and may pool it; the release
may lie. :func:`check_release` refuses, with a ``ValueError`` naming the field and value:

* **metadata** -- against the run's public :class:`ReleaseExpectation`: the task, ``K``, ``d``, the
  bounds, the neighbouring relation, the noise law, the sampler and the repair rule are the run's;
  the sensitivity, the noise scale, ``noise_sd``, ε and δ are EXACTLY what the public calibration
  (:func:`~flwr_ppcdl.privacy.release_law.expected_calibration`, the function the mechanism draws
  with) gives for the release's ``n`` and shape (relative :data:`CALIBRATION_RTOL`: float
  reproducibility across machines). Without an expectation, a release is checked against its own
  claims (scale within ``1e-6`` of what its ε implies) and the server compares it with the round's
  majority (:func:`flwr_ppcdl.strategies.releases.consistent_releases`);
* **statistics** -- what ``n`` records with ``||h~||_inf <= 1``, ``||h||_2 <= 1``, bias 1 and
  ``|y| <= 1`` can produce, plus noise within the bounds of the release's own noise law
  (:func:`~flwr_ppcdl.privacy.release_law.entry_noise`): every entry ``|.| <= n``; the bias entry is
  ``n``; the feature diagonal is ``>= 0`` and sums to ``<= n``; Cauchy-Schwarz ``|G_ij| <= sqrt(G_ii
  G_jj)``; ``G`` is positive semi-definite (smallest eigenvalue ``>= -`` the noise's spectral bound);
  regression ``|b_j| <= sqrt(n G_jj)``; classification: the cross term's columns sum to 0, every
  class count lies in ``[0, n]`` and every class sum obeys Cauchy-Schwarz with its count.

False refusals. Every statistics check is implied by two events about the noise: every entry
within :meth:`~flwr_ppcdl.privacy.release_law.EntryNoise.entry_bound` and the Gram noise's spectral
norm within :meth:`~flwr_ppcdl.privacy.release_law.EntryNoise.spectral_bound`, each given half of
``false_refusal``; an honest release is therefore refused with probability at most
``false_refusal`` (default :data:`FALSE_REFUSAL`). What it cannot see: a forgery smaller than those
bounds (one off-diagonal Gram entry set to ``-n`` is always caught once ``n/2`` exceeds twice the
entry bound: Gaussian noise at ε = 1, d = 12, from about 420 records; Laplace at ε = 1 from about
4,100; ``docs/functional-mechanism.md`` §10) and statistics of other records that are internally
consistent (the reliability estimator's job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flwr_ppcdl.privacy.mechanism import (
    DEFAULT_REPAIR_MULTIPLIER,
    SAMPLERS_BY_NOISE,
    check_num_classes,
)
from flwr_ppcdl.privacy.release import NOISES, TASKS, Release, noise_sd_of
from flwr_ppcdl.privacy.release_law import (
    EntryNoise,
    entry_noise,
    expected_calibration,
    release_coordinates,
)
from flwr_ppcdl.privacy.repair import REPAIR_RULES
from flwr_ppcdl.privacy.sensitivity import (
    NEIGHBOURING_RELATIONS,
    sensitivity_regression,
    sensitivity_regression_l2,
    sensitivity_softmax,
    sensitivity_softmax_l2,
)

FALSE_REFUSAL: float = 1e-12
"""Probability that :func:`check_release` refuses an honest release (its statistics checks)."""

CALIBRATION_RTOL: float = 1e-9
"""Relative tolerance on the calibrated scale, ε and sensitivity with an expectation: the same
public calibration on another machine may differ in the last bits (the accountant's floats)."""

OWN_CLAIM_RTOL: float = 1e-6
"""Without an expectation: relative tolerance of the scale against what the release's own ε implies
(its ε is the one spent, a hair below the configured one, so its scale is recomputed from it)."""


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
    sampler : str
        The run's sampler (``"discrete"``, the hardened default of both laws).
    repair_keep : str
        The run's public repair rule.
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
    sampler: str = "discrete"
    repair_keep: str = "half-rho"


def check_release(
    release: Release, expected: ReleaseExpectation | None = None, *, false_refusal: float = FALSE_REFUSAL
) -> Release:
    """Check every field and statistic of a shared release (module docstring); return it.

    Raises
    ------
    ValueError
        Naming the field (or statistic) and its value; never another exception type.
    """
    try:
        _check_fields(release)
        if expected is not None:
            _check_expected(release, expected)
        else:
            _check_own_claims(release)
        check_statistics(release, false_refusal)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - a crafted field must not raise anything else
        raise ValueError(f"malformed release ({type(err).__name__}: {err})") from None
    return release


def expected_sensitivity(release: Release) -> float:
    """The sensitivity the release's public shape and noise law imply: L1 (Laplace) or L2 (Gaussian)."""
    d, k, rel = release.num_features, int(release.num_classes or 0), release.neighbouring
    if release.noise == "gaussian":
        return sensitivity_softmax_l2(d, k, rel) if release.task == "classification" else sensitivity_regression_l2(d, rel)
    return sensitivity_softmax(d, k, rel) if release.task == "classification" else sensitivity_regression(d, rel)


# -- metadata ------------------------------------------------------------------------------------------


def _check_fields(release: Release) -> None:
    """Known names and plausible values, before anything is computed from them."""
    if release.task not in TASKS:
        raise ValueError(f"release task {release.task!r} is not one of {TASKS}")
    check_num_classes(release.task, release.num_classes)
    for name in ("num_features", "num_examples"):
        value = getattr(release, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"release {name}={value!r} must be an integer >= 1")
    for name, value, known in (
        ("repair_keep", release.repair_keep, REPAIR_RULES),
        ("neighbouring", release.neighbouring, NEIGHBOURING_RELATIONS),
        ("noise", release.noise, NOISES),
    ):
        if value not in known:
            raise ValueError(f"release {name}={value!r} is not one of {known}")
    if release.sampler not in SAMPLERS_BY_NOISE[release.noise]:
        raise ValueError(f"release sampler={release.sampler!r} is not one of {SAMPLERS_BY_NOISE[release.noise]}")
    if not (0.0 <= release.delta < 1.0) or (release.noise == "laplace" and release.delta != 0.0):
        raise ValueError(f"release delta={release.delta!r} is impossible for noise={release.noise!r}")
    if release.noise == "gaussian" and math.isfinite(release.epsilon) and not (0.0 < release.delta < 1.0):
        raise ValueError(f"release delta={release.delta!r} must lie in (0, 1) for a Gaussian release")
    if release.repair_multiplier != DEFAULT_REPAIR_MULTIPLIER[release.noise]:
        raise ValueError(
            f"release repair_multiplier={release.repair_multiplier!r}; the public rule for noise="
            f"{release.noise!r} is {DEFAULT_REPAIR_MULTIPLIER[release.noise]!r}"
        )
    for name in ("feature_bound", "target_bound") if release.task == "regression" else ("feature_bound",):
        value = getattr(release, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
            raise ValueError(f"release {name}={value!r} must be a positive finite number")
    if not (release.epsilon > 0):  # NaN fails too
        raise ValueError(f"release epsilon={release.epsilon!r} must be > 0")
    if not math.isclose(release.sensitivity, expected_sensitivity(release), rel_tol=CALIBRATION_RTOL):
        raise ValueError(f"release sensitivity={release.sensitivity!r}; the public shape implies {expected_sensitivity(release)!r}")
    if release.noise_sd != noise_sd_of(release.noise, release.noise_scale):
        raise ValueError(f"release noise_sd={release.noise_sd!r} does not follow from its noise_scale={release.noise_scale!r}")


def _check_expected(release: Release, expected: ReleaseExpectation) -> None:
    """Every public field equals the run's, and the noise is exactly the run's calibration."""
    classification = expected.task == "classification"
    target = None if classification or expected.target_bound is None else float(expected.target_bound)
    pairs = {
        "task": (release.task, expected.task),
        "num_classes": (release.num_classes, expected.num_classes if classification else None),
        "num_features": (release.num_features, expected.num_features),
        "feature_bound": (release.feature_bound, float(expected.feature_bound)),
        "target_bound": (release.target_bound, target),
        "neighbouring": (release.neighbouring, expected.neighbouring),
        "noise": (release.noise, expected.noise),
        "sampler": (release.sampler, expected.sampler),
        "repair_keep": (release.repair_keep, expected.repair_keep),
    }
    for name, (got, want) in pairs.items():
        if got != want:
            raise ValueError(f"release {name}={got!r}; the run's public configuration says {want!r}")
    if expected.max_examples is not None and release.num_examples > expected.max_examples:
        raise ValueError(f"release num_examples={release.num_examples!r} is above the public maximum {expected.max_examples}")
    delta = float(expected.delta) if expected.noise == "gaussian" else 0.0
    want = _calibration(release, float(expected.epsilon), delta)
    for name, got, value in (
        ("epsilon", release.epsilon, want.epsilon),
        ("delta", release.delta, want.delta),
        ("noise_scale", release.noise_scale, want.scale),
    ):
        if not (got == value or math.isclose(got, value, rel_tol=CALIBRATION_RTOL, abs_tol=0.0)):
            raise ValueError(
                f"release {name}={got!r}; the run's calibration (epsilon={expected.epsilon!r}, delta={delta!r}, "
                f"sampler={expected.sampler!r}, n={release.num_examples}) gives exactly {value!r}"
            )


def _check_own_claims(release: Release) -> None:
    """Without an expectation: the scale is the one the release's own ε and δ imply."""
    want = _calibration(release, float(release.epsilon), float(release.delta))
    scale = release.noise_scale
    if math.isinf(release.epsilon):
        if scale != 0.0:
            raise ValueError(f"release noise_scale={scale!r}; epsilon=inf implies 0")
    elif not math.isclose(scale, want.scale, rel_tol=OWN_CLAIM_RTOL, abs_tol=0.0):
        raise ValueError(f"release noise_scale={scale!r}; its epsilon={release.epsilon!r} and the public shape imply {want.scale!r}")


def _calibration(release: Release, epsilon: float, delta: float) -> Any:
    coordinates = release_coordinates(release.dimension, int(np.prod(release.cross_shape)))
    return expected_calibration(
        release.noise, release.sampler, epsilon, delta, expected_sensitivity(release), release.num_examples, coordinates
    )


# -- statistics -----------------------------------------------------------------------------------------


def check_statistics(release: Release, false_refusal: float = FALSE_REFUSAL) -> None:
    """The statistics are what ``n`` bounded records and the release's noise law can produce (module
    docstring); an honest release fails with probability at most ``false_refusal``."""
    stats = release.statistics
    if set(stats) != {"gram", "cross"}:
        raise ValueError(f"release statistics must be 'gram' and 'cross'; got {sorted(stats)}")
    gram, cross = stats["gram"], stats["cross"]
    for key, value in stats.items():
        if value.dtype != np.float64 or not np.all(np.isfinite(value)):
            raise ValueError(f"statistics {key!r} contain NaN/Inf or non-numbers")
    if not np.array_equal(gram, gram.T):
        raise ValueError("statistics 'gram' is not symmetric")
    noise = entry_noise(release)
    n = float(release.num_examples)
    tail = noise.entry_bound(false_refusal / 2.0) + 1e-9 * n + 4.0 * n * n * 2.0**-53  # + float sums
    _check_magnitudes(release, gram, cross, tail)
    _check_cauchy_schwarz(gram, tail)
    _check_positive_semidefinite(gram, noise, false_refusal / 2.0, n)
    if release.task == "regression":
        _check_regression_cross(gram, cross, n, tail)
    else:
        _check_classification_cross(gram, cross, n, tail)


def _check_magnitudes(release: Release, gram: np.ndarray, cross: np.ndarray, tail: float) -> None:
    n, dim = float(release.num_examples), release.dimension
    for key, value in (("gram", gram), ("cross", cross)):
        peak = float(np.max(np.abs(value)))
        if peak > n + tail:
            raise ValueError(
                f"statistics {key!r} reach {peak:.6g}; {release.num_examples} bounded records and noise scale "
                f"{release.noise_scale:.6g} allow at most {n + tail:.6g}"
            )
    bias = float(gram[-1, -1])
    if abs(bias - n) > tail:
        raise ValueError(f"statistics 'gram' bias entry {bias:.6g} is not num_examples={release.num_examples} (+- {tail:.3g})")
    diagonal = np.diag(gram)[:-1]
    if float(diagonal.min(initial=0.0)) < -tail or float(diagonal.sum()) > n + (dim - 1) * tail:
        raise ValueError(
            f"statistics 'gram' feature diagonal (min {float(diagonal.min(initial=0.0)):.6g}, sum "
            f"{float(diagonal.sum()):.6g}) is impossible for {release.num_examples} records with ||h|| <= 1"
        )


def _upper(values: np.ndarray, tail: float) -> np.ndarray:
    """The largest exact value a noisy non-negative statistic can stand for: ``max(value + tail, 0)``."""
    return np.maximum(values + tail, 0.0)


def _check_cauchy_schwarz(gram: np.ndarray, tail: float) -> None:
    """``|G_ij| <= sqrt(G_ii G_jj)`` for exact Gram matrices; with the noise: ``|G~_ij| <= sqrt((G~_ii + t)
    (G~_jj + t)) + t``."""
    top = _upper(np.diag(gram), tail)
    excess = np.abs(gram) - (np.sqrt(np.outer(top, top)) + tail)
    i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[i, j] > 0:
        raise ValueError(
            f"statistics 'gram' entry ({i}, {j}) = {gram[i, j]:.6g} breaks Cauchy-Schwarz: the diagonal "
            f"({gram[i, i]:.6g}, {gram[j, j]:.6g}) and the noise allow |entry| <= {excess[i, j] + abs(gram[i, j]):.6g}"
        )


def _check_positive_semidefinite(gram: np.ndarray, noise: EntryNoise, failure: float, n: float) -> None:
    """An exact Gram matrix is PSD, so ``lambda_min(G~) >= -||E||``: refused below the spectral bound."""
    bound = noise.spectral_bound(failure) + 1e-9 * n * gram.shape[0]  # + eigen-solver rounding
    try:  # Cholesky succeeds iff G~ + bound*I is positive definite: a third of an eigendecomposition
        np.linalg.cholesky(gram + bound * np.eye(gram.shape[0]))
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(gram)[0])
        raise ValueError(
            f"statistics 'gram' is not positive semi-definite within its noise: smallest eigenvalue "
            f"{smallest:.6g}, the noise law allows >= {-bound:.6g}"
        ) from None


def _check_regression_cross(gram: np.ndarray, cross: np.ndarray, n: float, tail: float) -> None:
    """``b_j = sum_i h~_ij y_i`` with ``|y_i| <= 1``: ``|b_j| <= sqrt(n G_jj)`` (Cauchy-Schwarz)."""
    allowed = np.sqrt(n * _upper(np.diag(gram), tail)) + tail
    excess = np.abs(cross) - allowed
    j = int(np.argmax(excess))
    if excess[j] > 0:
        raise ValueError(
            f"statistics 'cross' entry {j} = {cross[j]:.6g}: targets in [-1, 1] and the Gram diagonal "
            f"{gram[j, j]:.6g} allow |entry| <= {allowed[j]:.6g}"
        )


def _check_classification_cross(gram: np.ndarray, cross: np.ndarray, n: float, tail: float) -> None:
    """``C[c] = sum_{i in c} h~_i - (1/K) sum_i h~_i``: its columns sum to 0, the class counts
    ``n_c = C[c, -1] + n/K`` lie in ``[0, n]`` and the class sums ``S_c = C[c] + G[:, -1] / K`` obey
    ``|S_cj| <= sqrt(n_c G_jj)``."""
    k = cross.shape[0]
    columns = np.abs(cross.sum(axis=0))
    if float(columns.max()) > k * tail:
        j = int(np.argmax(columns))
        raise ValueError(f"statistics 'cross' column {j} sums to {cross[:, j].sum():.6g}; it is 0 (+- {k * tail:.3g}) for any labels")
    counts = cross[:, -1] + n / k
    if float(counts.min()) < -tail or float(counts.max()) > n + tail:
        raise ValueError(f"statistics 'cross' class counts {np.round(counts, 3).tolist()} are impossible for {n:g} records")
    sums = cross + gram[:, -1][None, :] / k
    sum_tail = tail * (1.0 + 1.0 / k)
    allowed = np.sqrt(np.outer(_upper(counts, tail), _upper(np.diag(gram), tail))) + sum_tail
    excess = np.abs(sums) - allowed
    c, col = (int(v) for v in np.unravel_index(int(np.argmax(excess)), excess.shape))
    if excess[c, col] > 0:
        raise ValueError(
            f"statistics 'cross' class {c} sum of feature {col} = {sums[c, col]:.6g}: its count and the Gram "
            f"diagonal allow |sum| <= {allowed[c, col]:.6g}"
        )
