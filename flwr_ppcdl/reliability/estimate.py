"""One round's weights (pure numpy): validate, fit the honest model to every view, weigh.

``"calibrated"`` (default, ``docs/reliability.md``): one block per view (the parameters or deltas, and
each array of a release's known-law :class:`ScoredView`) fitted by :func:`~.model.fit_block`; the
structured alternatives' log-likelihood ratios (one-sided ones summed across rounds) are summed over
statistics and blocks, compared with the threshold simulated for this K (:mod:`.calibration`) and carried
as suspicion (:mod:`.memory`). Weight = claimed count x P(honest) x the energy's bounded-influence factor,
a doubted count pulled to the median claim; at least half of the voices incompatible and a rival camp
(``constants.RIVAL``): *undecidable* (the aggregator takes the coordinate-wise median). ``"server_data"``: the
same weights here; the aggregator puts each flag to the server's records. ``"fedavg"`` / ``"uniform"``: baselines.

Privacy: post-processing of released uploads (and of records the server owns); no budget is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.calibration import Kind, evidence_threshold, llr, standardise
from flwr_ppcdl.reliability.constants import RIVAL, SHARPNESS
from flwr_ppcdl.reliability.counts import plausible_counts
from flwr_ppcdl.reliability.model import BlockFit, fit_block
from flwr_ppcdl.reliability.options import ReliabilityOptions
from flwr_ppcdl.reliability.sketch import sample_layers, single_thread_blas, voices
from flwr_ppcdl.reliability.validation import validate_updates

FloatArray = NDArray[np.float64]


@dataclass
class ScoredView:
    """A known-law view of a participant's shared release (class means, target moments, Gram moments:
    :mod:`~flwr_ppcdl.reliability.noise_law`), scored beside its parameters; post-processing, no privacy
    cost. ``layers``: the statistics (same shapes for every participant); ``noise_variance``: their known
    noise variance (broadcastable); ``bounded_influence``: whether each layer's energy bounds influence;
    ``evidence``: whether its structured statistics are evidence (else only its energy is scored)."""

    layers: list[NDArray[Any]]
    noise_variance: list[NDArray[Any]]
    bounded_influence: bool | tuple[bool, ...] = True
    evidence: bool | tuple[bool, ...] = True


@dataclass
class ReliabilityResult:
    """Outcome of :func:`estimate_reliability`, one entry per upload: ``weights`` (>= 0, sum 1; all 0 only
    if nothing was valid), ``reliability`` (the factor beyond the claimed count: posterior probability of
    being honest x bounded-influence factor; 0 if excluded), ``sample_weights`` (FedAvg's share),
    ``distances`` (the standardised energy; server data: the loss ratio), ``excluded`` / ``capped`` (index
    -> reason), ``evidence`` (accumulated log-odds of being corrupted: > 0 is flagged; NaN for other
    methods; the memory keeps it), ``round_evidence`` (this round's calibrated log-likelihood ratio alone),
    ``statistics`` (running sums the memory keeps) and ``undecidable`` (why no honest majority was decidable)."""

    weights: FloatArray
    reliability: FloatArray
    sample_weights: FloatArray
    distances: FloatArray
    excluded: dict[int, str] = field(default_factory=dict)
    evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    round_evidence: FloatArray = field(default_factory=lambda: np.zeros(0))
    undecidable: str | None = None
    capped: dict[int, str] = field(default_factory=dict)
    statistics: list[dict[str, tuple[float, float]]] = field(default_factory=list)


def estimate_reliability(
    updates: Sequence[Sequence[Any]] | None,
    num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None,
    *,
    prior_evidence: Sequence[float] | NDArray[Any] | None = None,
    prior_statistics: Sequence[Mapping[str, tuple[float, float]] | None] | None = None,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    reference: Sequence[Any] | None = None,
    noise_variance: Sequence[Sequence[Any]] | None = None,
    views: Sequence[ScoredView | None] | None = None,
    bounded_influence: bool = True,
    **overrides: Any,
) -> ReliabilityResult:
    """Estimate reliability and aggregation weights of K uploads.

    ``updates``: one list of arrays per participant (None when only ``views`` are scored);
    ``num_examples``: claimed counts (untrusted; non-positive or non-finite excludes the upload);
    ``options`` and keyword ``overrides``: :class:`ReliabilityOptions`; ``prior_evidence``: the log-odds
    each node carries and ``prior_statistics`` its running sums (:class:`~.memory.EvidenceMemory`; NaN / None
    for a new node);
    ``expected_shapes``: see :func:`validate_updates`; ``reference``:
    the global model, whose deltas are then scored (no ``K x P`` copy); ``noise_variance``: the known
    noise variance of ``updates`` (broadcastable) or None; ``views``: per upload a :class:`ScoredView` or
    None; ``bounded_influence``: whether the energy of ``updates`` bounds influence.
    """
    opts = ReliabilityOptions.resolve(options, **overrides)
    n_up = len(num_examples)
    if updates is not None:
        excluded = validate_updates(updates, num_examples, max_abs=opts.max_abs, expected_shapes=expected_shapes)
    else:
        excluded = validate_updates([[] for _ in range(n_up)], num_examples, max_abs=opts.max_abs)
    claimed = np.array([0.0 if k in excluded else float(num_examples[k]) for k in range(n_up)])
    valid = np.array([k not in excluded for k in range(n_up)], dtype=bool)
    counts, too_many, capped = plausible_counts(claimed, valid, max_num_examples=opts.max_num_examples,
                                                count_cap=opts.count_cap)
    excluded.update(too_many)
    valid &= counts > 0
    nan = np.full(n_up, np.nan)
    result = ReliabilityResult(np.zeros(n_up), np.zeros(n_up), _normalised(counts, valid), nan.copy(), excluded,
                               evidence=nan.copy(), round_evidence=nan.copy(), capped=capped)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return result
    if opts.method == "uniform":
        counts = valid.astype(np.float64)
        result.sample_weights = _normalised(counts, valid)
    elif opts.method in ("calibrated", "server_data"):
        return _calibrated(result, updates, views, idx, counts, opts, (prior_evidence, prior_statistics), reference,
                           noise_variance, bounded_influence)
    result.reliability[idx] = 1.0
    result.weights = _cap_shares(np.where(valid, counts, 0.0), opts.max_share)
    return result


def _calibrated(
    result: ReliabilityResult, updates: Sequence[Sequence[Any]] | None, views: Sequence[ScoredView | None] | None,
    idx: NDArray[np.intp], counts: FloatArray, opts: ReliabilityOptions, priors: tuple[Any, Any],
    reference: Sequence[Any] | None, noise_variance: Sequence[Sequence[Any]] | None, bounded_influence: bool,
) -> ReliabilityResult:
    """The calibrated weights (module docstring)."""
    n_up, k = len(counts), idx.size
    prior_evidence, prior_statistics = priors
    rng = np.random.default_rng(opts.seed)
    deltas = reference is not None and opts.use_deltas
    blocks: list[tuple[list[Any], NDArray[np.intp], bool, bool]] = []  # layers, positions (into idx), deltas, evidence
    gamma = opts.memory_rate or 0.0
    if prior_statistics is not None and len(prior_statistics) != n_up:
        raise ValueError(f"prior_statistics has {len(prior_statistics)} entries, expected {n_up}")
    carried = np.zeros(n_up) if prior_evidence is None else np.asarray(prior_evidence, dtype=np.float64).reshape(-1)
    if carried.shape != (n_up,):
        raise ValueError(f"prior_evidence has shape {carried.shape}, expected ({n_up},)")
    prior = [dict((prior_statistics or [None] * n_up)[i] or {}) for i in idx]  # (A, W) per block and statistic
    with single_thread_blas():
        if updates is not None and k >= 3:
            layers = sample_layers(updates, idx, reference if deltas else None, opts.max_coordinates, rng, noise_variance, bounded_influence)
            blocks.append((layers, np.arange(k), deltas, True))
        have = [j for j, i in enumerate(idx) if views is not None and views[i] is not None]
        if len(have) >= 3 and views is not None:
            # a view's arrays are different statistics (class means or target moments, the Gram part):
            # each is its own block, with its own honest model, majority and tests
            chosen = [v for v in (views[idx[j]] for j in have) if v is not None]
            flags, scored = chosen[0].bounded_influence, chosen[0].evidence
            for j in range(len(chosen[0].layers)):
                layers = sample_layers([[v.layers[j]] for v in chosen], np.arange(len(have)), None, None, rng,
                                       [[v.noise_variance[j]] for v in chosen], flags if isinstance(flags, bool) else flags[j])
                blocks.append((layers, np.asarray(have, dtype=np.intp), False, scored if isinstance(scored, bool) else scored[j]))
        voice = _voices(blocks, k)
        total, kinds = np.zeros(k), [list[Kind]() for _ in range(k)]
        clip, incompatible, energy, members, rival = np.ones(k), np.zeros(k, dtype=bool), np.full(k, np.nan), np.full(k, k), np.full(k, np.inf)
        for b, (layers, pos, is_delta, is_evidence) in enumerate(blocks):
            local = _local_voices(voice, pos)
            fit: BlockFit = fit_block(layers, local, opts.false_alarm_rate, deltas=is_delta, evidence=is_evidence, rng=rng)
            if gamma > 0:
                _accumulate(fit, str(b), [prior[j] for j in pos], gamma)  # blocks come in a fixed order
            for name, z in fit.z.items():
                total[pos] += llr(z, fit.kinds[name])
                for j in pos:
                    kinds[j].append(fit.kinds[name])
            clip[pos] *= fit.clip
            incompatible[pos] |= fit.incompatible
            rival[pos] = np.fmin(rival[pos], fit.rival)
            # calibrated at the number of compatible voices: the nulls are fitted to them
            members[pos] = np.minimum(members[pos], max(3, int(np.count_nonzero((local == np.arange(pos.size)) & ~fit.incompatible))))
            energy[pos] = np.fmax(energy[pos], fit.energy)
    threshold = np.array([evidence_threshold(int(n), opts.false_alarm_rate, tuple(sorted(kk))) if kk else np.inf for n, kk in zip(members, kinds, strict=True)])
    this_round = np.where(np.isfinite(threshold), total - threshold, -np.inf)
    log_odds = this_round + gamma * np.maximum(np.nan_to_num(carried[idx], nan=0.0), 0.0)
    honest = 1.0 / (1.0 + np.exp(np.clip(SHARPNESS * log_odds, -700.0, 700.0)))
    # a doubted count is pulled towards the median claim: all the way when flagged, by the square of the
    # bounded-influence factor when far (a count keeps its premium only with an upload that earns it)
    trust = np.where(honest < 0.5, 0.0, clip * clip)
    plain = np.minimum(counts[idx], float(np.median(counts[idx])))
    n_eff = np.exp(trust * np.log(counts[idx]) + (1.0 - trust) * np.log(np.maximum(plain, 1e-300)))
    # identical uploads are one piece of evidence: together they weigh as one of them (honest uploads
    # coincide with probability zero; identical colluders cannot multiply their share)
    group = np.bincount(voice, minlength=k).astype(np.float64)[voice]
    factor = honest * clip / group
    w = np.zeros(n_up)
    w[idx] = n_eff * factor
    if w.sum() <= 0:
        w[idx] = counts[idx]
    result.weights = _cap_shares(w, opts.max_share)
    result.reliability[idx] = factor
    result.distances[idx] = energy
    result.evidence[idx] = np.where(np.isfinite(log_odds), log_odds, -50.0)
    result.round_evidence[idx] = np.where(np.isfinite(this_round), this_round, -50.0)
    by_upload = dict(zip(idx.tolist(), prior, strict=True))  # once, not per upload
    result.statistics = [by_upload.get(i, {}) for i in range(n_up)]
    n_voices = int(np.count_nonzero(voice == np.arange(k)))
    lone = incompatible & (voice == np.arange(k))
    bad = int(np.count_nonzero(lone))
    if n_voices >= 3 and 2 * bad >= n_voices and float(np.median(rival[lone])) < RIVAL:
        result.undecidable = (f"{bad} of {n_voices} independent uploads are incompatible with the honest model "
                              "fitted to their majority and agree with one another: no decidable honest majority")
    return result


def _accumulate(fit: BlockFit, block: str, carried: list[dict[str, tuple[float, float]]], gamma: float) -> None:
    """Evidence that adds up across rounds (``docs/reliability.md`` section 3): a one-sided statistic with an
    estimated null (``gap``) becomes ``A / sqrt(W)`` (``A_t = z_t + gamma A_{t-1}``, ``W_t = 1 + gamma^2 W_{t-1}``,
    kept per participant in ``carried``), standardised again by the consistent voices' median and MAD (at least 1)."""
    for name, kind in list(fit.kinds.items()):
        if kind[0] == "estimated" and not kind[1]:
            old = np.array([c.get(f"{block}:{name}", (0.0, 0.0)) for c in carried], dtype=np.float64).reshape(-1, 2)
            total, squares = fit.z[name] + gamma * old[:, 0], 1.0 + gamma * gamma * old[:, 1]
            for c, a, w in zip(carried, total, squares, strict=True):
                c[f"{block}:{name}"] = (float(a), float(w))
            fit.z[name], shrink, tail = standardise(total / np.sqrt(squares), fit.consistent, 1.0)
            fit.kinds[name] = (kind[0], kind[1], round(shrink, 1), tail)


def _voices(blocks: list[tuple[list[Any], NDArray[np.intp], bool, bool]], k: int) -> NDArray[np.intp]:
    """Voices over the participants every block scores (identical uploads speak once)."""
    full = [layers for layers, pos, *_ in blocks if pos.size == k]
    return voices(full, k) if full else np.arange(k)


def _local_voices(voice: NDArray[np.intp], pos: NDArray[np.intp]) -> NDArray[np.intp]:
    """``voice`` restricted to the block's participants ``pos``, as positions into ``pos``."""
    where = {int(p): j for j, p in enumerate(pos)}
    return np.array([where.get(int(voice[p]), j) for j, p in enumerate(pos)], dtype=np.intp)


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
    """:func:`estimate_reliability`'s weights: non-negative, summing to 1 (all zero when none is valid)."""
    return estimate_reliability(updates, num_examples, options, **overrides).weights


__all__ = ["Kind", "ReliabilityResult", "ScoredView", "estimate_reliability", "reliability_weights"]
