"""The reliability estimate of one round: validate, weigh by counts and reliability.

:func:`estimate_reliability` is the pure core both Flower strategies and the statistics protocol call
(through :class:`~flwr_ppcdl.reliability.ReliabilityAggregator` or directly);
:func:`reliability_weights` returns only the weights. Estimators:

``"calibrated"`` (default)
    FedAvg's weights unless the evidence that a participant is unreliable is significant at a
    controlled false-alarm rate; weights shrink smoothly with the evidence
    (:mod:`.calibrated`, statistical model in its docstring and ``docs/reliability.md``).
``"truth_discovery"`` (legacy)
    The earlier CRH-style rule relative to the median distance (:mod:`.truth_discovery`), kept
    for comparison.
``"server_data"``
    Scores every upload by a loss the server computed on its own data (lower is better):
    ``r_k = exp(-sharpness * max(L_k / min_j L_j - tolerance, 0))`` (positive losses; for
    non-positive ones the excess over the best loss goes through the median rule).
``"fedavg"`` / ``"uniform"``
    Sample-count weights (FedAvg) or equal weights; baselines and tests.

Claimed counts are untrusted (:mod:`.counts`): an absolute public maximum, a wide relative cap, and
for the calibrated estimator the counts of suspect participants are pulled towards the median.

Privacy: post-processing of what participants already released (their differentially private
parameters) plus, optionally, losses the *server* computes on data it owns; no participant data is
read, so reliability estimation costs no privacy budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.calibrated import (
    CARRY,
    EXTREME,
    round_evidence,
    shrink_factor,
    undecidable_reason,
)
from flwr_ppcdl.reliability.counts import plausible_counts, suspect_counts
from flwr_ppcdl.reliability.memory import accumulate_evidence
from flwr_ppcdl.reliability.null import normal_quantile
from flwr_ppcdl.reliability.options import ReliabilityOptions
from flwr_ppcdl.reliability.truth_discovery import robust_weights, truth_discovery
from flwr_ppcdl.reliability.validation import validate_updates

FloatArray = NDArray[np.float64]


@dataclass
class ReliabilityResult:
    """Outcome of :func:`estimate_reliability`.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Final aggregation weights (>= 0, sum to 1; all zero only if nothing was valid).
    reliability : ndarray, shape (K,)
        Reliability factor in [0, 1] before sample counts and caps (0 for excluded); calibrated:
        the shrink factor of the accumulated evidence (1 = FedAvg's weight).
    sample_weights : ndarray, shape (K,)
        FedAvg's share: normalised plausible claimed counts (0 for excluded).
    distances : ndarray, shape (K,)
        Calibrated: residual energy over its honest expectation; legacy truth discovery:
        per-layer-normalised distance to the final estimate; server data: excess server loss;
        ``nan`` for excluded uploads.
    excluded : dict[int, str]
        Index of each excluded upload and the reason.
    iterations : int
        Truth-discovery iterations run (0 for other methods).
    evidence : ndarray, shape (K,)
        Calibrated: accumulated evidence of unreliability on the normal scale (threshold
        ``Phi^-1(1 - false_alarm_rate)``); ``nan`` for excluded uploads and other methods.
    carried_evidence : ndarray, shape (K,)
        Calibrated: what the next round's ``prior_evidence`` should be -- the accumulation with
        this round's evidence winsorised at :data:`~flwr_ppcdl.reliability.calibrated.CARRY`
        widths above the threshold.
    round_evidence : ndarray, shape (K,)
        Calibrated: this round's evidence alone.
    undecidable : str or None
        Calibrated: why the data could not decide this round (FedAvg's weights were kept).
    capped : dict[int, str]
        Uploads whose claimed count was capped, and how.
    """

    weights: FloatArray
    reliability: FloatArray
    sample_weights: FloatArray
    distances: FloatArray
    excluded: dict[int, str] = field(default_factory=dict)
    iterations: int = 0
    evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    carried_evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    round_evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    undecidable: str | None = None
    capped: dict[int, str] = field(default_factory=dict)


def estimate_reliability(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None,
    *,
    prior: Sequence[float] | NDArray[Any] | None = None,
    prior_evidence: Sequence[float] | NDArray[Any] | None = None,
    prior_rounds: Sequence[float] | NDArray[Any] | None = None,
    server_losses: Sequence[float] | NDArray[Any] | None = None,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    reference: Sequence[Any] | None = None,
    noise_variance: Sequence[Sequence[Any]] | None = None,
    bounded_influence: bool = True,
    external_factor: Sequence[float] | NDArray[Any] | None = None,
    **overrides: Any,
) -> ReliabilityResult:
    """Estimate reliability and aggregation weights of K uploads.

    Parameters
    ----------
    updates : list of list of array-like
        One list of arrays per participant: parameters, or deltas to the current global model.
    num_examples : sequence of numbers
        Claimed example counts (untrusted). Non-positive or non-finite counts exclude the upload.
    options : ReliabilityOptions, optional
        The estimator's options (defaults when None); keyword ``overrides`` are applied on top
        (e.g. ``method="fedavg"``), validated, unknown names rejected.
    prior : sequence of float, optional
        Legacy truth discovery: multiplicative prior per upload (:class:`ReliabilityMemory`); 1 = neutral.
    prior_evidence : sequence of float, optional
        Calibrated: accumulated evidence per upload before this round
        (:class:`~flwr_ppcdl.reliability.memory.EvidenceMemory`); NaN for a node never seen.
    prior_rounds : sequence of float, optional
        Calibrated: how many earlier rounds each upload's node was scored in (the memory's gain
        starts as a plain mean, :func:`~flwr_ppcdl.reliability.memory.accumulate_evidence`).
    server_losses : sequence of float, optional
        Losses of each upload on server-held data (lower is better); required by ``server_data``.
    expected_shapes : list of tuple, optional
        Required layer shapes; see :func:`validate_updates`.
    reference : list of array-like, optional
        Global model the uploads started from: scoring then uses ``update - reference`` on the
        sampled coordinates, without materialising the deltas.
    noise_variance : list of list of array-like, optional
        Calibrated: the known privacy-noise variance of every upload, per coordinate (arrays
        broadcastable to the layer shapes), e.g. propagated from a functional-mechanism release;
        None when the law is unknown (plain clients): the noise is then part of the estimated
        honest spread.
    bounded_influence : bool, default True
        Calibrated: clip every participant's influence at the energy test's threshold distance.
        ``False`` for scored views whose influence is bounded otherwise (the statistics protocol's
        validated releases): the energy test is then not run
        (:func:`~flwr_ppcdl.reliability.calibrated.round_evidence`).
    external_factor : sequence of float in [0, 1], optional
        Calibrated: a weight factor per upload decided on another view of the same participants
        (the known-law test of its release, :class:`~flwr_ppcdl.reliability.ScoredView`); it
        multiplies this estimate's own shrink factor before suspect counts are pulled to the median,
        so a participant down-weighted by either view loses its claimed count's pull too. 1 = neutral.

    Returns
    -------
    ReliabilityResult
    """
    opts = ReliabilityOptions.resolve(options, **overrides)
    method = opts.method
    n_up = len(updates)
    excluded = validate_updates(updates, num_examples, max_abs=opts.max_abs, expected_shapes=expected_shapes)
    claimed = np.zeros(n_up, dtype=np.float64)
    for k in range(n_up):
        if k not in excluded:
            claimed[k] = float(num_examples[k])
    pri = _per_upload("prior", prior, n_up, 1.0)
    pri = np.where(~np.isfinite(pri) | (pri < 0), 0.0, pri)
    losses: FloatArray | None = None
    if method == "server_data":
        if server_losses is None:
            raise ValueError("method='server_data' needs server_losses (one loss per upload)")
        losses = _per_upload("server_losses", server_losses, n_up, np.nan)
        for k in range(n_up):
            if k not in excluded and not np.isfinite(losses[k]):
                excluded[k] = f"server loss {losses[k]!r} is not finite"
    valid = np.array([k not in excluded for k in range(n_up)], dtype=bool)
    counts, too_many, capped = plausible_counts(
        claimed, valid, max_num_examples=opts.max_num_examples, count_cap=opts.count_cap
    )
    excluded.update(too_many)
    valid &= counts > 0
    distances = np.full(n_up, np.nan)
    reliability = np.zeros(n_up)
    evidence = np.full(n_up, np.nan)
    this_round = np.full(n_up, np.nan)
    sample = _normalised(_transform(counts, opts.sample_weighting), valid)
    result = ReliabilityResult(
        np.zeros(n_up), reliability, sample, distances, excluded, 0, evidence=evidence,
        carried_evidence=np.full(n_up, np.nan), round_evidence=this_round, undecidable=None, capped=capped,
    )
    if not np.any(valid):
        return result
    idx = np.flatnonzero(valid)
    if method == "calibrated":
        rounds = None if prior_rounds is None else _per_upload("prior_rounds", prior_rounds, n_up, 0.0)
        external = _per_upload("external_factor", external_factor, n_up, 1.0)
        external = np.clip(np.where(np.isfinite(external), external, 1.0), 0.0, 1.0)
        return _calibrated(result, updates, idx, counts, opts, prior_evidence, rounds, reference, noise_variance,
                           bounded_influence, external)
    s_v = sample[idx]
    p_v = pri[idx]
    if method in ("fedavg", "uniform"):
        r_v = np.ones(len(idx))
        if method == "uniform":
            s_v = np.full(len(idx), 1.0 / len(idx))
            sample[idx] = s_v
    elif method == "server_data":
        assert losses is not None
        r_v = _server_data(losses[idx], distances, idx, opts.sharpness, opts.effective_tolerance)
    else:
        r_v, d_v, result.iterations = truth_discovery(
            updates, idx, s_v * p_v, opts, reference, np.random.default_rng(opts.seed)
        )
        distances[idx] = d_v
    reliability[idx] = r_v
    w = np.zeros(n_up)
    w[idx] = s_v * p_v * r_v
    if w.sum() <= 0:  # prior/reliability wiped everyone out: fall back to sample weights
        w[idx] = s_v
    result.weights = _cap_shares(w, opts.max_share)
    return result


def _calibrated(
    result: ReliabilityResult,
    updates: Sequence[Sequence[Any]],
    idx: NDArray[np.intp],
    counts: FloatArray,
    opts: ReliabilityOptions,
    prior_evidence: Sequence[float] | NDArray[Any] | None,
    prior_rounds: FloatArray | None,
    reference: Sequence[Any] | None,
    noise_variance: Sequence[Sequence[Any]] | None,
    bounded_influence: bool = True,
    external: FloatArray | None = None,
) -> ReliabilityResult:
    """Weights of the calibrated estimator (see :mod:`.calibrated`)."""
    n_up = len(updates)
    ev = round_evidence(
        updates, idx, reference, false_alarm_rate=opts.false_alarm_rate, max_coordinates=opts.max_coordinates,
        rng=np.random.default_rng(opts.seed), noise_variance=noise_variance, max_units=opts.alignment_units,
        bounded_influence=bounded_influence,
    )
    result.round_evidence[idx] = ev.evidence
    if "energy" in ev.statistics:
        result.distances[idx] = np.exp(ev.statistics["energy"])
    prior = _per_upload("prior_evidence", prior_evidence, n_up, np.nan)[idx]
    rounds = None if prior_rounds is None else prior_rounds[idx]
    level = normal_quantile(1.0 - opts.false_alarm_rate)  # the decision threshold
    accumulated = accumulate_evidence(prior, ev.evidence, opts.memory_rate, rounds)
    result.evidence[idx] = accumulated
    # what the next rounds remember: this round's evidence winsorised at CARRY widths above the
    # threshold, so one far round cannot hold a participant down in the rounds after it
    result.carried_evidence[idx] = accumulate_evidence(
        prior, np.minimum(ev.evidence, level + CARRY * opts.shrink_width), opts.memory_rate, rounds
    )
    factor = shrink_factor(accumulated, opts.false_alarm_rate, opts.shrink_width)
    flagged = accumulated > level + opts.shrink_width
    result.undecidable = ev.undecidable or undecidable_reason(flagged)
    if result.undecidable is not None:  # keep FedAvg's weights, except for extreme outliers
        extreme = accumulated > level + EXTREME * opts.shrink_width
        factor = np.where(extreme, factor, 1.0)
    factor = factor * ev.clip  # bounded influence from the energy test, every round
    if external is not None:  # another view's decision on the same participants (a release's known law)
        factor = factor * external[idx]
    valid = np.zeros(n_up, dtype=bool)
    valid[idx] = True
    full = np.ones(n_up)
    full[idx] = factor
    pulled = suspect_counts(counts, full, valid)
    w = np.zeros(n_up)
    w[idx] = _transform(pulled, opts.sample_weighting)[idx] * factor
    if w.sum() <= 0:
        w[idx] = result.sample_weights[idx]
    result.reliability[idx] = factor
    result.weights = _cap_shares(w, opts.max_share)
    return result


def _per_upload(name: str, values: Sequence[Any] | NDArray[Any] | None, n_up: int, default: float) -> FloatArray:
    """One float per upload (``default`` when ``values`` is None); shape checked, naming ``name``."""
    if values is None:
        return np.full(n_up, default, dtype=np.float64)
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.shape != (n_up,):
        raise ValueError(f"{name} has shape {out.shape}, expected ({n_up},)")
    return out


def _server_data(
    losses: FloatArray, distances: FloatArray, idx: NDArray[np.intp], sharpness: float, tolerance: float
) -> FloatArray:
    """Reliability from server-side losses: ratio to the best loss (positive), else excess over it."""
    best = float(np.min(losses))
    if best > 0:  # losses on a ratio scale: compare each to the best upload's loss
        ratio = losses / best
        distances[idx] = ratio
        return np.asarray(np.exp(-sharpness * np.maximum(ratio - tolerance, 0.0)), dtype=np.float64)
    excess = losses - best
    distances[idx] = excess
    return robust_weights(excess, sharpness, tolerance)


def _transform(counts: FloatArray, weighting: str) -> FloatArray:
    """Counts as they enter the weights: linear (FedAvg), square root, or uniform (0 stays 0)."""
    if weighting == "sqrt":
        return np.sqrt(counts)
    if weighting == "uniform":
        return (counts > 0).astype(np.float64)
    return counts.astype(np.float64)


def _normalised(values: FloatArray, valid: NDArray[np.bool_]) -> FloatArray:
    out = np.where(valid, values, 0.0)
    total = out.sum()
    return out / total if total > 0 else out


def _cap_shares(w: FloatArray, max_share: float | None) -> FloatArray:
    """Water-filling: no entry above ``max_share`` of the total (when feasible), sum 1."""
    total = w.sum()
    if total <= 0:
        return w
    w = w / total
    positive = int(np.count_nonzero(w > 0))
    if max_share is None or positive * max_share < 1.0:
        return w  # infeasible (e.g. one participant): leave as is
    for _ in range(len(w)):
        over = w > max_share + 1e-15
        if not np.any(over):
            break
        excess = float(np.sum(w[over] - max_share))
        w[over] = max_share
        free = (~over) & (w > 0) & (w < max_share)
        if not np.any(free):
            break
        w[free] += excess * w[free] / w[free].sum()
    return w / w.sum()


def reliability_weights(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None,
    **overrides: Any,
) -> FloatArray:
    """Aggregation weights of K uploads: non-negative, summing to 1.

    Thin wrapper around :func:`estimate_reliability` (same keyword options) that returns
    only the weights. Invalid uploads (NaN/Inf, wrong shapes, absurd values, non-positive
    counts) get weight 0. If no upload is valid the result is all zeros (nothing to sum to 1);
    callers must then keep the previous model.
    """
    return estimate_reliability(updates, num_examples, options, **overrides).weights
