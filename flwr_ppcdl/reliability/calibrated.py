"""The calibrated reliability estimator: FedAvg's weights unless the evidence is significant.

The statistical model (long form: ``docs/reliability.md``). Participant k's upload (or the local
solution of its released statistics) is

    u_k = theta + h_k + n_k + c_k

with ``theta`` the consensus, ``h_k`` honest heterogeneity (sampling, non-IID data), ``n_k``
privacy noise -- of known law for a functional-mechanism release (Laplace, scale Δ/ε per released
entry, propagated to the solution to first order) and unknown otherwise (plain clients, or
parameter uploads whose release the server never sees) -- and ``c_k`` corruption, zero for a
reliable participant. The corruptions modelled: a release whose class structure collapsed (random
labels), rows permuted relative to the consensus (flipped labels), shrunk or exploded targets
(random targets).

The decision, per round:

1. Statistics (:mod:`.statistics`), each one number per participant, on residuals to the
   leave-one-out coordinate-wise median (no claimed count enters): ``collapse`` (the residual along
   the consensus model: collapsed class structure, shrunk or exploded targets), ``gap`` (rows of a
   head permuted relative to the consensus), ``swap`` (heads with a known noise law: a row closer to
   another class's consensus row than to its own, in standard deviations of the law, tested against
   its Bonferroni threshold rather than an estimated null) and the generic ``energy`` (residual energy
   over what honest heterogeneity and the participant's own, known noise explain). With a known law
   on a head, the first pass measures everyone from the centre of the largest group of participants
   consistent with one another under that law, when it is a strict majority
   (:func:`~flwr_ppcdl.reliability.rows.consistent_majority`): a coherent corrupted group that holds
   as much data as the honest participants pulls a median to itself, not a majority of participants.
   For regression moments (a known law, no head) such a majority is claimed only when it agrees
   within the law itself (:func:`~.statistics.law_majority`); it is then the centre, and the collapse
   statistic's null is the law's (a known null, like ``swap``).
2. The honest distribution of each statistic is estimated from the participants themselves
   (:func:`~flwr_ppcdl.reliability.null.robust_null`: the tightest half, then the 99 % band;
   floored at the statistic's own sampling error), so it absorbs honest heterogeneity and privacy
   noise whatever their size, and a corrupted minority does not widen it. A second pass recomputes
   the centre without the participants the first pass found far (for known-law views without a head,
   the regression moments: from the floor(K/2) + 1 participants most typical along the consensus, a
   trimmed centre a coherent group cannot pull; without a known law its null is then the clean
   participants' mean and spread with the prediction bound for their number). Each ``z`` becomes
   *evidence* on the normal scale through a threshold calibrated for this K by simulating the
   estimator under the null (:func:`~flwr_ppcdl.reliability.null.null_threshold`), Bonferroni over
   the statistics: an honest participant's evidence passes ``t = Phi^-1(1 - alpha)`` with
   probability at most ``alpha`` (``false_alarm_rate``, default 3 % per honest participant per
   round) when the honest values are Gaussian around a common centre.
3. Evidence of the modelled corruptions (:data:`PATTERNS`) accumulates across rounds as a
   bias-corrected exponentially weighted mean per node
   (:class:`~flwr_ppcdl.reliability.memory.EvidenceMemory`). A participant's uploads all derive
   from one fixed release, so successive rounds are not independent evidence; a convex combination
   of evidence values with standard-normal marginals has variance at most 1 whatever their
   dependence, so the same threshold keeps the false-alarm rate: the same evidence is never
   counted twice, and one unlucky round is averaged away rather than silencing a node.
4. The weight is FedAvg's weight times ``exp(-((M - t)_+)^2 / (2 width^2))`` with ``M`` the
   accumulated evidence: exactly FedAvg's weight below the threshold, shrinking smoothly beyond it
   (1 - 0.61 - 0.14 - 0.01 at 0 - 1 - 2 - 3 widths), times the energy test's bounded-influence
   factor ``min(1, exp(-(E - E_t)/2))``: a participant farther than the calibrated threshold
   distance keeps the share that moves the aggregate by at most that distance. The generic energy
   test cannot tell an honest second data mode from a corruption, so it bounds instead of silencing.
5. Where at least half of the participants are clearly flagged, or -- unless step 1 found a strict
   majority consistent under a known law -- a statistic splits them into two camps of (nearly) equal
   size far beyond what a unimodal honest population shows
   (:func:`~flwr_ppcdl.reliability.null.split_threshold`), the honest majority the null relies on
   is not established: the round is reported *undecidable* (log and ``RoundReport``) and
   FedAvg's weights are kept rather than a guess -- except for participants whose evidence is
   extreme (:data:`EXTREME` widths beyond the threshold), far from both camps; ``method="server_data"``
   decides such cases from data the server owns.

Privacy: post-processing of released uploads only; no participant record is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.null import (
    even_split,
    normal_quantile,
    null_threshold,
    prediction_threshold,
    robust_null,
    split_threshold,
)
from flwr_ppcdl.reliability.sketch import single_thread_blas
from flwr_ppcdl.reliability.statistics import (
    TWO_SIDED,
    compute_statistics,
    head_majority,
    law_majority,
    residuals,
    sample_layers,
)

FloatArray = NDArray[np.float64]

CARRY = 2.5
"""A round's evidence enters the memory of later rounds winsorised at this many shrink widths above
the threshold (the round itself uses its full value): one far round -- an honest client's first
update under heavy label skew, from a random initial model -- cannot hold it down in the rounds
after it, while a participant far in every round stays down (weight factor exp(-2.5^2/2) = 0.044
from the memory alone, and its own round's full evidence on top). Winsorising lowers values, so the
false-alarm argument of the memory (a convex combination of values with standard-normal marginals)
is unchanged."""
NO_MAJORITY = ("no honest majority to calibrate against; FedAvg's weights kept (use method='server_data' with "
               "server-held records to decide)")
"""The end of every undecidable round's reason."""
EXTREME = 4.0
"""In an undecidable round, participants whose accumulated evidence exceeds the threshold by this
many shrink widths (weight factor below 3e-4) are still shrunk: far outliers from both camps."""

PATTERNS: tuple[str, ...] = ("collapse", "gap", "swap")
"""Statistics of the modelled corruptions: their evidence accumulates and shrinks the weight. The
generic ``energy`` test only bounds a participant's influence (a clip), so an honest second data
mode is kept at a bounded share instead of being silenced, and a far upload moves the aggregate by
at most its share of the threshold distance."""

SCALE_FLOOR: dict[str, float] = {"energy": 0.05, "collapse": 0.003, "gap": 0.02}
"""Smallest null scale per statistic. Collapse (unknown law: a fraction of the consensus norm): plain
SGD clients' first updates from a random initial model spread by about 0.1 % of it along it, and a
tighter null took an honest label-skewed client's -0.003 for a collapse (Flower's quickstart App,
Dirichlet 0.3: honest clients at >= 0.8x their share in 77-92 % of client-rounds; with this floor
99-100 %, ``benchmarks/reliability_quickstart.py``). 1 % did as well there but hid random targets in
the census parameter protocol (unreliable mass 0.03x -> 0.16x at epsilon = 10, 40 %). With a known
law collapse is in units of its own standard deviation and floored at 1 there."""
"""Smallest null scale per statistic: honest values closer than this are never told apart
(5 % in energy, 0.02 in cosine), so near-identical honest uploads cannot raise false alarms."""


@dataclass
class RoundEvidence:
    """This round's evidence per participant (positions into the scored uploads).

    Attributes
    ----------
    evidence : ndarray, shape (K,)
        Normal-scale evidence of unreliability (max over the statistics); 0 where no test was
        possible (fewer than 3 uploads, or nothing to score).
    per_statistic : dict[str, ndarray]
        The evidence of each statistic.
    statistics : dict[str, ndarray]
        The raw statistics.
    undecidable : str or None
        Set when a statistic splits the participants into two camps of (nearly) equal size.
    clip : ndarray, shape (K,)
        Bounded-influence factor of the energy test: ``min(1, sqrt(threshold energy / energy))``.
    set_aside : dict[str, str]
        Two-sided statistics not used this round, and why (:func:`_evidence`).
    """

    evidence: FloatArray
    per_statistic: dict[str, FloatArray] = field(default_factory=dict)
    statistics: dict[str, FloatArray] = field(default_factory=dict)
    undecidable: str | None = None
    clip: FloatArray = field(default_factory=lambda: np.ones(0))
    set_aside: dict[str, str] = field(default_factory=dict)


def round_evidence(
    updates: Sequence[Sequence[Any]],
    idx: Sequence[int] | NDArray[np.intp],
    reference: Sequence[Any] | None,
    *,
    false_alarm_rate: float,
    max_coordinates: int | None,
    rng: np.random.Generator,
    noise_variance: Sequence[Sequence[Any]] | None = None,
    max_units: int = 64,
    passes: int = 2,
    bounded_influence: bool = True,
) -> RoundEvidence:
    """Evidence of unreliability of the uploads ``idx`` in one round (see the module docstring).

    ``bounded_influence=False`` leaves out the energy test (no clip, and no share of the false-alarm
    rate spent on it): for scored views whose influence on the aggregate is bounded otherwise (the
    statistics protocol: every release is validated against what ``n`` bounded records and the noise
    law can produce, and a participant's records enter the pooled solve in proportion to ``n``), where
    clipping an honest participant whose data are merely different only removes its records.

    The first pass scores every upload against the leave-one-out median of all; each further pass
    recomputes the centre from the uploads without evidence (at least the ``floor(K/2) + 1`` with
    the least), so a coherent corrupted minority no longer pulls the centre it is measured from.
    """
    k = len(idx)
    if k < 3:
        return RoundEvidence(np.zeros(k), clip=np.ones(k))
    level = normal_quantile(1.0 - false_alarm_rate)
    clean = np.ones(k, dtype=bool)
    result = RoundEvidence(np.zeros(k), clip=np.ones(k))
    known = noise_variance is not None
    known_null: set[str] = set()
    with single_thread_blas():
        layers = sample_layers(updates, idx, reference, max_coordinates, rng, noise_variance, max_units)
        trim_by_collapse = known and not any(lay.head_rows for lay in layers)
        majority = head_majority(layers)
        if majority is not None:
            clean = majority
        law = law_majority(layers) if trim_by_collapse else None  # no head, so no head majority
        law_dispersion = None
        if law is not None:
            clean, law_dispersion = law
        for _ in range(max(1, passes)):
            stats = compute_statistics(residuals(layers, clean), clean, law_dispersion)
            if not stats.values:
                break
            known_null = set(stats.comparisons)
            used = {n: v for n, v in stats.values.items() if bounded_influence or n != "energy"}
            if not used:
                break
            # known noise law: the null over all K in every pass, honest two-sided spread set aside;
            # unknown law (plain clients): the null refitted on the clean participants of the pass
            per, clip, set_aside = _evidence(
                used, level, false_alarm_rate, stats.floors, stats.effects, None if known else clean, stats.comparisons
            )
            pattern = [v for n, v in per.items() if n in PATTERNS]
            evidence = np.max(np.stack(pattern), axis=0) if pattern else np.zeros(k)
            result = RoundEvidence(evidence, per, stats.values, None, clip, set_aside)
            if law is not None:
                break  # the centre is the law-consistent majority's and the null the law: nothing to recompute
            outlying = np.maximum(result.evidence, np.where(clip < 1.0, np.inf, -np.inf))
            keep = outlying <= level
            if trim_by_collapse and "collapse" in stats.values:
                # known law, no head (regression moments): the next centre is the floor(K/2) + 1
                # participants most typical along the consensus -- a coherent group of random targets
                # ranks at the far end even when the centre it pulled sets the test aside
                # (census2000, IID, 40 % random targets, epsilon = 1, one round: R^2 .063 -> .072,
                # oracle .081; nothing changed in the cells without a harmful group)
                collapse = stats.values["collapse"]
                outlying = np.abs(collapse - np.median(collapse))
                keep = np.zeros(k, dtype=bool)
            keep[np.argsort(outlying, kind="stable")[: max(3, k // 2 + 1)]] = True
            if np.array_equal(keep, clean):
                break
            clean = keep
    # a strict majority consistent under the known law establishes the honest majority: camps or a
    # known-null test flagging half are then no reason to call the round undecidable (docs/reliability.md, section 3 item 5)
    established = majority is not None or law is not None
    # statistics with a known null are not camp evidence: honest participants with much data sit far
    # below those with little on the swap statistic, two "camps" that are both honest; nor, with a
    # known law, is the energy (it bounds, it does not decide, and five honest participants with 100x
    # the data of five others split on it: the centre's noise is modelled for a typical participant)
    estimated = {n: v for n, v in result.statistics.items()
                 if n not in known_null and not (known and n == "energy")}
    result.undecidable = None if established else _even_camps(estimated, false_alarm_rate)
    split = [] if established else [
        n for n in known_null if 2 * int(np.count_nonzero(result.per_statistic[n] > level)) >= k]
    if split:
        # a known-null test that flags half or more: no honest majority, it measured everyone from a
        # centre that mixes the camps, so its evidence is no reason to shrink anyone, even far (five
        # flipped against five honest: one camp or the other came out "extreme" depending on the draw)
        result.undecidable = result.undecidable or (
            f"{int(np.count_nonzero(result.per_statistic[split[0]] > level))} of {k} participants are far in the "
            f"{split[0]} statistic: {NO_MAJORITY}")
        pattern = [v for n, v in result.per_statistic.items() if n in PATTERNS and n not in split]
        result.evidence = np.max(np.stack(pattern), axis=0) if pattern else np.zeros(k)
    return result


def _even_camps(values: dict[str, FloatArray], false_alarm_rate: float) -> str | None:
    """Why the participants form two camps of (nearly) equal size in some statistic, or None.

    The gap between the halves is tested against its calibrated null (:func:`split_threshold`,
    Bonferroni over the statistics) and must also exceed the statistic's scale floor, so two
    near-identical honest groups are not a reason.
    """
    if not values:
        return None
    k = next(iter(values.values())).size
    if k < 4:
        return None
    # a round-level alarm, not a per-participant one: held to a tenth of the per-participant rate
    threshold = split_threshold(k, false_alarm_rate / (10 * len(values)))
    for name, raw in values.items():
        v = raw[np.isfinite(raw)]
        if v.size < 4:
            continue
        stat, low = even_split(v)
        s = np.sort(v)
        if stat > threshold and s[low:].mean() - s[:low].mean() > threshold * SCALE_FLOOR[name]:
            return (
                f"the participants split into two camps of {low} and {v.size - low} in the {name} statistic "
                f"(separation {stat:.1f} > {threshold:.1f}): {NO_MAJORITY}"
            )
    return None


def _evidence(
    values: dict[str, FloatArray],
    level: float,
    false_alarm_rate: float,
    floors: dict[str, float] | None = None,
    effects: dict[str, float] | None = None,
    clean: NDArray[np.bool_] | None = None,
    comparisons: dict[str, int] | None = None,
) -> tuple[dict[str, FloatArray], FloatArray, dict[str, str]]:
    """Normal-scale evidence per statistic: the calibrated threshold maps to ``level``.

    ``clean`` given (uploads without a known noise law: plain clients): the null is fitted to the
    participants of ``clean`` only and its threshold calibrated for their number, and no statistic is
    set aside for two-sided spread -- the behaviour measured on Flower's quickstart App, where fitting
    over all K and the spread rule silenced an honest second data mode (0.01x its FedAvg share
    instead of 0.42x) and kept honest Dirichlet clients at >= 0.8x their share in only 91 % of
    client-rounds (``benchmarks/reliability_quickstart.py``). Once a pass has set participants aside,
    the rest are the reference: their plain mean and sd with the prediction bound for their number
    (:func:`~flwr_ppcdl.reliability.null.prediction_threshold`); the tightest half of an already
    cleaned set paid the small-sample penalty twice (two-sided 8.1 scales for seven values, not 3.6;
    census2000 parameter protocol, IID, epsilon = 10, 30 % random targets: mass 0.27 -> 0.01).
    ``clean=None`` (known law):

    The null is fitted to all K values of the pass (:func:`robust_null`: the tightest half, so a
    corrupted minority does not shape it) and its threshold is calibrated for K, in every pass: the
    later passes only recompute the centre the residuals are measured from. (Refitting the null on
    the participants a first pass found clean paid the small-K penalty twice: at K = 10 with 3 found
    far, the two-sided threshold rose from 4.2 to 8.1 null scales and the corrupted participants'
    evidence fell below the threshold again.) Participants whose values are identical cannot shrink
    the scale below the statistic's own sampling error (``floors``) or its fixed floor. Below the
    threshold ``z`` is rescaled (``z * level / threshold``); beyond it the excess is kept
    in units of the honest scale (``level + z - threshold``), so a far outlier gets evidence to
    match rather than the compressed value a pure rescaling would give at small K.

    A statistic is set aside for the round (zero evidence, the reason returned) when the corruption it
    models would not be significant: a collapse statistic whose null is so wide that an upload
    collapsed all the way to zero (``effects``: its value in the statistic's units; stated only where
    the noise law is known, so plain clients' uploads never have it set aside) stays within the
    calibrated threshold. Its consensus is then no reference -- honest heterogeneity along it is as
    large as the consensus itself (census2000 under Dirichlet(0.3) target skew: mean targets of
    -0.27 to 0.40 around a consensus of 0.03) -- and the values it would flag are honest tails, not
    the collapse it tests for.

    A two-sided statistic whose participants lie clearly beyond the threshold (by at least one null
    scale) on *both* sides is set aside for the round (zero evidence, the reason returned): a
    coherent corruption moves its participants one way (random labels and shrunk targets against the
    consensus, exploded targets along it), whereas far values on both sides of a tight core are the
    signature of honest heterogeneity with heavier tails than the Gaussian null (census2000 under
    Dirichlet(0.3) target skew: participants with mostly low and mostly high incomes on either side
    of a core that a coherent corrupted group had tightened). Under the Gaussian null this needs two
    false alarms at once, so the false-alarm rate is not raised.

    A statistic in ``comparisons`` has a known null (the ``swap`` test under a known noise law: the
    largest of that many comparisons, each standard normal or below): no null is estimated from the
    participants, its threshold is the Bonferroni one, ``Phi^-1(1 - alpha / comparisons)``. (An
    estimated null would centre on the honest participants' values, which lie far below 0 for those
    with much data, and flag honest participants with little data that sit near 0.)

    Also returns the energy test's bounded-influence factor: a participant whose log-energy ``E``
    passes the calibrated threshold value ``E_t`` keeps ``exp(-(E - E_t) / 2)`` of its weight, i.e.
    its distance is clipped to the threshold distance.
    """
    k = next(iter(values.values())).size
    alpha = false_alarm_rate / len(values)  # Bonferroni over the statistics
    per: dict[str, FloatArray] = {}
    set_aside: dict[str, str] = {}
    clip = np.ones(k)
    for name, raw in values.items():
        finite = np.isfinite(raw)
        v = np.where(finite, raw, np.max(raw[finite]) if finite.any() else 0.0)
        if comparisons and name in comparisons:
            # a known null: standard normal per comparison (two-sided: each side), Bonferroni
            loc, scale = 0.0, 1.0
            sides = 2 if TWO_SIDED[name] else 1
            threshold = normal_quantile(1.0 - alpha / (sides * max(comparisons[name], 1)))
        else:
            if clean is not None and int(np.count_nonzero(clean)) >= 3 and not bool(np.all(clean)):
                # unknown law, a later pass: the clean participants' mean and sd, prediction bound (docstring)
                ref = v[clean]
                loc, scale = float(np.mean(ref)), float(np.std(ref, ddof=1))
                threshold = prediction_threshold(int(ref.size), alpha, TWO_SIDED[name])
            else:
                loc, scale = robust_null(v if clean is None else v[clean])
                threshold = null_threshold(k if clean is None else int(np.count_nonzero(clean)), alpha, TWO_SIDED[name])
            # the null's scale is never below the statistic's own sampling error (floors) nor its
            # fixed floor: honest values closer than that are not told apart
            scale = max(scale, SCALE_FLOOR[name], (floors or {}).get(name, 0.0))
        z = (v - loc) / scale
        effect = (effects or {}).get(name)
        if effect is not None and effect / scale <= threshold:
            set_aside[name] = (f"even a full {name} would be {effect / scale:.2f} null scales from the honest centre, within "
                               f"the threshold {threshold:.2f}: honest heterogeneity along the consensus is as large as the "
                               "consensus; statistic not used this round")
            per[name] = np.zeros(k)
            continue
        if TWO_SIDED[name]:
            low, high = int(np.count_nonzero(z < -threshold - 1.0)), int(np.count_nonzero(z > threshold + 1.0))
            if low and high and clean is None:
                set_aside[name] = (f"{low} participant(s) far below and {high} far above the {name} null: honest spread "
                                   "wider than the null, not a coherent corruption; statistic not used this round")
                per[name] = np.zeros(k)
                continue
            z = np.abs(z)
        per[name] = np.where(z <= threshold, z * (level / threshold), level + (z - threshold))
        if name == "energy":
            at_threshold = loc + threshold * scale
            clip = np.minimum(1.0, np.exp(-0.5 * np.maximum(v - at_threshold, 0.0)))
    return per, clip, set_aside


def shrink_factor(evidence: FloatArray, false_alarm_rate: float, width: float) -> FloatArray:
    """``exp(-((M - t)_+)^2 / (2 width^2))``, ``t = Phi^-1(1 - false_alarm_rate)``; 1 below ``t``."""
    level = normal_quantile(1.0 - false_alarm_rate)
    excess = np.maximum(np.nan_to_num(np.asarray(evidence, dtype=np.float64), nan=0.0) - level, 0.0) / width
    return np.asarray(np.exp(-0.5 * excess * excess), dtype=np.float64)


def undecidable_reason(flagged: NDArray[np.bool_]) -> str | None:
    """Why the data cannot decide (at least half of the participants flagged), or None.

    ``flagged``: participants the estimator would clearly down-weight (accumulated evidence at
    least one shrink width above the threshold), so one borderline false alarm next to a corrupted
    40 % does not make a decidable round undecidable.
    """
    k = int(flagged.size)
    n = int(np.count_nonzero(flagged))
    if k >= 2 and n >= 1 and 2 * n >= k:
        return (
            f"{n} of {k} participants disagree with the rest: {NO_MAJORITY}"
        )
    return None
