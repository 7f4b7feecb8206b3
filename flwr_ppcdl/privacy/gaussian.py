"""Gaussian functional mechanism, phase 1: calibration, floating-point slack and samplers.

Two samplers add Gaussian noise to a float64 vector whose L2 sensitivity is at most ``l2_bound``
(the caller includes the floating-point summation slack: :func:`gaussian_l2_bound`):

* :class:`DiscreteGridGaussian` -- hardened, the one to use on real data. Mirrors
  :class:`~flwr_ppcdl.privacy.noise.DiscreteGridLaplace`: the vector is snapped to a public
  power-of-two grid and *exact* discrete Gaussian noise (Canonne, Kamath, Steinke 2020,
  Algorithm 3, rational ``σ²``) is added to the integer grid indices, every random decision coming
  from an injected ``randbelow``. Guarantee: ``ρ``-zCDP, reported as ``(ε, δ)`` through
  ``dp-accounting``'s RDP accountant (:func:`zcdp_noise_multiplier`).
* :class:`NumpyGaussian` -- ``numpy.random.Generator.normal`` with the analytic Gaussian
  mechanism's ``σ`` (Balle & Wang 2018): smaller noise, **not hardened** (floating-point attack of
  Mironov 2012, predictable PCG64 stream); opt-in, warns :class:`PrivacyLeakWarning`.

Why the hardened sampler is calibrated through zCDP and not through the analytic ``(ε, δ)`` profile:
CKS 2020 (Theorem 14) show that adding independent discrete Gaussians ``N_Z(0, σ²)`` to an
integer-valued query whose neighbouring outputs are at most ``Δ`` apart in L2 is
``Δ²/(2σ²)``-zCDP -- exactly the continuous Gaussian's ``ρ``. The continuous Gaussian's exact
``(ε, δ)`` profile does *not* carry over to the multivariate discrete Gaussian without an extra
correction term (their Theorem 15), so the analytic ``σ`` would be a hand-written, unchecked
conversion. zCDP costs about 8 % more ``σ`` at ``ε = 1, δ = 1e-5`` (10.69 → 11.59 for Δ₂ = 2.8644).

Module map: calibration (:func:`zcdp_noise_multiplier`, :func:`sigma_zcdp`,
:func:`analytic_gaussian_delta`, :func:`analytic_noise_multiplier`, :func:`sigma_analytic`),
floating-point slack (:func:`summation_slack_l2`, :func:`gaussian_l2_bound`), exact sampling
(:func:`discrete_gaussian`, :func:`discrete_gaussian_variance`), samplers.

References
----------
* C. Canonne, G. Kamath, T. Steinke, "The discrete Gaussian for differential privacy", NeurIPS 2020
  (arXiv 2004.00010): Algorithm 3, Theorem 14, Proposition 12 (used by the accountant).
* B. Balle, Y.-X. Wang, "Improving the Gaussian mechanism for differential privacy: analytical
  calibration and optimal denoising", ICML 2018 (arXiv 1805.06530), Theorem 8.
* M. Bun, T. Steinke, "Concentrated differential privacy", TCC 2016 (arXiv 1605.02065).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.privacy.accounting import (
    Guarantee,
    check_delta,
    check_epsilon,
    zcdp_epsilon,
)
from flwr_ppcdl.privacy.noise import (
    GRID_BITS,
    PrivacyLeakWarning,
    RandBelow,
    bernoulli_exp_neg,
    discrete_laplace,
)

UNIT_ROUNDOFF: float = 2.0**-53

SIGMA_DENOMINATOR_BITS: int = 20
"""The integer noise ``σ`` (in grid steps) is rounded *up* to a multiple of ``2**-20``."""

CALIBRATION_RTOL: float = 1e-12
"""Bisection stops when the bracket is this narrow (relative); the upper end is returned."""

ANALYTIC_MARGIN: float = 1e-6
"""Relative margin added to the analytic ``σ``. The exact profile (checked in 50-digit mpmath) is met
without it; the margin keeps independent, deliberately pessimistic accountants on the safe side too:
``dp-accounting``'s PLD accountant (discretisation 1e-4) reports up to 1.1e-7 (relative) more ``ε``
than the exact value for ``ε`` in [0.1, 10] at ``δ = 1e-5``. It costs 1e-6 of ``σ``."""

MIN_NOISE_MULTIPLIER: float = 2.0**-60
MAX_NOISE_MULTIPLIER: float = 2.0**500
"""Above it ``ρ = 1/(2z²)`` would be subnormal (it underflows to 0 from ``2**512``): refused."""


# --------------------------------------------------------------------------- calibration


def _check_positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    result = float(value)
    if not (math.isfinite(result) and result > 0):
        raise ValueError(f"{name} must be positive and finite; got {value!r}")
    return result


def _smallest_multiplier(holds: Callable[[float], bool], epsilon: float, delta: float) -> float:
    """Smallest ``z`` (to :data:`CALIBRATION_RTOL`, rounded up) with ``holds(z)``; ``holds`` monotone."""
    lo = hi = 1.0
    if holds(hi):
        while holds(lo):
            if lo <= MIN_NOISE_MULTIPLIER:
                return lo  # valid (holds), only conservative; reached for absurdly large ε
            hi, lo = lo, lo / 2.0
    else:
        while not holds(hi):
            if hi >= MAX_NOISE_MULTIPLIER:
                raise ValueError(
                    f"epsilon={epsilon!r} is too small to sample at delta={delta!r}: the noise "
                    f"multiplier sigma/Δ₂ would exceed 2**500"
                )
            lo, hi = hi, hi * 2.0
    while hi - lo > CALIBRATION_RTOL * hi:
        mid = lo + (hi - lo) / 2.0
        if holds(mid):
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=256)
def zcdp_noise_multiplier(epsilon: float, delta: float) -> float:
    """Smallest noise multiplier ``z = σ/Δ₂`` whose ``ρ = 1/(2z²)``-zCDP gives ``(ε, δ)``-DP.

    Bisection (to a relative ``1e-12``, returning the upper end) on ``dp-accounting``'s RDP
    accountant: ``zcdp_epsilon(1/(2z²), δ) <= ε`` holds at the returned ``z``. Valid for the
    continuous Gaussian and for the (multivariate) discrete Gaussian on integer queries, whose
    ``ρ = Δ₂²/(2σ²)`` is the same (CKS 2020, Theorem 14). Depends on ``(ε, δ)`` only; cached.

    Raises ``ValueError`` naming the value for ``ε <= 0``, ``δ`` outside ``(0, 1)``, NaN or
    infinity, and when ``ε`` is so small that ``z`` would exceed ``2**500``.
    """
    eps = check_epsilon(epsilon)
    dlt = check_delta(delta)

    def holds(z: float) -> bool:
        if z > MAX_NOISE_MULTIPLIER:  # ρ would underflow and read as "no privacy loss"
            return False
        return zcdp_epsilon(1.0 / (2.0 * z * z), dlt) <= eps

    return _smallest_multiplier(holds, eps, dlt)


def _sigma(multiplier: float, l2_sensitivity: float, epsilon: float) -> float:
    sigma = multiplier * l2_sensitivity
    if not math.isfinite(sigma):
        raise ValueError(
            f"epsilon={epsilon!r} is too small to sample (or the L2 bound too large): sigma = "
            f"{multiplier!r} * {l2_sensitivity!r} is not a finite float"
        )
    return sigma


def sigma_zcdp(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """``σ = zcdp_noise_multiplier(ε, δ) · Δ₂``: Gaussian noise that is ``(ε, δ)``-DP via zCDP."""
    delta2 = _check_positive_finite("l2_sensitivity", l2_sensitivity)
    return _sigma(zcdp_noise_multiplier(epsilon, delta), delta2, epsilon)


def _log_ndtr(x: float) -> float:
    from scipy.special import log_ndtr

    return float(log_ndtr(x))


def _analytic_log_delta(multiplier: float, epsilon: float) -> float:
    """``log δ(ε)`` of the Gaussian mechanism with ``σ/Δ = multiplier`` (Balle & Wang, Theorem 8)."""
    a = 0.5 / multiplier - epsilon * multiplier
    b = -0.5 / multiplier - epsilon * multiplier
    log_first = _log_ndtr(a)
    log_second = epsilon + _log_ndtr(b)
    if log_second >= log_first:  # only through rounding, when δ is far below 1e-300
        return -math.inf
    return log_first + math.log(-math.expm1(log_second - log_first))


def analytic_gaussian_delta(sigma: float, epsilon: float, l2_sensitivity: float) -> float:
    """Exact privacy profile of the continuous Gaussian mechanism (Balle & Wang 2018, Theorem 8).

    ``δ(ε) = Φ(Δ/(2σ) - εσ/Δ) - e^ε Φ(-Δ/(2σ) - εσ/Δ)``: the smallest ``δ`` for which adding
    ``N(0, σ²)`` to every coordinate of a query of L2 sensitivity ``Δ`` is ``(ε, δ)``-DP. Computed
    in log space (``scipy.special.log_ndtr``), so ``e^ε`` cannot overflow.
    """
    s = _check_positive_finite("sigma", sigma)
    eps = check_epsilon(epsilon)
    delta2 = _check_positive_finite("l2_sensitivity", l2_sensitivity)
    return math.exp(_analytic_log_delta(s / delta2, eps))


@lru_cache(maxsize=256)
def analytic_noise_multiplier(epsilon: float, delta: float) -> float:
    """Smallest ``z = σ/Δ`` with ``analytic_gaussian_delta(z·Δ, ε, Δ) <= δ``, times ``1 + 1e-6``.

    Bisection to a relative ``1e-12`` (upper end), then the :data:`ANALYTIC_MARGIN`. Valid for the
    *continuous* Gaussian only (:class:`NumpyGaussian`); checked against ``dp-accounting``'s PLD
    accountant and its ``get_epsilon_gaussian`` in the tests. Input errors as in
    :func:`zcdp_noise_multiplier`.
    """
    eps = check_epsilon(epsilon)
    dlt = check_delta(delta)
    log_target = math.log(dlt)

    def holds(z: float) -> bool:
        return z <= MAX_NOISE_MULTIPLIER and _analytic_log_delta(z, eps) <= log_target

    return _smallest_multiplier(holds, eps, dlt) * (1.0 + ANALYTIC_MARGIN)


def sigma_analytic(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """``σ = analytic_noise_multiplier(ε, δ) · Δ₂`` (continuous Gaussian, exact ``(ε, δ)``)."""
    delta2 = _check_positive_finite("l2_sensitivity", l2_sensitivity)
    return _sigma(analytic_noise_multiplier(epsilon, delta), delta2, epsilon)


# --------------------------------------------------------------------------- floating-point slack


def summation_slack_l2(num_examples: int, num_coordinates: int) -> float:
    """L2 analogue of :func:`~flwr_ppcdl.privacy.summation_slack`: ``sqrt(m) · 2 γ_{n+1} n``.

    Every per-record term of every released coordinate has absolute value ``<= 1``, so computing a
    coordinate's sum of ``n`` terms in float64 (any order, with or without FMA) errs by at most
    ``γ_n n`` (Higham, §3.1; ``γ_k = k u / (1 - k u)``, ``u = 2**-53``; ``n + 1`` for margin). Write
    ``v̂ = v + e`` and ``v̂' = v' + e'`` for the computed vectors of two neighbouring datasets, with
    ``|e_j|, |e'_j| <= γ_{n+1} n``. Then ``||v̂ - v̂'||_2 <= ||v - v'||_2 + ||e||_2 + ||e'||_2 <=
    Δ₂ + 2 sqrt(m) γ_{n+1} n``. For ``n = 6000``, ``m = 1775`` this is about 3.4e-7.
    """
    for name, value in (("num_examples", num_examples), ("num_coordinates", num_coordinates)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    k = (int(num_examples) + 1) * UNIT_ROUNDOFF
    if k >= 0.5:
        raise ValueError(f"num_examples={num_examples} too large for the float64 slack bound")
    gamma = k / (1.0 - k)
    # Round the product up by a relative 2**-50: its own few float operations cannot undercut it.
    return 2.0 * math.sqrt(num_coordinates) * gamma * num_examples * (1.0 + 2.0**-50)


def gaussian_l2_bound(delta2: float, num_examples: int, num_coordinates: int) -> float:
    """L2 bound to calibrate the Gaussian noise with: ``Δ₂ + summation_slack_l2(n, m)``.

    ``delta2`` is an L2 sensitivity of the exact released vector
    (:func:`~flwr_ppcdl.privacy.sensitivity.sensitivity_softmax_l2` or
    :func:`~flwr_ppcdl.privacy.sensitivity.sensitivity_regression_l2`); the result bounds the L2
    distance of the vectors actually computed in float64 (see :func:`summation_slack_l2`).
    """
    base = _check_positive_finite("delta2", delta2)
    return base + summation_slack_l2(num_examples, num_coordinates)


# --------------------------------------------------------------------------- exact sampling


def discrete_gaussian(sigma_squared: Fraction, randbelow: RandBelow) -> int:
    """One exact draw of the discrete Gaussian ``N_Z(0, σ²)``, rational ``σ² > 0``.

    ``P(Z = z) ∝ exp(-z² / (2σ²))`` on the integers. CKS 2020, Algorithm 3: with ``t = floor(σ) + 1``,
    draw ``Y`` from the discrete Laplace of scale ``t`` and accept it with probability
    ``exp(-(|Y| - σ²/t)² / (2σ²))``. Integer arithmetic and ``randbelow`` only (through
    :func:`~flwr_ppcdl.privacy.noise.discrete_laplace` and
    :func:`~flwr_ppcdl.privacy.noise.bernoulli_exp_neg`); about 1.3 proposals per draw for
    ``σ >= 10`` (1.8 at ``σ = 1``).
    """
    s2 = Fraction(sigma_squared)
    if s2 <= 0:
        raise ValueError(f"sigma_squared must be > 0; got {sigma_squared}")
    num, den = s2.numerator, s2.denominator
    t = math.isqrt(num // den) + 1  # floor(sqrt(x)) == floor(sqrt(floor(x)))
    scale = Fraction(t)
    # (|Y| - σ²/t)² / (2σ²) = (|Y| t den - num)² / (2 t² den num)
    denominator = 2 * t * t * den * num
    while True:
        y = discrete_laplace(scale, randbelow)
        gap = abs(y) * t * den - num
        if bernoulli_exp_neg(Fraction(gap * gap, denominator), randbelow):
            return y


def discrete_gaussian_variance(sigma: float) -> float:
    """Exact variance of ``N_Z(0, σ²)``: ``Σ z² e^{-z²/2σ²} / Σ e^{-z²/2σ²}`` (summed, ``|z| <= 40σ + 2``).

    It is below ``σ²`` (CKS 2020, §2): by a relative 0.14 at ``σ = 0.5``, ``2e-7`` at ``σ = 1`` and
    below float64 resolution from ``σ ≈ 1.5``. For ``σ > 1e5`` the sum is skipped and ``σ²``
    returned.
    """
    s = _check_positive_finite("sigma", sigma)
    if s > 1e5:
        return s * s
    z = np.arange(-math.ceil(40 * s) - 2, math.ceil(40 * s) + 3, dtype=np.float64)
    weights = np.exp(-(z * z) / (2.0 * s * s))
    return float(np.sum(z * z * weights) / np.sum(weights))


def _float_up(value: Fraction) -> float:
    """Smallest float ``>= value``."""
    result = float(value)
    if Fraction(result) < value:
        result = math.nextafter(result, math.inf)
    return result


def _ceil_sqrt(m: int) -> int:
    root = math.isqrt(m)
    return root if root * root == m else root + 1


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be an int >= 1; got {size!r}")
    return int(size)


class DiscreteGridGaussian:
    """Hardened Gaussian mechanism for a float64 vector: snap to a grid, add exact discrete Gaussian.

    Calibration (public; depends only on ``l2_bound``, ``ε``, ``δ`` and the vector length ``m``):

    * ``z = zcdp_noise_multiplier(ε, δ)`` (RDP accountant, ``dp-accounting``);
    * grid step ``g = 2**(floor(log2(z · l2_bound)) - 30)``;
    * each coordinate ``v_i`` is mapped to ``k_i = round(v_i / g)``. Rounding moves a coordinate by at
      most ``g/2``, so between neighbouring datasets ``||k - k'||_2 <= Δ_Z := (l2_bound +
      ceil(sqrt(m))·g) / g``;
    * integer noise ``Z_i ~ N_Z(0, S²)`` with ``S >= z · Δ_Z`` (rounded up to a multiple of
      ``2**-20``), so releasing ``k + Z`` is ``ρ = Δ_Z² / (2S²) <= 1/(2z²)``-zCDP (CKS 2020,
      Theorem 14), hence ``(ε, δ)``-DP;
    * the output ``(k + Z)·g`` is post-processing of that integer release.

    Guarantee: ``ρ``-zCDP and ``(epsilon_spent, delta_spent)``-DP for any input whose L2 distance
    between neighbouring datasets is at most ``l2_bound`` *in the floats actually passed* (use
    :func:`gaussian_l2_bound`).

    Attributes
    ----------
    scale:
        ``S·g``: the ``σ`` parameter of the discrete Gaussian in float units, i.e. the per-coordinate
        standard deviation of the added noise ``Z_i·g`` (the true sd of ``N_Z(0, S²)`` is below
        ``S`` by far less than float64 resolution since ``S > 2**29``). It exceeds ``sigma_zcdp(ε, δ, l2_bound)`` by ``z·ceil(sqrt(m))·g`` (the grid
        slack; relative ``<= sqrt(m)·z·2**-30``, 1.1e-7 for ``m = 1775`` at ``ε = 1``). The output additionally carries the deterministic rounding
        ``round(v/g)·g - v`` (at most ``g/2``, about ``1e-9·scale``).
    rho:
        zCDP parameter actually spent (``Δ_Z²/(2S²)``, rounded up to a float).
    epsilon_spent, delta_spent:
        ``(ε, δ)``-DP guarantee: ``epsilon_spent = zcdp_epsilon(rho, δ) <= ε``, ``delta_spent = δ``.
    size:
        Length ``m`` of the vectors that :meth:`perturb` accepts.
    grid, grid_exponent, integer_sigma, noise_multiplier, l2_bound:
        Public calibration details (``integer_sigma = S`` as a ``Fraction``).
    """

    name = "discrete-gaussian"

    def __init__(
        self,
        *,
        l2_bound: float,
        epsilon: float,
        delta: float,
        size: int,
        randbelow: RandBelow,
    ) -> None:
        bound = _check_positive_finite("l2_bound", l2_bound)
        eps = check_epsilon(epsilon)
        dlt = check_delta(delta)
        self.size = _check_size(size)
        self._randbelow = randbelow
        self.l2_bound = bound
        self.noise_multiplier = zcdp_noise_multiplier(eps, dlt)
        nominal = _sigma(self.noise_multiplier, bound, eps)
        self.grid_exponent = math.frexp(nominal)[1] - 1 - GRID_BITS  # floor(log2(nominal)) - 30
        self.grid = math.ldexp(1.0, self.grid_exponent)
        grid = Fraction(self.grid)
        self.integer_l2_bound = (Fraction(bound) + _ceil_sqrt(self.size) * grid) / grid
        exact_sigma = Fraction(self.noise_multiplier) * self.integer_l2_bound
        unit = 2**SIGMA_DENOMINATOR_BITS
        steps = math.ceil(exact_sigma * unit)
        while True:
            self.integer_sigma = Fraction(steps, unit)
            self.sigma_squared = self.integer_sigma * self.integer_sigma
            self.rho = _float_up(self.integer_l2_bound**2 / (2 * self.sigma_squared))
            self.epsilon_spent = zcdp_epsilon(self.rho, dlt)
            if self.epsilon_spent <= eps:
                break
            steps += 1  # float rounding of ρ landed above the target by an ulp: one more step
        self.delta_spent = dlt
        self.scale = float(self.integer_sigma * grid)

    def guarantee(self) -> Guarantee:
        """The release's guarantee for :func:`flwr_ppcdl.privacy.accounting.compose`."""
        return Guarantee(
            kind="zcdp", epsilon=self.epsilon_spent, delta=self.delta_spent, rho=self.rho
        )

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``(round(v/g) + Z)·g`` for the flat float64 vector ``values`` (length ``size``)."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        if not np.isfinite(flat).all():
            raise ValueError("values must be finite")
        indices = np.rint(np.ldexp(flat, -self.grid_exponent))  # exact: division by a power of two
        noisy = [int(k) + discrete_gaussian(self.sigma_squared, self._randbelow) for k in indices]
        # Post-processing of the exact integers: k*g is exact below 2**53, a rounding above.
        return np.ldexp(np.asarray([float(k) for k in noisy], dtype=np.float64), self.grid_exponent)


class NumpyGaussian:
    """Continuous Gaussian noise from ``numpy.random.Generator.normal`` -- NOT hardened.

    ``σ = sigma_analytic(ε, δ, l2_bound)`` (analytic Gaussian mechanism, exact ``(ε, δ)``).
    Mathematically ``(ε, δ)``-DP (and ``1/(2z²)``-zCDP), but the floating-point implementation is
    open to Mironov's (2012) least-significant-bit attack, and a seeded PCG64 stream is predictable.
    Opt-in, for fast experiments; constructing it emits :class:`PrivacyLeakWarning`.
    """

    name = "numpy-gaussian"

    def __init__(
        self,
        *,
        l2_bound: float,
        epsilon: float,
        delta: float,
        size: int,
        rng: np.random.Generator,
    ) -> None:
        bound = _check_positive_finite("l2_bound", l2_bound)
        eps = check_epsilon(epsilon)
        dlt = check_delta(delta)
        self.size = _check_size(size)
        warnings.warn(
            "NumpyGaussian uses numpy's floating-point Gaussian sampler, which is not hardened "
            "against the floating-point attack of Mironov (2012); use DiscreteGridGaussian for "
            "real data",
            PrivacyLeakWarning,
            stacklevel=2,
        )
        self.l2_bound = bound
        self.noise_multiplier = analytic_noise_multiplier(eps, dlt)
        self.scale = _sigma(self.noise_multiplier, bound, eps)
        self.rho = _float_up(1 / (2 * Fraction(self.noise_multiplier) ** 2))
        self.epsilon_spent = eps
        self.delta_spent = dlt
        self._rng = rng

    def guarantee(self) -> Guarantee:
        """The release's guarantee (its exact analytic ``(ε, δ)`` and its ``ρ``)."""
        return Guarantee(
            kind="zcdp", epsilon=self.epsilon_spent, delta=self.delta_spent, rho=self.rho
        )

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``values + N(0, scale²)`` drawn from the injected generator."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        return flat + self._rng.normal(0.0, self.scale, size=flat.size)
