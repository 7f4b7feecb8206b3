"""Gaussian samplers of the functional mechanism: the hardened discrete Gaussian and numpy's.

Two samplers add Gaussian noise to a float64 vector whose L2 sensitivity is at most ``l2_bound``
(the caller includes the floating-point summation slack:
:func:`~flwr_ppcdl.privacy.calibration.gaussian_l2_bound`); :func:`make_gaussian_sampler` picks one
by name (:data:`GAUSSIAN_SAMPLERS`):

* ``"discrete"`` -- :class:`DiscreteGridGaussian`, hardened, the one to use on real data. Mirrors
  :class:`~flwr_ppcdl.privacy.noise.DiscreteGridLaplace`: the vector is snapped to a public
  power-of-two grid and *exact* discrete Gaussian noise (Canonne, Kamath, Steinke 2020,
  Algorithm 3, rational ``σ²``) is added to the integer grid indices, every random decision coming
  from an injected ``randbelow``. Guarantee: ``ρ``-zCDP, reported as ``(ε, δ)`` through
  ``dp-accounting``'s RDP accountant (:func:`~flwr_ppcdl.privacy.calibration.zcdp_noise_multiplier`).
* ``"numpy"`` -- :class:`NumpyGaussian`, ``numpy.random.Generator.normal`` with the analytic
  Gaussian mechanism's ``σ`` (Balle & Wang 2018): smaller noise, **not hardened** (floating-point
  attack of Mironov 2012, predictable PCG64 stream); opt-in, warns :class:`PrivacyLeakWarning`.

Why the hardened sampler is calibrated through zCDP and not through the analytic ``(ε, δ)`` profile:
CKS 2020 (Theorem 14) show that adding independent discrete Gaussians ``N_Z(0, σ²)`` to an
integer-valued query whose neighbouring outputs are at most ``Δ`` apart in L2 is
``Δ²/(2σ²)``-zCDP -- exactly the continuous Gaussian's ``ρ``. The continuous Gaussian's exact
``(ε, δ)`` profile does *not* carry over to the multivariate discrete Gaussian without an extra
correction term (their Theorem 15), so the analytic ``σ`` would be a hand-written, unchecked
conversion. zCDP costs about 8 % more ``σ`` at ``ε = 1, δ = 1e-5`` (10.69 → 11.59 for Δ₂ = 2.8644).

Calibration (``σ`` from ``(ε, δ)``, the L2 slack) lives in :mod:`.calibration`.

References
----------
* C. Canonne, G. Kamath, T. Steinke, "The discrete Gaussian for differential privacy", NeurIPS 2020
  (arXiv 2004.00010): Algorithm 3, Theorem 14.
* B. Balle, Y.-X. Wang, "Improving the Gaussian mechanism for differential privacy: analytical
  calibration and optimal denoising", ICML 2018 (arXiv 1805.06530), Theorem 8.
"""

from __future__ import annotations

import math
import numbers
import warnings
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.privacy.accounting import Guarantee, check_delta, check_epsilon, zcdp_epsilon
from flwr_ppcdl.privacy.calibration import (
    analytic_noise_multiplier,
    noise_sigma,
    zcdp_noise_multiplier,
)
from flwr_ppcdl.privacy.noise import (
    GRID_BITS,
    PrivacyLeakWarning,
    RandBelow,
    bernoulli_exp_neg,
    discrete_laplace,
    generator_randbelow,
    os_randbelow,
)
from flwr_ppcdl.privacy.validation import check_positive_finite

GAUSSIAN_SAMPLERS: tuple[str, ...] = ("discrete", "numpy")
"""Samplers of ``noise = "gaussian"``: ``"discrete"`` (hardened, default), ``"numpy"`` (not hardened)."""

SIGMA_DENOMINATOR_BITS: int = 20
"""The integer noise ``σ`` (in grid steps) is rounded *up* to a multiple of ``2**-20``."""


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
    s = check_positive_finite("sigma", sigma)
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


class _GaussianSampler:
    """What both Gaussian samplers share: their guarantee and the check of the vector they perturb."""

    size: int
    epsilon_spent: float
    delta_spent: float
    rho: float

    def guarantee(self) -> Guarantee:
        """The release's guarantee for :func:`flwr_ppcdl.privacy.accounting.compose`."""
        return Guarantee(kind="zcdp", epsilon=self.epsilon_spent, delta=self.delta_spent, rho=self.rho)

    def _flat(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        return flat


class DiscreteGridGaussian(_GaussianSampler):
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
        bound = check_positive_finite("l2_bound", l2_bound)
        eps = check_epsilon(epsilon)
        dlt = check_delta(delta)
        self.size = _check_size(size)
        self._randbelow = randbelow
        self.l2_bound = bound
        self.noise_multiplier = zcdp_noise_multiplier(eps, dlt)
        nominal = noise_sigma(self.noise_multiplier, bound, eps)
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

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``(round(v/g) + Z)·g`` for the flat float64 vector ``values`` (length ``size``)."""
        flat = self._flat(values)
        if not np.isfinite(flat).all():
            raise ValueError("values must be finite")
        indices = np.rint(np.ldexp(flat, -self.grid_exponent))  # exact: division by a power of two
        noisy = [int(k) + discrete_gaussian(self.sigma_squared, self._randbelow) for k in indices]
        # Post-processing of the exact integers: k*g is exact below 2**53, a rounding above.
        return np.ldexp(np.asarray([float(k) for k in noisy], dtype=np.float64), self.grid_exponent)


class NumpyGaussian(_GaussianSampler):
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
        bound = check_positive_finite("l2_bound", l2_bound)
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
        self.scale = noise_sigma(self.noise_multiplier, bound, eps)
        self.rho = _float_up(1 / (2 * Fraction(self.noise_multiplier) ** 2))
        self.epsilon_spent = eps
        self.delta_spent = dlt
        self._rng = rng

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``values + N(0, scale²)`` drawn from the injected generator (its guarantee: the
        exact analytic ``(ε, δ)`` and its ``ρ``)."""
        flat = self._flat(values)
        return flat + self._rng.normal(0.0, self.scale, size=flat.size)


def make_gaussian_sampler(
    name: str,
    *,
    l2_bound: float,
    epsilon: float,
    delta: float,
    size: int,
    rng: np.random.Generator | None,
) -> DiscreteGridGaussian | NumpyGaussian:
    """The Gaussian sampler called ``name`` (one of :data:`GAUSSIAN_SAMPLERS`), for ``(ε, δ)``.

    ``rng=None`` draws from the operating system's CSPRNG (``"discrete"``) or fresh OS entropy
    (``"numpy"``); a ``Generator`` makes either reproducible (tests and experiments only).
    """
    if name == "discrete":
        randbelow = os_randbelow if rng is None else generator_randbelow(rng)
        return DiscreteGridGaussian(
            l2_bound=l2_bound, epsilon=epsilon, delta=delta, size=size, randbelow=randbelow
        )
    if name == "numpy":
        return NumpyGaussian(
            l2_bound=l2_bound,
            epsilon=epsilon,
            delta=delta,
            size=size,
            rng=rng if rng is not None else np.random.default_rng(),
        )
    raise ValueError(f"a Gaussian sampler must be one of {GAUSSIAN_SAMPLERS}; got {name!r}")
