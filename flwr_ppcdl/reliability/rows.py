"""Class-row tests for heads whose noise law is known (pure numpy; no Flower).

The statistics protocol's classification view (:func:`~flwr_ppcdl.reliability.noise_law.class_means`)
gives, per participant, one row per class (the class mean of the features) and the exact variance of
every entry (privacy noise plus sampling). Two honest participants then agree row by row up to that
variance whatever their label skew, which the known law lets the server test directly, without
estimating the honest spread from the participants:

* :func:`pairwise_consistency` -- for every pair, ``mean_p (u_kp - u_lp)^2 / (v_kp + v_lp)`` over the
  head's entries: at most 1 in expectation for two honest participants (the sampling part of ``v`` is
  an upper bound), far above 1 for an honest participant and one whose rows are permuted or collapsed.
* :func:`consistent_majority` -- the largest group of participants consistent with one another, when
  it is a strict majority: the reference the centre is computed from. A coherent corrupted group that
  holds as much *data* as the honest participants (Fashion-MNIST, Dirichlet 0.3, 40 % flipped: 48 %
  of the records) pulls a median or a precision-weighted centre to itself; a majority of
  *participants* that agree with one another does not depend on who holds the data.
* :func:`overdispersion` -- how much the law understates the spread (the lower quartile of the pairs'
  ``d``, at least 1): both tests use the law times this factor, so heterogeneity the law does not state
  (or a wrong law) lowers their power instead of flagging everyone.
* :func:`row_swap` -- the permutation test itself: for participant k and row j, how much closer the
  row is to another class's consensus row than to its own, in units of its standard deviation under
  the known law; the participant's value is the largest over its rows.

Privacy: post-processing of released statistics only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

CONSISTENCY_SDS = 4.0
"""Two participants are inconsistent when their standardised mean squared difference exceeds 1 by
this many of its standard deviations, ``sqrt(2 / m_eff)`` (``m_eff`` the effective number of entries,
from the pair's own fourth moment) -- with K^2 / 2 pairs and a variance that is an upper bound
(honest pairs measure 0.6-1.0 in expectation), a chance inconsistency is rare."""
CONSISTENCY_MARGIN = 0.25
"""... and by at least this much: honest pairs on Fashion-MNIST reached 1.16 (490 entries, Dirichlet
0.3, epsilon = 10), where the law's count noise and the Laplace tails make the chi-square approximation
loose."""


LAW_HOLDS = 2.0
"""``consistent_majority(..., law_must_hold=True)``: the largest median ``d`` of the group's pairs for
which the law is taken to explain the group's spread -- the variance it states is at least half of
what the group shows. Census2000 target moments at epsilon = 1 (37 draws per cell): honest IID
majorities are claimed in 86-95 % of the draws with 30-40 % random targets (1.25: 55-68 %); under
Dirichlet target skew 14-16 %, and none of those silenced an honest participant (the full-collapse rule
sets the test aside where the majority's centre is as small as the law's noise); with no condition,
half were claimed there and honest participants were silenced (0.00x their share); with 3, honest
IID participants at epsilon = 10 (sampling beyond the law) were (docs/reliability.md section 2)."""


def _floored(noise: FloatArray, stack: FloatArray) -> FloatArray:
    """The stated variances, floored at 1e-12 of the entries' mean square: a law that states (nearly)
    no noise for entries that differ is a wrong law, not a licence to overflow."""
    floor = 1e-12 * float(np.mean(stack * stack)) + 1e-300
    return np.maximum(np.nan_to_num(noise, nan=np.inf, posinf=np.inf), floor)


def pairwise_consistency(stack: FloatArray, noise: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Standardised mean squared differences of every pair, and the threshold each pair is held to.

    ``stack`` and ``noise`` are (K, m): the participants' entries and their known variances. Returns
    ``(d, limit)``, both (K, K): ``d[k, l] = mean_p (u_kp - u_lp)^2 / (v_kp + v_lp)`` and
    ``limit[k, l] = 1 + max(CONSISTENCY_SDS * sqrt(2 / m_eff), CONSISTENCY_MARGIN)``.
    """
    k, m = stack.shape
    d = np.zeros((k, k))
    limit = np.full((k, k), np.inf)
    if m == 0:
        return d, limit
    noise = _floored(noise, stack)
    for i in range(k):
        r2 = (stack[i][None, :] - stack) ** 2 / (noise[i][None, :] + noise)
        s2 = r2.sum(axis=1)
        d[i] = s2 / m
        m_eff = 3.0 * s2 * s2 / np.maximum(np.sum(r2 * r2, axis=1), 1e-300)
        limit[i] = 1.0 + np.maximum(CONSISTENCY_SDS * np.sqrt(2.0 / np.clip(m_eff, 1.0, m)), CONSISTENCY_MARGIN)
    return d, limit


def overdispersion(d: FloatArray) -> float:
    """How much the stated law understates the spread between participants: the lower quartile of the
    pairwise ``d`` (:func:`pairwise_consistency`), at least 1.

    1 for a law that holds (honest pairs measure 0.6-1.16 on Fashion-MNIST, so their lower quartile is
    below 1); larger when honest participants differ beyond it (heterogeneity the law does not state,
    or a wrong law) -- the tests then use the law times this factor instead of flagging everyone. The
    lower quartile, not the median: with 40 % of the participants in a coherent corrupted group, 47 % of
    the pairs are still of one kind, so the quartile is a same-kind pair."""
    k = d.shape[0]
    if k < 2:
        return 1.0
    pairs = d[np.triu_indices(k, 1)]
    pairs = pairs[np.isfinite(pairs)]
    return max(1.0, float(np.quantile(pairs, 0.25))) if pairs.size else 1.0


def consistent_majority(
    stack: FloatArray, noise: FloatArray, *, law_must_hold: bool = False
) -> NDArray[np.bool_] | None:
    """The largest group of mutually consistent participants, if it is a strict majority but not all.

    Greedy maximum clique of the consistency graph (:func:`pairwise_consistency`), started from every
    participant (visiting the others by decreasing number of consistent partners); ties keep the
    group with the smaller summed inconsistency. ``None`` when everyone is consistent with everyone
    (nothing to exclude) or no strict majority agrees (no honest majority to build a centre from:
    the caller keeps every participant).

    ``law_must_hold``: also ``None`` unless the group agrees within the stated law itself, the
    median ``d`` of its pairs at most :data:`LAW_HOLDS` (before the overdispersion factor).
    For views whose law states the privacy noise only (the regression target moments), a group that
    agrees only after the factor is not evidence of one population: under Dirichlet target skew the
    random-target participants and the honest ones with middling targets form such a group, and the
    honest ones with extreme targets fall outside it. In this mode every participant consistent with
    at least half of the group is added to it (``None`` if that is everyone).
    """
    k = stack.shape[0]
    if k < 3:
        return None
    raw, limit = pairwise_consistency(stack, noise)
    d = raw / overdispersion(raw)
    ok = (d <= limit) & (d.T <= limit.T)
    np.fill_diagonal(ok, True)
    if bool(ok.all()):
        return None
    degree = ok.sum(axis=1)
    order = np.argsort(-degree, kind="stable")
    best: NDArray[np.bool_] | None = None
    best_key = (0, 0.0)
    for start in range(k):
        group = np.zeros(k, dtype=bool)
        group[start] = True
        for j in order:
            if not group[j] and bool(np.all(ok[j, group])):
                group[j] = True
        size = int(group.sum())
        key = (size, -float(d[np.ix_(group, group)].sum()))
        if key > best_key:
            best, best_key = group, key
    if best is None or 2 * int(best.sum()) <= k:
        return None
    if law_must_hold:
        n = int(best.sum())
        inner = raw[np.ix_(best, best)][np.triu_indices(n, 1)]
        if not float(np.median(inner)) <= LAW_HOLDS:
            return None
        # a participant consistent with at least half of the group rejoins it: the clique drops one
        # for a single chance inconsistency among its pairs, and measuring it against the law then
        # flags it more often than the false-alarm rate (ten honest IID census participants at
        # epsilon = 1: a group claimed in 48 % of 27 draws, one honest participant at 0.47x its share)
        best = best | (ok[:, best].sum(axis=1) * 2 >= n)
        if bool(best.all()):
            return None
    return best


def group_dispersion(stack: FloatArray, noise: FloatArray, group: NDArray[np.bool_]) -> float:
    """How much the law understates the spread within ``group``: the mean ``d`` of its pairs
    (:func:`pairwise_consistency`; 1 in expectation where the law holds), at least 1."""
    members = np.flatnonzero(group)
    if members.size < 2:
        return 1.0
    d, _ = pairwise_consistency(stack[members], noise[members])
    pairs = d[np.triu_indices(members.size, 1)]
    return max(1.0, float(np.mean(pairs))) if np.all(np.isfinite(pairs)) else 1.0


def row_swap(
    stack: FloatArray, noise: FloatArray, rows: int, clean: NDArray[np.bool_], dispersion: float = 1.0
) -> FloatArray:
    """Per participant, the strongest evidence that one of its rows belongs to another class.

    The consensus of participant k is the precision-weighted mean of the ``clean`` participants other
    than k (row by row, entry by entry; its own variance ``w`` enters the test). For row j and every
    other class c, ``D_jc = sum_p (u_kjp - a_cp)^2 / (v_kjp + w_jp)``; under the known law an honest
    row has ``D_jj - D_jc`` of mean ``-lambda`` and standard deviation ``2 sqrt(lambda)``,
    ``lambda = sum_p (a_jp - a_cp)^2 / (v_kjp + w_jp)`` the separation of the two classes, so
    ``z_j = max_c (D_jj - D_jc) / (2 sqrt(lambda_jc))`` is below 0 on average and a permuted row (its
    mean is another class's) is at about ``+sqrt(lambda) / 2`` -- tens of standard deviations for a
    class the participant has data for. ``dispersion`` (:func:`overdispersion`) scales the law. Returns
    ``max_j z_j`` per participant, shape (K,).
    """
    k = stack.shape[0]
    u = stack.reshape(k, rows, -1)
    v = (_floored(noise, stack) * max(float(dispersion), 1.0)).reshape(k, rows, -1)
    precision = 1.0 / v
    use = clean.astype(np.float64)[:, None, None]
    total_p = np.sum(precision * use, axis=0)
    total_pu = np.sum(precision * u * use, axis=0)
    out = np.zeros(k)
    for i in range(k):
        p_i = precision[i] * use[i]
        tp = total_p - p_i
        if not np.all(tp > 0):
            tp = np.maximum(tp, 1e-300)
        centre = (total_pu - p_i * u[i]) / tp  # (rows, m)
        w = 1.0 / tp
        var = v[i] + w  # (rows, m): row j's variance, used against every class's consensus row
        # diff[j, c, p] = u_ijp - centre_cp, over var[j, p]
        dist = np.einsum("jcp->jc", (u[i][:, None, :] - centre[None, :, :]) ** 2 / var[:, None, :])
        sep = np.einsum("jcp->jc", (centre[:, None, :] - centre[None, :, :]) ** 2 / var[:, None, :])
        own = np.diag(dist)[:, None]
        z = (own - dist) / (2.0 * np.sqrt(np.maximum(sep, 1e-300)))
        z[np.arange(rows), np.arange(rows)] = -np.inf
        out[i] = float(np.max(z))
    return out
