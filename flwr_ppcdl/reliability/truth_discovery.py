"""Truth discovery (CRH) with robust weights and alignment gates (pure numpy; no Flower).

Start from the (capped) sample-weighted mean; repeat: per-layer normalised squared distance of every
upload to the current estimate, a robust noise scale (the median distance), weights
``r_k = exp(-sharpness * max(z_k - tolerance, 0))`` with ``z_k = d_k / median(d)`` (Huber-like: no
penalty inside the typical spread, exponential decay outside), and the estimate becomes the
weighted mean; stop when the weights settle. With ``alignment`` two gates multiply ``r_k``:

* a *cosine* gate inside the iterations: the (clipped, median-normalised) cosine between the upload
  and the leave-one-out estimate, so uploads without signal relative to the reference (random
  labels on deltas) lose weight even when they form a tight cluster;
* a *per-unit alignment* gate, computed against the consensus of the converged iteration and applied
  as a prior to two further runs. Units are groups of output rows (a class row of a linear head, an
  output neuron, a filter). The gate measures how much of an upload's energy lies along the
  consensus, unit by unit, above what a signal-free upload would show by chance. Why per unit: under
  label skew (Dirichlet non-IID) an honest participant's head is far from the consensus and its
  layer-level cosine is diluted by the rows of classes it barely has, so distance and cosine mistake
  it for a random-label participant (whose head sits near zero, close to everyone). Its
  well-represented rows still point along the consensus rows, a random-label head's do not. The gate
  is trusted only as far as the typical excess alignment stands out of its chance fluctuation
  (uploads dominated by privacy noise leave it neutral).

Privacy: everything here is post-processing of what participants already released (their
differentially private parameters); no participant data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.options import ReliabilityOptions
from flwr_ppcdl.reliability.sketch import UNIT_BUDGET, LayerStats, layer_grams, single_thread_blas

FloatArray = NDArray[np.float64]


def robust_weights(dist: FloatArray, sharpness: float, tolerance: float) -> FloatArray:
    """Map distances to reliability in [0, 1] relative to the median (robust noise scale)."""
    scale = float(np.median(dist))
    if not np.isfinite(scale) or scale <= 0:
        positive = dist[dist > 0]
        if positive.size == 0:
            return np.ones_like(dist)  # all identical: everyone equally reliable
        scale = float(np.min(positive))
    z = dist / scale
    return np.asarray(np.exp(-sharpness * np.maximum(z - tolerance, 0.0)), dtype=np.float64)


_BLAS_CONTROLLER: Any = None


def truth_discovery(
    updates: Sequence[Sequence[Any]],
    idx: NDArray[np.intp],
    base: FloatArray,
    options: ReliabilityOptions,
    reference: Sequence[Any] | None,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, int]:
    """CRH on per-layer Gram matrices; return (reliability, distance, iterations).

    Stage 1 iterates distances (and, with ``alignment``, the whole-layer cosine gate) to a
    fixed point. With ``alignment`` and ``alignment_units > 1``, stage 2 then computes the
    per-unit alignment gate against the stage-1 consensus, which is already cleaned of most
    unreliable uploads (computed against the initial FedAvg mean, the gate would inherit its
    contamination), and re-runs the iteration with the gate as a prior; twice, so the gate
    is also computed once against a consensus it helped clean.
    """
    alignment, alignment_units = options.alignment, options.alignment_units
    sharpness, tolerance = options.sharpness, options.effective_tolerance
    max_iter, tol = options.max_iter, options.tol
    k = len(idx)
    base = base / base.sum() if base.sum() > 0 else np.full(k, 1.0 / k)
    if k == 1:
        return np.ones(1), np.zeros(1), 0
    units = 1
    if alignment:
        # (units, K, K) float64 per layer: keep all layers together within ~32 MB
        n_layers = max(1, len(updates[idx[0]]))
        budget = max(n_layers, UNIT_BUDGET // (k * k))
        units = max(1, min(alignment_units, budget // n_layers))
    with single_thread_blas():
        stats = layer_grams(updates, list(idx), base, reference, options.max_coordinates, rng, max_units=units)
    raws = [st.unit_raw.sum(axis=0) for st in stats] if alignment else []
    r, dist, w, it = _crh(stats, raws, base, base, sharpness, tolerance, max_iter, tol)
    if alignment and alignment_units > 1:
        for _ in range(2):
            gate = _alignment_gate(stats, w, options.alignment_relax)
            if not np.any(gate > 0):
                break
            r_s, dist, w, it_s = _crh(stats, raws, base * gate, w, sharpness, tolerance, max_iter, tol)
            r = r_s * gate
            it += it_s
    return r, dist, it


def _crh(
    stats: list[LayerStats],
    raws: list[FloatArray],
    base: FloatArray,
    start: FloatArray,
    sharpness: float,
    tolerance: float,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, FloatArray, FloatArray, int]:
    """One CRH fixed point from weights ``start``; return (reliability, distance, weights, iterations).

    All layers are processed at once on stacked (L, K, K) Grams, so an iteration costs a
    few numpy calls whatever the number of layers.
    """
    k = len(base)
    base = base / base.sum() if base.sum() > 0 else np.full(k, 1.0 / k)
    w = start / start.sum() if start.sum() > 0 else base.copy()
    grams = np.stack([st.gram_c for st in stats])  # (L, K, K)
    diag_c = np.einsum("lkk->lk", grams)
    raw = np.stack(raws) if raws else None
    diag_raw = np.einsum("lkk->lk", raw) if raw is not None else None
    r = np.ones(k)
    dist = np.zeros(k)
    it = 0
    while it < max_iter:
        it += 1
        gw = grams @ w  # (L, K)
        d = np.maximum(diag_c - 2.0 * gw + (gw @ w)[:, None], 0.0)
        scale = np.median(d, axis=1)
        scale = np.where(scale > 0, scale, d.mean(axis=1))
        used = scale > 1e-300  # a layer identical across uploads carries no evidence
        if np.any(used):
            dist = (d[used] / scale[used, None]).mean(axis=0)
        else:
            dist = np.zeros(k)
        r = robust_weights(dist, sharpness, tolerance)
        if raw is not None and diag_raw is not None:
            r = r * _cosine_gate(raw, diag_raw, w)
        new_w = base * r
        new_w = new_w / new_w.sum() if new_w.sum() > 0 else base.copy()
        converged = float(np.max(np.abs(new_w - w))) < tol
        w = new_w
        if converged:
            break
    return r, dist, w, it


def _cosine_gate(raw: FloatArray, diag: FloatArray, w: FloatArray) -> FloatArray:
    """Mean over layers of cos(u_k, leave-one-out estimate), clipped and median-normalised.

    ``raw``: (L, K, K) raw Grams; ``diag``: their diagonals, (L, K).
    """
    k = len(w)
    gw = raw @ w  # (L, K)
    ee = gw @ w  # (L,)
    num = gw - w * diag
    den2 = np.maximum(ee[:, None] - 2.0 * w * gw + w * w * diag, 0.0)
    denom = np.sqrt(np.maximum(diag, 0.0) * den2)
    pos = denom > 0
    layer_used = np.any(pos, axis=1)
    if not np.any(layer_used):
        return np.ones(k)
    cos = np.where(pos, num / np.where(pos, denom, 1.0), 0.0)[layer_used].mean(axis=0)
    positive = cos[cos > 0]
    if positive.size == 0:
        return np.ones(k)
    return np.asarray(np.clip(cos / float(np.median(positive)), 0.0, 1.0), dtype=np.float64)


def _weighted_median(values: FloatArray, weights: FloatArray) -> float:
    """Median of ``values`` under ``weights`` (>= 0, not all zero)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    pos = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(values[order][min(pos, len(order) - 1)])


def _alignment_gate(stats: list[LayerStats], w: FloatArray, relax: float) -> FloatArray:
    """Gate in [0, 1] from per-unit agreement with the leave-one-out estimate.

    For upload k and each unit u (a group of output rows) let ``p_ku`` be the projection of
    the upload's unit vector onto the leave-one-out estimate's (``sum_{j != k} w_j x_j``),
    kept only when positive. The *aligned energy fraction* ``sum_u p_ku^2 / ||x_k||^2``
    minus its chance level for a signal-free (isotropic) upload, ``sum_u ||x_ku||^2 /
    (2 n_u) / ||x_k||^2`` with ``n_u`` scored coordinates in unit u, is the upload's
    *excess alignment* (averaged over layers). A random-label or pure-noise upload sits at
    about 0 whatever its norm or its distance to the others; an honest upload from skewed
    (non-IID) data still has rows (its well-represented classes / features) aligned with
    the consensus. Per-unit rather than whole-layer projections matter there: a skewed
    participant's layer-level cosine is diluted by its off rows, its good rows' are not.
    The gate is ``clip(excess / (relax * reference), 0, 1)`` with ``reference`` the
    ``w``-weighted median excess (no penalty from ``relax`` times the typical excess up).
    """
    k = len(w)
    excess = np.zeros(k)
    noise2 = np.zeros(k)
    used = 0
    for st in stats:
        diag = np.einsum("ukk->uk", st.unit_raw)  # ||x_ku||^2, shape (U, K)
        energy = diag.sum(axis=0)
        if not np.any(energy > 0):
            continue
        gw = st.unit_raw @ w  # <x_ku, m_u>, shape (U, K)
        ee = gw @ w  # ||m_u||^2
        num = gw - w * diag  # <x_ku, m_u - w_k x_ku>
        den = ee[:, None] - 2.0 * w * gw + w * w * diag  # ||m_u - w_k x_ku||^2
        ok = (num > 0) & (den > 0)
        p2 = np.where(ok, num * num / np.where(ok, den, 1.0), 0.0)  # positive projections only
        chance = (diag / (2.0 * st.unit_size[:, None])).sum(axis=0)
        safe = np.where(energy > 0, energy, 1.0)
        excess += np.where(energy > 0, (p2.sum(axis=0) - chance) / safe, 0.0)
        # std of the aligned energy of a signal-free upload: Var(max(z, 0)^2) = 5/4
        noise2 += np.where(energy > 0, 1.25 * ((diag / st.unit_size[:, None]) ** 2).sum(axis=0) / safe**2, 0.0)
        used += 1
    if not used:
        return np.ones(k)
    excess /= used
    noise = np.sqrt(noise2) / used
    reference = _weighted_median(excess, w) if w.sum() > 0 else float(np.median(excess))
    if not reference > 0:
        return np.ones(k)  # no consensus signal to align with: no evidence either way
    gate = np.clip(excess / (relax * reference), 0.0, 1.0)
    # Trust the gate only as far as the typical excess stands out of chance fluctuations:
    # fully from 4 noise standard deviations up, not at all below 2 (all uploads noisy).
    typical_noise = float(np.median(noise))
    if typical_noise > 0:
        confidence = min(max((reference / typical_noise - 2.0) / 2.0, 0.0), 1.0)
        gate = 1.0 - confidence * (1.0 - gate)
    return np.asarray(gate, dtype=np.float64)
