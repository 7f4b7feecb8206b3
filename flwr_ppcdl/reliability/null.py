"""The honest (null) distribution of a per-participant statistic, estimated from the participants.

Each test statistic of :mod:`.calibrated` is one number per participant. Honest participants'
values scatter (sampling, non-IID data, privacy noise); how much is estimated from the values
themselves, robustly, so that a minority of corrupted participants cannot widen the null:

* :func:`robust_null` -- location and scale of the honest majority: the tightest window holding
  ``h = floor(K/2) + 1`` of the sorted values (the one-dimensional minimum covariance determinant),
  consistency-corrected, then one re-weighting step: mean and standard deviation of the values
  within the 99 % band of that fit. (The median and MAD detected less under 30-40 % contamination
  at K = 10, measured; colluders who make their statistics identical can win the tightest window,
  which is why :mod:`.calibrated` refits the null on the participants a first pass found clean and
  floors its scale at each statistic's sampling error.)
* :func:`null_threshold` -- the threshold on ``z = (v - location) / scale`` that an honest
  participant exceeds with probability ``alpha`` when all K values are honest and Gaussian. The
  estimated location and scale are themselves noisy at small K (a studentised statistic has heavier
  tails than the normal), so the threshold is calibrated by simulating exactly this estimator
  under the null for the given K (seeded, cached), not taken from the normal table.

Evidence is then reported on the normal scale: ``evidence = z * Phi^-1(1 - alpha) / threshold``
exceeds ``Phi^-1(1 - alpha)`` exactly when ``z`` exceeds the calibrated threshold, so one decision
level serves every K and every statistic.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_REWEIGHT_Q = 2.5758293035489004  # Phi^-1(0.995): the re-weighting step keeps the 99 % band
_SIMULATIONS = 200_000  # null draws (values) per calibration; about 1e-4 resolution in the tail
_MAX_CALIBRATED_K = 256  # beyond this K the threshold has converged (checked by the tests)


def normal_quantile(p: float) -> float:
    """``Phi^-1(p)`` for ``0 < p < 1`` (Acklam's rational approximation, then one Newton step)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r} must be in (0, 1)")
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716, 2.506628277459239)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783)
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - lo:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    err = 0.5 * math.erfc(-x / math.sqrt(2)) - p  # one Newton step on Phi(x) = p
    return x - err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


def _fit(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`robust_null` over the rows of ``values`` (shape (S, K)); (location, scale)."""
    loc, scale = _tightest_half(values)
    # re-weighting step: every value inside the 99 % band of the first fit counts
    keep = np.abs(values - loc[:, None]) <= _REWEIGHT_Q * scale[:, None]
    n_keep = np.maximum(keep.sum(axis=1), 1)
    loc2 = np.where(keep, values, 0.0).sum(axis=1) / n_keep
    var = np.where(keep, (values - loc2[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n_keep - 1, 1)
    return loc2, np.sqrt(var)



def _tightest_half(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and consistency-corrected standard deviation of the tightest ``floor(K/2) + 1`` sorted values."""
    s = np.sort(values, axis=1)
    k = s.shape[1]
    h = k // 2 + 1
    c1 = np.concatenate([np.zeros((s.shape[0], 1)), np.cumsum(s, axis=1)], axis=1)
    c2 = np.concatenate([np.zeros((s.shape[0], 1)), np.cumsum(s * s, axis=1)], axis=1)
    sums = c1[:, h:] - c1[:, :-h]
    var = np.maximum((c2[:, h:] - c2[:, :-h]) / h - (sums / h) ** 2, 0.0)
    best = np.argmin(var, axis=1)
    rows = np.arange(s.shape[0])
    return sums[rows, best] / h, np.sqrt(var[rows, best]) * _half_consistency(k)


@cache
def _half_consistency(k: int) -> float:
    """Factor making the tightest half's standard deviation unbiased for a normal scale (seeded)."""
    rng = np.random.default_rng(20_200_101 + k)
    s = np.sort(rng.standard_normal((max(200, 40_000 // k), k)), axis=1)
    h = k // 2 + 1
    c1 = np.concatenate([np.zeros((s.shape[0], 1)), np.cumsum(s, axis=1)], axis=1)
    c2 = np.concatenate([np.zeros((s.shape[0], 1)), np.cumsum(s * s, axis=1)], axis=1)
    sums = c1[:, h:] - c1[:, :-h]
    var = np.maximum((c2[:, h:] - c2[:, :-h]) / h - (sums / h) ** 2, 0.0)
    return 1.0 / max(float(np.mean(np.sqrt(var.min(axis=1)))), 1e-12)


def robust_null(values: FloatArray) -> tuple[float, float]:
    """Location and (unfloored) scale of the honest majority of ``values`` (shape (K,), K >= 2).

    The tightest half (consistency-corrected), then the mean and standard deviation of the values
    within ``2.576`` of its scales from its mean.
    """
    v = np.asarray(values, dtype=np.float64).reshape(1, -1)
    if v.shape[1] < 2:
        raise ValueError(f"robust_null needs at least 2 values; got {v.shape[1]}")
    loc, scale = _fit(v)
    return float(loc[0]), float(scale[0])


def _calibration_size(count: int, alpha: float, what: str) -> int:
    """The number of values a threshold is simulated for (at most 256), after checking the inputs."""
    if count < 3:
        raise ValueError(f"{what}; got {count}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r} must be in (0, 0.5)")
    return min(count, _MAX_CALIBRATED_K)


@cache
def null_threshold(k: int, alpha: float, two_sided: bool) -> float:
    """Calibrated threshold on ``|z|`` (two-sided) or ``z`` (one-sided) for K honest values.

    Simulates K standard normal values many times (seeded), applies :func:`robust_null` and takes
    the ``1 - alpha`` quantile of the resulting ``z`` of one participant. K above 256 uses K = 256.
    """
    kk = _calibration_size(k, alpha, "a null needs at least 3 participants")
    rng = np.random.default_rng(1_000_003 * kk + 17)
    sims = max(400, _SIMULATIONS // kk)
    values = rng.standard_normal((sims, kk))
    loc, scale = _fit(values)
    z = (values - loc[:, None]) / np.maximum(scale, 1e-12)[:, None]
    z = np.abs(z) if two_sided else z
    return float(np.quantile(z.reshape(-1), 1.0 - alpha))


@cache
def prediction_threshold(n: int, alpha: float, two_sided: bool) -> float:
    """Threshold on ``z = (v - mean) / sd`` of a new honest value against ``n`` honest reference values.

    ``mean`` and ``sd`` (``ddof=1``) are those of the reference; the new value is independent of
    them, so ``z / sqrt(1 + 1/n)`` is Student-t with ``n - 1`` degrees of freedom: the threshold is
    its ``1 - alpha`` quantile (``1 - alpha/2`` two-sided) times ``sqrt(1 + 1/n)``, by seeded
    simulation as the other thresholds. ``n`` above 256 uses 256.
    """
    nn = _calibration_size(n, alpha, "a reference needs at least 3 values")
    rng = np.random.default_rng(3_000_017 * nn + 11)
    ref = rng.standard_normal((_SIMULATIONS, nn))
    z = (rng.standard_normal(_SIMULATIONS) - ref.mean(axis=1)) / ref.std(axis=1, ddof=1)
    z = np.abs(z) if two_sided else z
    return float(np.quantile(z, 1.0 - alpha))


def even_split(values: FloatArray) -> tuple[float, int]:
    """How far apart the two halves of the sorted ``values`` are: the largest
    ``(mean_high - mean_low) / pooled within-half standard deviation`` over the splits that leave
    at least ``floor(K/2)`` values on each side, and the size of the lower half of that split.

    Two camps of (nearly) equal size -- half the participants colluding, or two honest data modes
    split evenly -- give a large value; a unimodal honest population does not (see
    :func:`split_threshold`).
    """
    s = np.sort(np.asarray(values, dtype=np.float64).reshape(1, -1), axis=1)
    stat, low = _split(s)
    return float(stat[0]), int(low[0])


def _split(s: FloatArray) -> tuple[FloatArray, NDArray[np.intp]]:
    k = s.shape[1]
    best = np.full(s.shape[0], -np.inf)
    low = np.zeros(s.shape[0], dtype=np.intp)
    for j in sorted({k // 2, k - k // 2}):
        lo, hi = s[:, :j], s[:, j:]
        pooled = (lo.var(axis=1, ddof=1) * (j - 1) + hi.var(axis=1, ddof=1) * (k - j - 1)) / max(k - 2, 1)
        stat = (hi.mean(axis=1) - lo.mean(axis=1)) / np.sqrt(np.maximum(pooled, 1e-300))
        better = stat > best
        best = np.where(better, stat, best)
        low = np.where(better, j, low)
    return best, low


@cache
def split_threshold(k: int, alpha: float) -> float:
    """The ``1 - alpha`` quantile of :func:`even_split` for K honest Gaussian values (seeded simulation)."""
    if k < 4:
        raise ValueError(f"an even split needs at least 4 participants; got {k}")
    kk = min(k, _MAX_CALIBRATED_K)
    rng = np.random.default_rng(7_000_003 * kk + 5)
    sims = max(2000, _SIMULATIONS // kk)
    stat, _ = _split(np.sort(rng.standard_normal((sims, kk)), axis=1))
    return float(np.quantile(stat, 1.0 - alpha))
