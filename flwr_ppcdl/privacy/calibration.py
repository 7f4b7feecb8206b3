"""Gaussian noise calibration: σ for (ε, δ) through zCDP or the analytic profile, and the L2 slack.

The noise standard deviation of the Gaussian functional mechanism is ``σ = z · Δ₂`` with the
noise multiplier ``z`` found here from ``(ε, δ)``:

* :func:`zcdp_noise_multiplier` / :func:`sigma_zcdp` -- the smallest ``z`` whose
  ``ρ = 1/(2z²)``-zCDP converts to ``(ε, δ)``-DP through ``dp-accounting``'s RDP accountant. Valid
  for the continuous Gaussian and for the multivariate *discrete* Gaussian on integer queries
  (Canonne, Kamath, Steinke 2020, Theorem 14): the hardened sampler's calibration.
* :func:`analytic_noise_multiplier` / :func:`sigma_analytic` -- the exact privacy profile of the
  *continuous* Gaussian mechanism (Balle & Wang 2018, Theorem 8): about 8 % less ``σ`` at
  ``ε = 1, δ = 1e-5``, but it does not carry over to the discrete Gaussian without a correction
  term (CKS 2020, Theorem 15), so only the not-hardened numpy sampler uses it.
* :func:`summation_slack_l2`, :func:`gaussian_l2_bound` -- the float64 summation slack in L2, added
  to the exact sensitivity before calibration.

The samplers live in :mod:`.gaussian`.

References
----------
* C. Canonne, G. Kamath, T. Steinke, "The discrete Gaussian for differential privacy", NeurIPS 2020
  (arXiv 2004.00010): Theorem 14, Proposition 12 (used by the accountant).
* B. Balle, Y.-X. Wang, "Improving the Gaussian mechanism for differential privacy: analytical
  calibration and optimal denoising", ICML 2018 (arXiv 1805.06530), Theorem 8.
* M. Bun, T. Steinke, "Concentrated differential privacy", TCC 2016 (arXiv 1605.02065).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import lru_cache

from flwr_ppcdl.privacy.accounting import check_delta, check_epsilon, zcdp_epsilon
from flwr_ppcdl.privacy.validation import check_positive_finite

UNIT_ROUNDOFF: float = 2.0**-53

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


def noise_sigma(multiplier: float, l2_sensitivity: float, epsilon: float) -> float:
    """``σ = multiplier · Δ₂``; ``ValueError`` naming ``ε`` when it is not a finite float."""
    sigma = multiplier * l2_sensitivity
    if not math.isfinite(sigma):
        raise ValueError(
            f"epsilon={epsilon!r} is too small to sample (or the L2 bound too large): sigma = "
            f"{multiplier!r} * {l2_sensitivity!r} is not a finite float"
        )
    return sigma


def sigma_zcdp(epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """``σ = zcdp_noise_multiplier(ε, δ) · Δ₂``: Gaussian noise that is ``(ε, δ)``-DP via zCDP."""
    delta2 = check_positive_finite("l2_sensitivity", l2_sensitivity)
    return noise_sigma(zcdp_noise_multiplier(epsilon, delta), delta2, epsilon)


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
    s = check_positive_finite("sigma", sigma)
    eps = check_epsilon(epsilon)
    delta2 = check_positive_finite("l2_sensitivity", l2_sensitivity)
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
    delta2 = check_positive_finite("l2_sensitivity", l2_sensitivity)
    return noise_sigma(analytic_noise_multiplier(epsilon, delta), delta2, epsilon)


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
    base = check_positive_finite("delta2", delta2)
    return base + summation_slack_l2(num_examples, num_coordinates)
