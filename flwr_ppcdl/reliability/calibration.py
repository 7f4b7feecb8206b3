"""One calibration at the round's number of participants: thresholds by simulating the estimator.

A statistic of :mod:`.model` is standardised against a known null (a noise law) or one estimated from
the participants; with few participants the estimate is noisy (heavier tails than the normal), and a
round's evidence is a *sum* over statistics and views. :func:`evidence_threshold` therefore draws the
honest model's statistics for K participants (seeded: not privacy noise), standardises them exactly as
the estimator does, sums their log-likelihood ratios (``z^2 / 2``, one-sided ``max(z, 0)^2 / 2``: a
shifted normal against the honest one) and returns the ``1 - alpha`` quantile: an honest participant's
evidence passes it with probability ``alpha`` whatever K (``tests/reliability/test_calibration.py``).
"""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability import constants as const

FloatArray = NDArray[np.float64]
MAD_NORMAL = 0.6744897501960817
"""Phi^-1(3/4): the median absolute deviation of a standard normal."""
MEDIAN_CHI2_1 = 0.4549364231195724
"""The median of a chi-square with one degree of freedom."""
Kind = tuple[str, bool, float, float]
"""``(null, two-sided, parameter, tail)``: null ``"known"`` (standard normal), ``"scaled"`` (location 0, scale
from the median square: a known law widened by heterogeneity), ``"estimated"`` (median and MAD; parameter:
the factor by which a floor on the scale shrank ``z``) or ``"mirror"`` (the reversal; parameter: the honest
median / MAD); tail: the share of Student-t heterogeneity (``HETEROGENEITY_TAIL`` beside a law, else
``STATISTIC_TAIL``, measured by :func:`standardise`); to one decimal, so the simulation scores what the estimator does."""


def normal_quantile(p: float) -> float:
    """``Phi^-1(p)`` for ``0 < p < 1`` (the standard library's ``NormalDist``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r} must be in (0, 1)")
    return NormalDist().inv_cdf(p)


def median_mad(values: FloatArray, members: NDArray[np.bool_] | None = None) -> tuple[FloatArray, FloatArray]:
    """Location and normal-consistent scale (MAD / 0.6745) of ``values`` along the last axis, over
    ``members`` only when given (a boolean mask of the same shape)."""
    v = np.asarray(values, dtype=np.float64)
    if members is not None:
        v = np.where(members, v, np.nan)
    loc = np.nanmedian(v, axis=-1)
    scale = np.nanmedian(np.abs(v - loc[..., None]), axis=-1) / MAD_NORMAL
    return loc, scale


def squared_scale(values: FloatArray) -> FloatArray:
    """A ``"scaled"`` null's squared scale from values of location 0 (last axis): their median square over a normal's."""
    return np.asarray(np.median(np.square(values), axis=-1) / MEDIAN_CHI2_1, dtype=np.float64)


def beyond_mirror(values: FloatArray, members: NDArray[np.bool_] | None = None, floor: float = 1e-12) -> tuple[FloatArray, FloatArray]:
    """The reversal's ``z`` along the last axis (minus the value over the MAD beyond halfway to the median's
    mirror, else 0) and the median / MAD: one formula for the estimator and its simulation."""
    loc, scale = median_mad(values, members)
    loc, scale = loc[..., None], np.maximum(scale, floor)[..., None]
    return np.where(values < -0.5 * loc, -values, 0.0) / scale, loc / scale


def standardise(values: FloatArray, members: NDArray[np.bool_], floor: float = 0.0) -> tuple[FloatArray, float, float]:
    """``z`` against the members' median and MAD (the scale at least ``floor``), the factor by which the floor shrank
    it (1: the floor did not bind) and the null's Student-t share: 0 where at least ``MAX_CALIBRATED_K`` members spread
    no wider than ``LIGHT_SPREAD``, else 1 (fewer cannot tell; a corrupted minority among them only widens it)."""
    loc, scale = median_mad(values, members)
    used = max(float(scale), floor, 1e-300)
    z = (values - loc) / used
    q = np.quantile(z[members], [0.01, 0.25, 0.75, 0.99]) if np.count_nonzero(members) >= const.MAX_CALIBRATED_K else None
    return z, float(scale) / used, 0.0 if q is not None and q[3] - q[0] <= const.LIGHT_SPREAD * (q[2] - q[1]) else 1.0


def degrees(kind: Kind) -> float:
    """Student-t degrees of freedom of a kind's heavy tail: ``HETEROGENEITY_TAIL`` beside a law, ``COLLAPSE_TAIL`` for the
    two-sided ``collapse`` without one (heterogeneity along the consensus, measured), else ``STATISTIC_TAIL``."""
    if kind[0] in ("known", "scaled"):
        return const.HETEROGENEITY_TAIL
    return const.COLLAPSE_TAIL if kind[0] == "estimated" and kind[1] else const.STATISTIC_TAIL


def llr(z: FloatArray, kind: Kind) -> FloatArray:
    """Log-likelihood ratio of a flat alternative against the honest null (up to a constant): ``z^2 / 2`` for a normal
    null (a shifted normal against it); for a null estimated with a Student-t tail the t's own ``(nu + 1) / 2 log(1 + z^2
    / nu)``: an honest value far out is what that tail gives, so one such value does not outweigh the rest."""
    zz = np.asarray(z, dtype=np.float64) if kind[1] else np.maximum(np.asarray(z, dtype=np.float64), 0.0)
    if kind[0] == "estimated" and kind[3] > 0:
        nu = degrees(kind)
        return np.asarray(0.5 * (nu + 1.0) * np.log1p(zz * zz / nu), dtype=np.float64)
    return 0.5 * zz * zz


def _standardised(draws: FloatArray, kind: Kind) -> FloatArray:
    """What the estimator makes of honest draws (shape (S, K)) of one statistic: ``z`` per participant."""
    if kind[0] == "known":
        return draws * kind[2]
    if kind[0] == "mirror":  # the larger of two honest reversals at median / MAD = kind[2] (independent: conservative)
        return np.maximum(*(beyond_mirror(d / median_mad(d)[1][:, None] + kind[2])[0] for d in (draws, draws[::-1])))
    if kind[0] == "scaled":
        return kind[2] * draws / np.sqrt(squared_scale(draws))[:, None]
    loc, scale = median_mad(draws)
    return kind[2] * (draws - loc[:, None]) / np.maximum(scale, 1e-12)[:, None]


def _sizes(k: int, alpha: float) -> tuple[int, int]:
    if k < 3:
        raise ValueError(f"a calibrated threshold needs at least 3 participants; got {k}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r} must be in (0, 0.5)")
    kk = min(k, const.MAX_CALIBRATED_K)
    return kk, max(400, const.SIMULATIONS // kk)


@cache
def evidence_threshold(k: int, alpha: float, kinds: tuple[Kind, ...]) -> float:
    """The ``1 - alpha`` quantile of one honest participant's summed log-likelihood ratio.

    ``kinds`` lists the statistics the estimator sums; each is drawn for K honest participants
    (independently: one upload along different alternatives), normal plus its ``tail`` share of Student-t,
    standardised as the estimator does and converted to its log-likelihood ratio.
    """
    kk, sims = _sizes(k, alpha)
    if not kinds:
        return math.inf
    rng = np.random.default_rng([kk, len(kinds), 20_250_425])
    total = np.zeros((sims, kk))
    for kind in kinds:
        if kind[2] <= 0 and kind[0] != "mirror":
            continue
        nu = degrees(kind)
        t = rng.standard_t(nu, (sims, kk)) * math.sqrt(1 - 2 / nu) if kind[3] > 0 else 0.0
        draws = math.sqrt(1.0 - kind[3]) * rng.standard_normal((sims, kk)) + math.sqrt(kind[3]) * t  # unit variance
        total += llr(_standardised(draws, kind), kind)
    return float(np.quantile(total.reshape(-1), 1.0 - alpha))


@cache
def energy_threshold(k: int, alpha: float, lower_half: bool) -> float:
    """Threshold on the one-sided energy ``z`` of K honest participants.

    ``lower_half``: the location and scale are the mean and standard deviation of the ``ceil(K/2)``
    smallest values (the half of the least-trimmed majority closest to its centre, before anyone has
    been judged: at an even split it holds one camp only; their median and MAD would be twice as noisy,
    a 3 % threshold of 3.9 instead of 3.1 honest standard deviations at K = 10). Otherwise they are the
    mean and standard deviation of K honest reference values (the consistent participants) and ``z`` is
    that of a further honest value (a prediction bound), the honest log-energies drawn heavy-tailed: the
    log of an inverse-gamma scale with ``HETEROGENEITY_TAIL`` degrees of freedom. Levels below the
    simulation's resolution use the normal tail scaled by the simulated inflation at ``alpha = 1 %``."""
    kk, sims = _sizes(k, alpha)
    resolution = 50.0 / (sims * kk)
    if alpha < resolution:
        base = energy_threshold(k, 0.01, lower_half)
        return base * normal_quantile(1.0 - alpha) / normal_quantile(0.99)
    rng = np.random.default_rng([kk, int(lower_half), 20_250_426])
    draws = np.sort(rng.standard_normal((sims, kk)), axis=1)
    if lower_half:
        ref, new = draws[:, : (kk + 1) // 2], draws
    else:  # honest heterogeneity is heavy-tailed: a participant's scale is inverse-gamma (Student-t mixing)
        shape = const.HETEROGENEITY_TAIL / 2.0
        ref = np.sort(-np.log(rng.gamma(shape, 1.0 / shape, size=(sims, kk))), axis=1)
        new = -np.log(rng.gamma(shape, 1.0 / shape, size=(sims, kk)))
    z = (new - ref.mean(axis=1)[:, None]) / np.maximum(ref.std(axis=1, ddof=1), 1e-12)[:, None]
    return float(np.quantile(z.reshape(-1), 1.0 - alpha))


@cache
def chance_spread(k: int, alpha: float) -> float:
    """The ``1 - alpha`` quantile of the squared scale K values of a ``"scaled"`` null's law alone give: beyond it, heterogeneity."""
    kk, sims = _sizes(max(k, 3), alpha)
    draws = np.random.default_rng([kk, 20_250_427]).standard_normal((sims, kk))
    return float(np.quantile(squared_scale(draws), 1.0 - alpha))


def known_to_normal(values: FloatArray, comparisons: int) -> FloatArray:
    """A statistic that is the largest of ``comparisons`` (at most) standard normal ones, as one
    standard normal ``z`` with the same (Bonferroni) tail probability."""
    tail = np.minimum(1.0, comparisons * np.array([0.5 * math.erfc(float(v) / math.sqrt(2)) for v in np.ravel(values)]))  # 1 - Phi
    tail = np.clip(tail, 1e-300, 1.0 - 1e-16)
    return np.array([-normal_quantile(float(t)) if t < 1.0 else -8.0 for t in tail], dtype=np.float64)
