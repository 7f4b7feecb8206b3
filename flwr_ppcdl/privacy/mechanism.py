"""The functional mechanism (Zhang et al., PVLDB 2012) for a linear head on bounded features.

Guarantee
---------
:meth:`FunctionalMechanism.release` is, with respect to the chosen neighbouring relation over the
records it is given, ``ε``-differentially private (pure DP) with ``noise="laplace"``, and
``ρ``-zCDP, hence ``(ε, δ)``-differentially private, with ``noise="gaussian"``, under these
assumptions:

* each record's features depend on that record only (no batch statistics); the bound
  ``h = clip_l2(x / feature_bound)`` uses the *public* constant ``feature_bound`` and is enforced here
  (:mod:`.bounding`);
* regression targets are clipped to the public ``[-target_bound, target_bound]``; labels lie in
  ``{0, ..., K-1}`` (checked, :mod:`.validation`);
* under ``"replace-one"`` the number of records ``n`` is public (it is published in the release);
  under ``"add-remove-one"`` ``n`` is also published and therefore NOT protected;
* the mechanism is called once per dataset (or the ledger sums every call);
* the noise is unpredictable: it comes from the operating system's CSPRNG. A mechanism built with
  ``insecure_noise_seed`` draws reproducible noise that anyone knowing the seed can subtract: its
  releases are NOT private (tests and research on public data only).

What it releases: the upper triangle (with diagonal) of the Gram matrix ``G = Σ h~ h~ᵀ`` and the cross
term (classification ``C = Σ (e_y - 1/K) h~ᵀ``; regression ``b = Σ y h~``), ``h~ = [h; 1]``, perturbed by
one noise draw per coordinate: Laplace of scale ``Δ₁/ε`` (L1 sensitivity from :mod:`.sensitivity`
plus the floating-point summation slack of :func:`.bounding.summation_slack`; samplers in
:mod:`.noise`), or Gaussian of standard deviation ``σ = z(ε, δ)·Δ₂`` (L2 sensitivity, which does not
grow with the feature dimension, plus the L2 slack of :func:`.calibration.gaussian_l2_bound`;
``z`` from zCDP through ``dp-accounting``'s RDP accountant for the hardened sampler; samplers in
:mod:`.gaussian`).
Everything else -- the repair, the closed-form solve, the objective used for local training
(:mod:`.release`, :mod:`.repair`, :mod:`.objective`) -- is post-processing of the released arrays
and costs nothing.

Mathematics: ``docs/functional-mechanism.md`` in this repository (§2 regression, §3 softmax; K = 2
is binary logistic regression via the second-order Taylor expansion of log-sum-exp at 0).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.accounting import Guarantee, check_delta
from flwr_ppcdl.privacy.bounding import bound_feature_matrix, bound_target_vector
from flwr_ppcdl.privacy.calibration import analytic_noise_multiplier, zcdp_noise_multiplier
from flwr_ppcdl.privacy.gaussian import GAUSSIAN_SAMPLERS
from flwr_ppcdl.privacy.ledger import PrivacyLedger
from flwr_ppcdl.privacy.noise import SAMPLERS, PrivacyLeakWarning
from flwr_ppcdl.privacy.release import NOISES, TASKS, Release, noise_sd_of
from flwr_ppcdl.privacy.release_law import release_sampler
from flwr_ppcdl.privacy.repair import REPAIR_RULES
from flwr_ppcdl.privacy.sensitivity import (
    NEIGHBOURING_RELATIONS,
    sensitivity_regression,
    sensitivity_regression_l2,
    sensitivity_softmax,
    sensitivity_softmax_l2,
)
from flwr_ppcdl.privacy.validation import (
    as_feature_matrix,
    as_record_vector,
    check_choice,
    check_epsilon,
    check_labels,
    check_positive_finite,
    check_targets,
)

Task = Literal["classification", "regression"]
Sampler = Literal["discrete", "opendp", "numpy"]
RepairKeep = Literal["half-rho", "positive"]
Noise = Literal["laplace", "gaussian"]

SAMPLERS_BY_NOISE: dict[str, tuple[str, ...]] = {"laplace": SAMPLERS, "gaussian": GAUSSIAN_SAMPLERS}
"""Samplers of each noise law; ``"discrete"`` (hardened) is the default of both."""

DEFAULT_REPAIR_MULTIPLIER: dict[str, float] = {"laplace": 1.0, "gaussian": 0.5}
"""Public repair multiplier ``m`` (``ρ = m·2·sd·√D``) per noise law, measured on a validation split
(``benchmarks/gaussian_fm_tuning.py``); Laplace keeps the original rule."""

FloatArray = NDArray[np.float64]


def check_noise(noise: object, sampler: object, delta: object) -> tuple[str, str, float]:
    """Validate a (noise, sampler, delta) combination; return it as ``(noise, sampler, delta)``.

    ``"laplace"`` takes ``delta=None`` (pure ε-DP; returned as 0.0) and a sampler of
    :data:`~flwr_ppcdl.privacy.noise.SAMPLERS`; ``"gaussian"`` needs ``delta`` in ``(0, 1)`` and a
    sampler of :data:`~flwr_ppcdl.privacy.gaussian.GAUSSIAN_SAMPLERS`. Errors name the value.
    """
    kind = check_choice("noise", noise, NOISES)
    allowed = SAMPLERS_BY_NOISE[kind]
    if sampler not in allowed:
        raise ValueError(f"sampler for noise={kind!r} must be one of {allowed}; got {sampler!r}")
    if kind == "laplace":
        if delta is not None and delta != 0:
            raise ValueError(f"noise='laplace' is pure epsilon-DP and takes no delta; got delta={delta!r}")
        return kind, str(sampler), 0.0
    if delta is None:
        raise ValueError("noise='gaussian' needs delta in (0, 1), well below 1/n (e.g. 1e-5); got delta=None")
    return kind, str(sampler), check_delta(delta)


def check_num_classes(task: str, num_classes: object) -> int | None:
    """K >= 2 (an int) for classification, ``None`` for regression; raise naming the value otherwise."""
    if task == "classification":
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise TypeError(f"num_classes must be an int >= 2 for classification; got {num_classes!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes!r}")
        return int(num_classes)
    if num_classes is not None:
        raise ValueError(f"num_classes is for classification only; got {num_classes!r} for regression")
    return None


class FunctionalMechanism:
    """Functional mechanism for a linear softmax / logistic / least-squares head on bounded features.

    Parameters (all keyword-only)
    -----------------------------
    task:
        ``"classification"`` (K-class softmax through its second-order Taylor expansion at 0;
        ``K = 2`` is binary logistic regression) or ``"regression"`` (squared loss, exact).
    num_classes:
        ``K >= 2`` for classification; must be ``None`` for regression.
    epsilon:
        ε > 0 of one release (pure ε with Laplace noise; the ε of (ε, δ) with Gaussian noise).
        ``float("inf")`` releases exact statistics and warns :class:`PrivacyLeakWarning`.
    feature_bound:
        Public constant ``c``: features are mapped to ``h = clip_l2(x / c)``. Never derived from data.
    target_bound:
        Public ``B`` (regression): targets are mapped to ``clip(y, -B, B) / B``.
    neighbouring:
        ``"replace-one"`` (default; ``n`` public) or ``"add-remove-one"`` (halves Δ; ``n`` is
        published and so not protected).
    noise:
        ``"laplace"`` (default: pure ε-DP, L1 sensitivity, grows about linearly with ``d``) or
        ``"gaussian"`` (``(ε, δ)``-DP through ρ-zCDP, L2 sensitivity independent of ``d``: far less
        noise for more than a few features; measured +10 points on Fashion-MNIST at ε = 1).
    delta:
        ``δ`` in ``(0, 1)`` of a Gaussian release (required there; ``None`` for Laplace). Choose it
        well below ``1/n``: a release warns :class:`PrivacyLeakWarning` when ``δ >= 1/n``.
    sampler:
        Laplace: ``"discrete"`` (default, hardened: exact discrete Laplace on a power-of-two grid),
        ``"opendp"`` (OpenDP ``make_laplace``; cannot be seeded), ``"numpy"`` (fast, NOT hardened).
        Gaussian: ``"discrete"`` (default, hardened: exact discrete Gaussian on a power-of-two grid,
        σ from zCDP), ``"numpy"`` (analytic σ, NOT hardened).
    insecure_noise_seed:
        ``None`` (the default): the noise comes from the operating system's CSPRNG and nobody can
        predict it. An ``int`` or a ``numpy.random.Generator`` makes the noise reproducible and
        therefore **predictable**: whoever knows the seed regenerates the noise and recovers the
        exact statistics, so a seeded release is NOT differentially private. For tests and
        reproducible research on public data only; warns :class:`PrivacyLeakWarning`.
    ledger:
        Optional :class:`PrivacyLedger`, charged by :meth:`release` before any noise is drawn.
    repair_keep:
        Public repair rule stored in the release (``"half-rho"`` default, or ``"positive"``).
    repair_multiplier:
        Public ``m`` of the repair ``ρ = m·2·sd·√D``; ``None``: :data:`DEFAULT_REPAIR_MULTIPLIER`
        of the noise law.
    """

    def __init__(
        self,
        *,
        task: Task,
        num_classes: int | None = None,
        epsilon: float,
        feature_bound: float = 1.0,
        target_bound: float = 1.0,
        neighbouring: str = "replace-one",
        sampler: Sampler = "discrete",
        insecure_noise_seed: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        repair_keep: RepairKeep = "half-rho",
        noise: Noise = "laplace",
        delta: float | None = None,
        repair_multiplier: float | None = None,
    ) -> None:
        self.task: str = check_choice("task", task, TASKS)
        self.num_classes: int | None = check_num_classes(task, num_classes)
        self.epsilon = check_epsilon(epsilon)
        self.feature_bound = check_positive_finite("feature_bound", feature_bound)
        self.target_bound = check_positive_finite("target_bound", target_bound)
        self.neighbouring = check_choice("neighbouring", neighbouring, NEIGHBOURING_RELATIONS)
        self.noise, self.sampler, self.delta = check_noise(noise, sampler, delta)
        self.repair_keep: str = check_choice("repair_keep", repair_keep, REPAIR_RULES)
        self.repair_multiplier = (
            DEFAULT_REPAIR_MULTIPLIER[self.noise]
            if repair_multiplier is None
            else check_positive_finite("repair_multiplier", repair_multiplier)
        )
        if ledger is not None and not isinstance(ledger, PrivacyLedger):
            raise TypeError(f"ledger must be a PrivacyLedger or None; got {type(ledger).__name__}")
        self.ledger = ledger
        self._rng = _generator(insecure_noise_seed)
        self.reproducible_noise = insecure_noise_seed is not None and self.sampler != "opendp"
        if sampler == "opendp" and insecure_noise_seed is not None:
            warnings.warn(
                f"sampler='opendp' cannot be seeded; insecure_noise_seed={insecure_noise_seed!r} is "
                "ignored and releases are not reproducible",
                UserWarning,
                stacklevel=2,
            )
        elif self.reproducible_noise:
            warnings.warn(
                "insecure_noise_seed is set: the noise is reproducible, so anyone who knows the seed "
                "recovers the exact statistics -- NOT PRIVATE (tests and research on public data only)",
                PrivacyLeakWarning,
                stacklevel=2,
            )
        if math.isinf(self.epsilon):
            warnings.warn(
                "epsilon=inf: statistics are released WITHOUT noise (no differential privacy)",
                PrivacyLeakWarning,
                stacklevel=2,
            )

    # ---------------------------------------------------------------- public transforms

    def bound_features(self, x: ArrayLike) -> FloatArray:
        """Public per-record transform ``[clip_l2(x / feature_bound); 1]`` -> (n, d+1) float64."""
        return bound_feature_matrix(as_feature_matrix(x), self.feature_bound)

    def bound_targets(self, y: ArrayLike) -> FloatArray:
        """Public per-record transform ``clip(y, -B, B) / B`` -> (n,) float64 (regression)."""
        raw = np.asarray(y)
        if raw.ndim != 1:
            raise ValueError(f"regression targets must be 1-D; got shape {raw.shape}")
        return bound_target_vector(check_targets(raw), self.target_bound)

    def sensitivity(self, d: int) -> float:
        """Δ of the whole release for ``d`` features (before the bias; see :mod:`.sensitivity`):
        L1 for Laplace noise, L2 for Gaussian noise."""
        k = int(self.num_classes or 0)
        if self.noise == "gaussian":
            if self.task == "classification":
                return sensitivity_softmax_l2(d, k, self.neighbouring)
            return sensitivity_regression_l2(d, self.neighbouring)
        if self.task == "classification":
            return sensitivity_softmax(d, k, self.neighbouring)
        return sensitivity_regression(d, self.neighbouring)

    def planned_guarantee(self) -> Guarantee:
        """The guarantee one release will record, known before any record is read.

        Laplace: pure ``ε``. Gaussian: ``(ε, δ)`` with ``ρ = 1/(2z²)`` for the calibration's noise
        multiplier ``z`` (zCDP for ``"discrete"``, analytic for ``"numpy"``); the actual release
        spends at most this (its grid rounding only adds noise). Used to check a budget first.
        """
        if math.isinf(self.epsilon) or self.noise == "laplace":
            return Guarantee.pure(self.epsilon)
        calibrate = zcdp_noise_multiplier if self.sampler == "discrete" else analytic_noise_multiplier
        z = calibrate(self.epsilon, self.delta)
        return Guarantee(kind="zcdp", epsilon=self.epsilon, delta=self.delta, rho=1.0 / (2.0 * z * z))

    def _released_description(self, d: int) -> str:
        dim = d + 1
        cross = f"cross C ({self.num_classes}x{dim})" if self.task == "classification" else f"cross b ({dim})"
        return f"gram upper triangle ({dim * (dim + 1) // 2}) + {cross}"

    # ---------------------------------------------------------------- the release

    def _exact_statistics(self, features: ArrayLike, labels_or_targets: ArrayLike) -> tuple[FloatArray, tuple[int, ...], int, int]:
        """The exact released vector ``[upper(G), cross]`` (private; never leaves :meth:`release`)."""
        x = as_feature_matrix(features)
        n, d = x.shape
        target_raw = as_record_vector(labels_or_targets, "labels" if self.task == "classification" else "targets", n)
        h = bound_feature_matrix(x, self.feature_bound)
        del x
        if self.task == "classification":
            k = int(self.num_classes or 0)
            labels = check_labels(target_raw, k)
            centred = np.full((n, k), -1.0 / k)
            centred[np.arange(n), labels] += 1.0
            cross = centred.T @ h
            del labels, centred
        else:
            cross = h.T @ bound_target_vector(check_targets(target_raw), self.target_bound)
        del target_raw
        gram = h.T @ h
        del h
        exact = np.concatenate([gram[np.triu_indices(d + 1)], cross.ravel()])
        return exact, cross.shape, n, d

    def release(self, features: ArrayLike, labels_or_targets: ArrayLike) -> Release:
        """Read the records once and release their noisy statistics. THE ONLY function reading records.

        Parameters
        ----------
        features:
            (n, d) real array of raw features (bounded here with the public ``feature_bound``).
        labels_or_targets:
            (n,) integer labels in ``[0, K)`` (classification) or real targets (regression, clipped
            here with the public ``target_bound``).

        Returns
        -------
        Release
            Noisy statistics only; the exact statistics are deleted before returning.

        Guarantee: ``ε``-DP (Laplace) or ``(ε, δ)``-DP (Gaussian) under :attr:`neighbouring` (module
        docstring). Input errors are raised before anything is charged or released. The ledger, if
        any, is charged before noise is drawn; if it refuses (:class:`BudgetExceededError`) nothing
        is released. A Gaussian release with ``δ >= 1/n`` warns :class:`PrivacyLeakWarning`.
        """
        exact, cross_shape, n, d = self._exact_statistics(features, labels_or_targets)
        sensitivity = self.sensitivity(d)
        charge: dict[str, Any] = {
            "mechanism": f"functional-mechanism/{self.task}/{self.noise}/{self.sampler}",
            "released": self._released_description(d),
            "neighbouring": self.neighbouring,
        }
        spent_delta = 0.0
        if math.isinf(self.epsilon):
            if self.ledger is not None:
                self.ledger.charge(math.inf, note="no noise", **charge)
            noisy, noise_scale, spent = exact, 0.0, math.inf
        else:
            if self.noise == "gaussian" and self.delta >= 1.0 / n:
                warnings.warn(
                    f"delta={self.delta!r} >= 1/n = 1/{n}: (epsilon, delta)-DP with delta this large "
                    "allows releasing a record outright with probability delta; use delta well below 1/n",
                    PrivacyLeakWarning,
                    stacklevel=2,
                )
            sampler = release_sampler(
                self.noise, self.sampler, epsilon=self.epsilon, delta=self.delta, sensitivity=sensitivity,
                num_examples=n, coordinates=exact.size, rng=self._rng,
            )
            spent, spent_delta = sampler.epsilon_spent, getattr(sampler, "delta_spent", 0.0)
            if self.ledger is not None:
                self.ledger.charge(spent, delta=spent_delta, rho=getattr(sampler, "rho", None), **charge)
            noisy = sampler.perturb(exact)
            noise_scale = sampler.scale
        del exact
        dim = d + 1
        upper = np.triu_indices(dim)
        gram_noisy = np.zeros((dim, dim))
        gram_noisy[upper] = noisy[: upper[0].size]
        gram_noisy = gram_noisy + np.triu(gram_noisy, 1).T
        cross_noisy = np.array(noisy[upper[0].size :]).reshape(cross_shape)
        return Release(
            task=self.task,
            num_classes=self.num_classes,
            epsilon=spent,
            sensitivity=sensitivity,
            noise_scale=noise_scale,
            neighbouring=self.neighbouring,
            num_examples=n,
            num_features=d,
            feature_bound=self.feature_bound,
            target_bound=self.target_bound if self.task == "regression" else None,
            statistics={"gram": gram_noisy, "cross": cross_noisy},
            sampler=self.sampler,
            repair_keep=self.repair_keep,
            noise=self.noise,
            delta=spent_delta,
            noise_sd=noise_sd_of(self.noise, noise_scale),
            repair_multiplier=self.repair_multiplier,
        )

    def __repr__(self) -> str:
        return (
            f"FunctionalMechanism(task={self.task!r}, num_classes={self.num_classes!r}, "
            f"epsilon={self.epsilon!r}, feature_bound={self.feature_bound!r}, "
            f"target_bound={self.target_bound!r}, neighbouring={self.neighbouring!r}, "
            f"noise={self.noise!r}, delta={self.delta!r}, sampler={self.sampler!r})"
        )


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator | None:
    """The injected generator (reproducible, NOT private releases) or ``None`` (OS CSPRNG)."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if int(seed) < 0:
            raise ValueError(f"insecure_noise_seed must be >= 0; got {seed!r}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"insecure_noise_seed must be None, an int or a numpy Generator; got {seed!r}")
