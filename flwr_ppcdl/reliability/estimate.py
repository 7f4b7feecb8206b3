"""The reliability estimate of one round: validate, weigh by counts and reliability, cap shares.

:func:`estimate_reliability` is the pure core both Flower strategies call (through
:class:`~flwr_ppcdl.reliability.ReliabilityAggregator`); :func:`reliability_weights` returns only the
weights. Estimators:

``"truth_discovery"`` (default)
    CRH-style truth discovery on the uploads (:mod:`.truth_discovery`).
``"server_data"``
    Scores every upload by a loss the server computed on its own data (lower is better):
    ``r_k = exp(-sharpness * max(L_k / min_j L_j - tolerance, 0))`` (positive losses; for
    non-positive ones the excess over the best loss goes through the median rule).
``"fedavg"`` / ``"uniform"``
    Sample-count weights (FedAvg) or equal weights; baselines and tests.

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
        Reliability factor in [0, 1] before sample counts and caps (0 for excluded).
    sample_weights : ndarray, shape (K,)
        Normalised sample-count factor after capping (0 for excluded).
    distances : ndarray, shape (K,)
        Per-layer-normalised distance to the final estimate (truth discovery), or excess
        server loss (server-data); ``nan`` for excluded uploads.
    excluded : dict[int, str]
        Index of each excluded upload and the reason.
    iterations : int
        Truth-discovery iterations run (0 for other methods).
    """

    weights: FloatArray
    reliability: FloatArray
    sample_weights: FloatArray
    distances: FloatArray
    excluded: dict[int, str] = field(default_factory=dict)
    iterations: int = 0


def estimate_reliability(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    options: ReliabilityOptions | None = None,
    *,
    prior: Sequence[float] | NDArray[Any] | None = None,
    server_losses: Sequence[float] | NDArray[Any] | None = None,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    reference: Sequence[Any] | None = None,
    **overrides: Any,
) -> ReliabilityResult:
    """Estimate reliability and aggregation weights of K uploads.

    Parameters
    ----------
    updates : list of list of array-like
        One list of arrays per participant: parameters, or deltas to the current global
        model (deltas are needed for ``alignment``).
    num_examples : sequence of numbers
        Claimed example counts (untrusted). Non-positive or non-finite counts exclude the upload.
    options : ReliabilityOptions, optional
        The estimator's options (defaults when None); keyword ``overrides`` are applied on top
        (e.g. ``method="fedavg"``), validated, unknown names rejected.
    prior : sequence of float, optional
        Multiplicative prior per upload (e.g. from :class:`ReliabilityMemory`); 1 = neutral.
    server_losses : sequence of float, optional
        Losses of each upload on server-held data (lower is better); required by ``server_data``.
    expected_shapes : list of tuple, optional
        Required layer shapes; see :func:`validate_updates`.
    reference : list of array-like, optional
        Global model the uploads started from; truth discovery then scores
        ``update - reference`` (deltas) without materialising the deltas.

    Returns
    -------
    ReliabilityResult
    """
    opts = ReliabilityOptions.resolve(options, **overrides)
    method, sharpness, tolerance = opts.method, opts.sharpness, opts.effective_tolerance
    n_up = len(updates)
    excluded = validate_updates(updates, num_examples, max_abs=opts.max_abs, expected_shapes=expected_shapes)
    counts = np.zeros(n_up, dtype=np.float64)
    for k in range(n_up):
        if k not in excluded:
            counts[k] = float(num_examples[k])
    pri = np.ones(n_up, dtype=np.float64)
    if prior is not None:
        pri = np.asarray(prior, dtype=np.float64).reshape(-1)
        if pri.shape != (n_up,):
            raise ValueError(f"prior has shape {pri.shape}, expected ({n_up},)")
        bad_prior = ~np.isfinite(pri) | (pri < 0)
        pri = np.where(bad_prior, 0.0, pri)
    losses: FloatArray | None = None
    if method == "server_data":
        if server_losses is None:
            raise ValueError("method='server_data' needs server_losses (one loss per upload)")
        losses = np.asarray(server_losses, dtype=np.float64).reshape(-1)
        if losses.shape != (n_up,):
            raise ValueError(f"server_losses has shape {losses.shape}, expected ({n_up},)")
        for k in range(n_up):
            if k not in excluded and not np.isfinite(losses[k]):
                excluded[k] = f"server loss {losses[k]!r} is not finite"
    valid = np.array([k not in excluded for k in range(n_up)], dtype=bool)
    distances = np.full(n_up, np.nan)
    reliability = np.zeros(n_up)
    sample = _sample_factor(counts, valid, opts.sample_weighting, opts.count_cap)
    if not np.any(valid):
        return ReliabilityResult(np.zeros(n_up), reliability, sample, distances, excluded, 0)

    idx = np.flatnonzero(valid)
    s_v = sample[idx]
    p_v = pri[idx]
    iterations = 0
    if method in ("fedavg", "uniform"):
        r_v = np.ones(len(idx))
        if method == "uniform":
            s_v = np.full(len(idx), 1.0 / len(idx))
            sample[idx] = s_v
    elif method == "server_data":
        assert losses is not None
        lv = losses[idx]
        best = float(np.min(lv))
        if best > 0:
            # losses are on a ratio scale: compare each to the best upload's loss
            ratio = lv / best
            distances[idx] = ratio
            r_v = np.exp(-sharpness * np.maximum(ratio - tolerance, 0.0))
        else:
            excess = lv - best
            distances[idx] = excess
            r_v = robust_weights(excess, sharpness, tolerance)
    else:
        r_v, d_v, iterations = truth_discovery(
            updates, idx, s_v * p_v, opts, reference, np.random.default_rng(opts.seed)
        )
        distances[idx] = d_v
    reliability[idx] = r_v
    w = np.zeros(n_up)
    w[idx] = s_v * p_v * r_v
    if w.sum() <= 0:  # prior/reliability wiped everyone out: fall back to sample weights
        w[idx] = s_v
    w = _cap_shares(w, opts.max_share)
    return ReliabilityResult(w, reliability, sample, distances, excluded, iterations)


def _sample_factor(
    counts: FloatArray, valid: NDArray[np.bool_], weighting: str, count_cap: float | None
) -> FloatArray:
    """Sample-count factor: cap counts at ``count_cap * median``, then transform, normalise."""
    s = np.zeros_like(counts)
    if not np.any(valid):
        return s
    c = counts[valid].astype(np.float64)
    if count_cap is not None:
        c = np.minimum(c, count_cap * float(np.median(c)))
    if weighting == "sqrt":
        c = np.sqrt(c)
    elif weighting == "uniform":
        c = np.ones_like(c)
    s[valid] = c / c.sum()
    return s


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
