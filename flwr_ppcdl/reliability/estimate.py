"""The reliability estimate of one round: validate, fit the honest model, weigh (pure numpy).

:func:`estimate_reliability` is the pure core every Flower adapter calls through
:class:`~flwr_ppcdl.reliability.ReliabilityAggregator`; :func:`reliability_weights` returns only
the weights. Methods:

``"calibrated"`` (default; model and decision in ``docs/reliability.md``)
    One block per view of the participants -- their parameters (or deltas), and the known-law
    view of their release where they shared one (:class:`ScoredView`) -- each fitted by
    :func:`~flwr_ppcdl.reliability.model.fit_block`. The evidence of the structured alternatives is
    summed over statistics and blocks into one log-likelihood ratio, compared with the threshold
    simulated for this K and these statistics (:mod:`.calibration`), and accumulated across rounds
    (suspicion only, :class:`~flwr_ppcdl.reliability.memory.EvidenceMemory`). The weight is the
    claimed count times the posterior probability of being honest times the energy's
    bounded-influence factor; a doubted participant (flagged, or beyond the energy threshold) counts
    at most the median claim. When at least half of the voices are incompatible with the fitted
    honest model the round is *undecidable* (the aggregator then takes the coordinate-wise median).
``"server_data"``
    ``r_k = exp(-sharpness * max(L_k / min_j L_j - tolerance, 0))`` from losses the server computed
    on its own records (lower is better).
``"fedavg"`` / ``"uniform"``
    Claimed counts (FedAvg) or equal weights; baselines.

Privacy: post-processing of what participants already released, plus (server data) losses on records
the *server* owns; no participant record is read and no privacy budget is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.calibration import Kind, evidence_threshold, kinds_key, llr
from flwr_ppcdl.reliability.constants import SHARPNESS
from flwr_ppcdl.reliability.counts import plausible_counts
from flwr_ppcdl.reliability.model import BlockFit, fit_block
from flwr_ppcdl.reliability.options import ReliabilityOptions
from flwr_ppcdl.reliability.sketch import sample_layers, single_thread_blas, voices
from flwr_ppcdl.reliability.validation import validate_updates

FloatArray = NDArray[np.float64]


@dataclass
class ScoredView:
    """A second, known-law view of a participant, scored beside its parameters.

    A functional-mechanism participant that shares its (already private) release gives the server
    statistics whose privacy-noise law is public (its class means or target moments,
    :mod:`~flwr_ppcdl.reliability.noise_law`): the calibrated estimator tests them under that law,
    which parameters cannot be. Post-processing of the release: no privacy cost.

    Attributes
    ----------
    layers : list of ndarray
        The scored statistics (same shapes for every participant of a round).
    noise_variance : list of ndarray
        Their known privacy-noise variance, broadcastable to ``layers``.
    bounded_influence : bool or tuple of bool
        Whether the energy of this view (or of each of its layers) bounds the participant's influence.
    """

    layers: list[NDArray[Any]]
    noise_variance: list[NDArray[Any]]
    bounded_influence: bool | tuple[bool, ...] = True


@dataclass
class ReliabilityResult:
    """Outcome of :func:`estimate_reliability` (arrays of shape (K,), one entry per upload).

    Attributes
    ----------
    weights : ndarray
        Final aggregation weights (>= 0, sum to 1; all zero only if nothing was valid).
    reliability : ndarray
        The weight factor beyond the claimed count, in [0, 1] (0 for excluded uploads): calibrated,
        posterior probability of being honest times the bounded-influence factor.
    sample_weights : ndarray
        FedAvg's share: normalised plausible claimed counts (0 for excluded).
    distances : ndarray
        Calibrated: standardised energy (``z`` of the free alternative); server data: loss ratio or
        excess; ``nan`` for excluded uploads and other methods.
    excluded : dict[int, str]
        Index of each excluded upload and the reason.
    evidence : ndarray
        Calibrated: accumulated log-odds that the participant is corrupted (0 at the decision
        threshold, above it the posterior of being honest is below 1/2); ``nan`` otherwise.
    carried_evidence : ndarray
        Calibrated: what the memory keeps for the next round (``evidence``).
    round_evidence : ndarray
        Calibrated: this round's calibrated log-likelihood ratio alone (``evidence`` before memory).
    undecidable : str or None
        Calibrated: why the uploads have no decidable honest majority this round.
    capped : dict[int, str]
        Uploads whose claimed count was capped, and how.
    """

    weights: FloatArray
    reliability: FloatArray
    sample_weights: FloatArray
    distances: FloatArray
    excluded: dict[int, str] = field(default_factory=dict)
    evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    carried_evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    round_evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    undecidable: str | None = None
    capped: dict[int, str] = field(default_factory=dict)


def estimate_reliability(
    updates: Sequence[Sequence[Any]] | None,
    num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None,
    *,
    prior_evidence: Sequence[float] | NDArray[Any] | None = None,
    server_losses: Sequence[float] | NDArray[Any] | None = None,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    reference: Sequence[Any] | None = None,
    noise_variance: Sequence[Sequence[Any]] | None = None,
    views: Sequence[ScoredView | None] | None = None,
    bounded_influence: bool = True,
    **overrides: Any,
) -> ReliabilityResult:
    """Estimate reliability and aggregation weights of K uploads.

    Parameters
    ----------
    updates : list of list of array-like, or None
        One list of arrays per participant (parameters, or with ``reference`` the parameters whose
        deltas are scored); None when only ``views`` are scored (the statistics protocol).
    num_examples : sequence of numbers
        Claimed example counts (untrusted). Non-positive or non-finite counts exclude the upload.
    options : ReliabilityOptions, optional
        The options (defaults when None); keyword ``overrides`` are applied on top, validated.
    prior_evidence : sequence of float, optional
        Calibrated: the accumulated log-odds each upload's node carries from earlier rounds
        (:class:`~flwr_ppcdl.reliability.memory.EvidenceMemory`; NaN for a node never seen).
    server_losses : sequence of float, optional
        Server data: the loss of each upload on server-held records.
    expected_shapes : list of tuple, optional
        Required layer shapes; see :func:`validate_updates`.
    reference : list of array-like, optional
        The global model the uploads started from: its deltas are scored (no ``K x P`` copy is made).
    noise_variance : list of list of array-like, optional
        The known privacy-noise variance of every entry of ``updates`` (broadcastable), or None.
    views : sequence of ScoredView or None, optional
        Per upload, a known-law view of its release scored as a second block (None: it has none).
    bounded_influence : bool, default True
        Whether the energy of ``updates`` bounds a participant's influence.

    Returns
    -------
    ReliabilityResult
    """
    opts = ReliabilityOptions.resolve(options, **overrides)
    n_up = len(num_examples)
    if updates is not None:
        excluded = validate_updates(updates, num_examples, max_abs=opts.max_abs, expected_shapes=expected_shapes)
    else:
        excluded = validate_updates([[] for _ in range(n_up)], num_examples, max_abs=opts.max_abs)
    claimed = np.array([0.0 if k in excluded else float(num_examples[k]) for k in range(n_up)])
    losses = _per_upload("server_losses", server_losses, n_up, np.nan)
    if opts.method == "server_data":
        if server_losses is None:
            raise ValueError("method='server_data' needs server_losses (one loss per upload)")
        excluded.update({k: f"server loss {losses[k]!r} is not finite" for k in range(n_up)
                         if k not in excluded and not np.isfinite(losses[k])})
    valid = np.array([k not in excluded for k in range(n_up)], dtype=bool)
    counts, too_many, capped = plausible_counts(claimed, valid, max_num_examples=opts.max_num_examples,
                                                count_cap=opts.count_cap)
    excluded.update(too_many)
    valid &= counts > 0
    nan = np.full(n_up, np.nan)
    result = ReliabilityResult(np.zeros(n_up), np.zeros(n_up), _normalised(counts, valid), nan.copy(), excluded,
                               evidence=nan.copy(), carried_evidence=nan.copy(), round_evidence=nan.copy(), capped=capped)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return result
    factor = np.ones(idx.size)
    if opts.method == "uniform":
        counts = valid.astype(np.float64)
        result.sample_weights = _normalised(counts, valid)
    elif opts.method == "server_data":
        factor = _server_data(losses[idx], result.distances, idx, *opts.server_data_rule)
    elif opts.method == "calibrated":
        return _calibrated(result, updates, views, idx, counts, opts, prior_evidence, reference, noise_variance,
                           bounded_influence)
    result.reliability[idx] = factor
    w = np.zeros(n_up)
    w[idx] = counts[idx] * factor
    if w.sum() <= 0:
        w[idx] = counts[idx]
    result.weights = _cap_shares(w, opts.max_share)
    return result


def _calibrated(
    result: ReliabilityResult, updates: Sequence[Sequence[Any]] | None, views: Sequence[ScoredView | None] | None,
    idx: NDArray[np.intp], counts: FloatArray, opts: ReliabilityOptions, prior_evidence: Any,
    reference: Sequence[Any] | None, noise_variance: Sequence[Sequence[Any]] | None, bounded_influence: bool,
) -> ReliabilityResult:
    """The calibrated weights (module docstring)."""
    n_up, k = len(counts), idx.size
    rng = np.random.default_rng(opts.seed)
    deltas = reference is not None and opts.use_deltas
    blocks: list[tuple[list[Any], NDArray[np.intp], bool]] = []  # layers, positions (into idx), deltas
    with single_thread_blas():
        if updates is not None and k >= 3:
            layers = sample_layers(updates, idx, reference if deltas else None, opts.max_coordinates, rng, noise_variance,
                                   bounded_influence)
            blocks.append((layers, np.arange(k), deltas))
        have = [j for j, i in enumerate(idx) if views is not None and views[i] is not None]
        if len(have) >= 3 and views is not None:
            # a view's arrays are different statistics (class means or target moments, the Gram part):
            # each is its own block, with its own honest model, majority and tests
            chosen = [v for v in (views[idx[j]] for j in have) if v is not None]
            flags = chosen[0].bounded_influence
            for j in range(len(chosen[0].layers)):
                layers = sample_layers([[v.layers[j]] for v in chosen], np.arange(len(have)), None, None, rng,
                                       [[v.noise_variance[j]] for v in chosen],
                                       flags if isinstance(flags, bool) else flags[j])
                blocks.append((layers, np.asarray(have, dtype=np.intp), False))
        voice = _voices(blocks, k)
        total, kinds = np.zeros(k), [list[Kind]() for _ in range(k)]
        clip, incompatible, energy = np.ones(k), np.zeros(k, dtype=bool), np.full(k, np.nan)
        for layers, pos, is_delta in blocks:
            local = _local_voices(voice, pos)
            fit: BlockFit = fit_block(layers, local, opts.false_alarm_rate, deltas=is_delta)
            for name, z in fit.z.items():
                total[pos] += llr(z, fit.kinds[name][1])
                for j in pos:
                    kinds[j].append(fit.kinds[name])
            clip[pos] *= fit.clip
            incompatible[pos] |= fit.incompatible
            energy[pos] = np.fmax(energy[pos], fit.energy)
    threshold = np.array([evidence_threshold(k, opts.false_alarm_rate, kinds_key(kk)) if kk else np.inf for kk in kinds])
    this_round = np.where(np.isfinite(threshold), total - threshold, -np.inf)
    carried = np.nan_to_num(_per_upload("prior_evidence", prior_evidence, n_up, np.nan)[idx], nan=0.0)
    gamma = opts.memory_rate or 0.0
    log_odds = this_round + gamma * np.maximum(carried, 0.0)
    honest = 1.0 / (1.0 + np.exp(np.clip(SHARPNESS * log_odds, -700.0, 700.0)))
    doubted = (clip < 1.0) | (honest < 0.5)
    median_claim = float(np.median(counts[idx]))
    n_eff = np.where(doubted, np.minimum(counts[idx], median_claim), counts[idx])
    factor = honest * clip
    w = np.zeros(n_up)
    w[idx] = n_eff * factor
    if w.sum() <= 0:
        w[idx] = counts[idx]
    result.weights = _cap_shares(w, opts.max_share)
    result.reliability[idx] = factor
    result.distances[idx] = energy
    finite = np.where(np.isfinite(log_odds), log_odds, -50.0)
    result.evidence[idx], result.carried_evidence[idx] = finite, finite
    result.round_evidence[idx] = np.where(np.isfinite(this_round), this_round, -50.0)
    n_voices = int(np.count_nonzero(voice == np.arange(k)))
    bad = int(np.count_nonzero(incompatible & (voice == np.arange(k))))
    if n_voices >= 3 and 2 * bad >= n_voices:
        result.undecidable = (f"{bad} of {n_voices} independent uploads are incompatible with the honest model "
                              "fitted to their majority: no decidable honest majority")
    return result


def _voices(blocks: list[tuple[list[Any], NDArray[np.intp], bool]], k: int) -> NDArray[np.intp]:
    """Voices over the participants every block scores (identical uploads speak once)."""
    full = [layers for layers, pos, _ in blocks if pos.size == k]
    return voices(full, k) if full else np.arange(k)


def _local_voices(voice: NDArray[np.intp], pos: NDArray[np.intp]) -> NDArray[np.intp]:
    """``voice`` restricted to the block's participants ``pos``, as positions into ``pos``."""
    where = {int(p): j for j, p in enumerate(pos)}
    return np.array([where.get(int(voice[p]), j) for j, p in enumerate(pos)], dtype=np.intp)


def _per_upload(name: str, values: Sequence[Any] | NDArray[Any] | None, n_up: int, default: float) -> FloatArray:
    """One float per upload (``default`` when ``values`` is None); shape checked, naming ``name``."""
    if values is None:
        return np.full(n_up, default, dtype=np.float64)
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.shape != (n_up,):
        raise ValueError(f"{name} has shape {out.shape}, expected ({n_up},)")
    return out


def _server_data(losses: FloatArray, distances: FloatArray, idx: NDArray[np.intp], sharpness: float,
                 tolerance: float) -> FloatArray:
    """Reliability from server-side losses: ratio to the best loss (positive losses), else the excess
    over the best loss relative to the median excess."""
    best = float(np.min(losses))
    if best > 0:
        ratio = losses / best
    else:
        excess = losses - best
        scale = float(np.median(excess))
        ratio = excess / scale if scale > 0 else np.zeros_like(excess)
    distances[idx] = ratio
    return np.asarray(np.exp(-sharpness * np.maximum(ratio - tolerance, 0.0)), dtype=np.float64)


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
    if max_share is None or int(np.count_nonzero(w > 0)) * max_share < 1.0:
        return w
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
    updates: Sequence[Sequence[Any]], num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None, **overrides: Any,
) -> FloatArray:
    """Aggregation weights of K uploads: non-negative, summing to 1 (all zero when none is valid).

    Thin wrapper around :func:`estimate_reliability` (same keyword options).
    """
    return estimate_reliability(updates, num_examples, options, **overrides).weights


__all__ = ["Kind", "ReliabilityResult", "ScoredView", "estimate_reliability", "reliability_weights"]
