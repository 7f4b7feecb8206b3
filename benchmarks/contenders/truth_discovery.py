"""The legacy reliability rule, truth discovery (CRH), as a benchmark contender (no longer library code).

This was ``flwr_ppcdl.reliability`` before issue #25 and the App's configuration before issue #13
(``method="truth_discovery"``, ``alignment=False``, ``sharpness=4``, ``tolerance=1``, ``count_cap=10``,
``max_share=0.5``, memory rate 0.5). :class:`TruthDiscoveryFedAvg` runs it as a Flower Message-API
strategy (a :class:`flwr.serverapp.strategy.FedAvg` whose weights are the rule's), so the benchmarks
drive it exactly like every other contender.

The rule: start from the (capped) sample-weighted mean; repeat: per-layer normalised squared distance
of every upload to the current estimate, a robust noise scale (the median distance), weights
``r_k = exp(-sharpness * max(z_k - tolerance, 0))`` with ``z_k = d_k / median(d)``, and the estimate
becomes the weighted mean; stop when the weights settle. With ``alignment`` two gates multiply ``r_k``
(a whole-layer cosine gate and a per-unit alignment gate; see :func:`_alignment_gate`). It is relative to
the median distance, so about half of the participants are above it whatever their quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from numpy.typing import NDArray

from flwr_ppcdl.reliability.sketch import sample_blocks as _sample_blocks
from flwr_ppcdl.reliability.sketch import single_thread_blas

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Options:
    """The legacy rule's options (defaults: the pre-#13 App configuration)."""

    sharpness: float = 4.0
    tolerance: float = 1.0
    alignment: bool = False
    alignment_units: int = 64
    alignment_relax: float = 0.5
    max_iter: int = 50
    tol: float = 1e-7
    max_coordinates: int | None = 20_000
    count_cap: float = 10.0
    max_share: float = 0.5
    memory_rate: float = 0.5
    seed: int | None = 0



UNIT_BUDGET = 4_000_000  # float64 entries of all per-unit K x K Grams together (32 MB)


@dataclass
class LayerStats:
    """Sufficient statistics of one layer's scoring vectors (all float64).

    ``gram_c`` is the K x K Gram matrix of the centred vectors; ``unit_raw`` holds one K x K
    Gram matrix of the raw (uncentred) vectors per *unit* (a group of output rows, see
    :func:`_unit_ids`), shape (U, K, K), and ``unit_size`` the number of scored coordinates
    of each unit. The raw Gram of the whole layer is ``unit_raw.sum(0)``.
    """

    gram_c: FloatArray
    unit_raw: FloatArray
    unit_size: FloatArray


def _unit_ids(shape: tuple[int, ...], cols: NDArray[np.intp], width: int, max_units: int) -> NDArray[np.intp]:
    """Unit index of each scored coordinate (flat index ``cols``) of a layer of ``shape``.

    A unit is a group of consecutive output rows (axis 0 of a 2-D+ layer: an output unit of
    a dense layer, a filter of a convolution, a class row of a linear head). Rows are merged
    so there are at most ``max_units`` units and, on average, at least 8 scored
    coordinates per unit; a 1-D layer is one unit.
    """
    if len(shape) < 2 or shape[0] <= 1 or max_units <= 1:
        return np.zeros(len(cols), dtype=np.intp)
    rows = int(shape[0])
    row_len = max(1, int(np.prod(shape[1:])))
    per_row = width / rows
    group = max(-(-rows // max_units), int(math.ceil(8.0 / per_row)) if per_row > 0 else rows, 1)
    return np.asarray((cols // row_len) // group, dtype=np.intp)


def layer_grams(
    updates: Sequence[Sequence[Any]],
    idx: Sequence[int],
    base_weights: FloatArray,
    reference: Sequence[Any] | None,
    max_coordinates: int | None,
    rng: np.random.Generator,
    max_units: int = 1,
) -> list[LayerStats]:
    """Per-layer Gram matrices of the scoring vectors (see :class:`LayerStats`).

    Scoring vectors are ``update - reference`` restricted, for large models, to a random
    sample of about ``max_coordinates`` coordinates in all (proportional per layer, drawn as
    random contiguous blocks, see :func:`_sample_blocks`): squared distances and inner
    products on a uniform coordinate sample are unbiased (rescaled) estimates of the full
    ones, and the sample is drawn afresh each call so an uploader cannot know where it is
    looked at. Centring on the base-weighted mean keeps float32 products accurate; raw
    Grams (for alignment) are rebuilt from centred ones. The per-unit Grams sum to the
    layer's, so splitting into units costs no extra arithmetic.
    """
    n_layers = len(updates[idx[0]])
    shapes = [tuple(np.shape(updates[idx[0]][layer])) for layer in range(n_layers)]
    sizes = [int(np.prod(sh)) if sh else 1 for sh in shapes]
    total = sum(sizes)
    stats: list[LayerStats] = []
    k = len(idx)
    for layer in range(n_layers):
        size = sizes[layer]
        take: NDArray[np.intp] | None = None
        if max_coordinates is not None and total > max_coordinates and size > 0:
            m = max(1, int(round(max_coordinates * size / total)))
            if m < size:
                take = np.sort(_sample_blocks(size, m, rng))
        width = size if take is None else len(take)
        # float64 for small stacks; float32 BLAS above (centring keeps its products accurate,
        # and a float64 K x K Gram over 10^4+ columns costs 5-20x as much on OpenBLAS)
        dtype = np.float64 if k * width <= 1_000_000 else np.float32
        stack = np.empty((k, width), dtype=dtype)
        ref = None
        if reference is not None:
            ref = np.asarray(reference[layer]).reshape(-1)
            ref = ref if take is None else ref[take]
        for j, i in enumerate(idx):
            row = np.asarray(updates[i][layer]).reshape(-1)
            row = row if take is None else row[take]
            stack[j] = row if ref is None else np.subtract(row, ref, dtype=np.float64)
        mean: NDArray[Any] = np.matmul(base_weights.astype(dtype), stack)
        stack -= mean
        cols = np.arange(width, dtype=np.intp) if take is None else take
        units = _unit_ids(shapes[layer], cols, width, max_units)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(units)) + 1, [width]))
        n_units = len(bounds) - 1
        unit_raw = np.empty((n_units, k, k), dtype=np.float64)
        unit_size = np.empty(n_units, dtype=np.float64)
        gram_c = np.zeros((k, k), dtype=np.float64)
        for u in range(n_units):
            lo, hi = int(bounds[u]), int(bounds[u + 1])
            part = stack[:, lo:hi]
            mu = mean[lo:hi]
            g = (part @ part.T).astype(np.float64)
            g = (g + g.T) / 2.0
            cross = (part @ mu).astype(np.float64)  # <c_i, m>
            m2 = float(np.dot(mu.astype(np.float64), mu.astype(np.float64)))
            gram_c += g
            unit_raw[u] = g + cross[:, None] + cross[None, :] + m2
            unit_size[u] = hi - lo
        del stack
        stats.append(LayerStats(gram_c, unit_raw, unit_size))
    return stats


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


def truth_discovery(
    updates: Sequence[Sequence[Any]],
    idx: NDArray[np.intp],
    base: FloatArray,
    options: Options,
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
    sharpness, tolerance = options.sharpness, options.tolerance
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


def legacy_weights(
    updates: Sequence[Sequence[Any]], counts: Sequence[float], prior: FloatArray, options: Options,
    reference: Sequence[Any] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The legacy weights of K valid uploads (counts capped at ``count_cap`` x the median, then
    ``counts x prior x reliability``, water-filled at ``max_share``), and the reliability factors."""
    n = np.asarray(counts, dtype=np.float64)
    n = np.minimum(n, options.count_cap * float(np.median(n)))
    base = n / n.sum()
    idx = np.arange(len(n))
    r, _, _ = truth_discovery(updates, idx, base * prior, options, reference, np.random.default_rng(options.seed))
    w = base * prior * r
    w = w / w.sum() if w.sum() > 0 else base.copy()
    if len(w) * options.max_share >= 1.0:
        for _ in range(len(w)):
            over = w > options.max_share + 1e-15
            if not np.any(over):
                break
            excess = float(np.sum(w[over] - options.max_share))
            w[over] = options.max_share
            free = (~over) & (w > 0) & (w < options.max_share)
            if not np.any(free):
                break
            w[free] += excess * w[free] / w[free].sum()
    return w / w.sum(), r


class TruthDiscoveryFedAvg(FedAvg):
    """Flower's Message-API FedAvg with the legacy truth-discovery weights (and its memory across rounds).

    ``weights_history`` holds the weights of every round (node id -> weight), ``shares_history`` the
    sample shares, for the benchmarks' statistics.
    """

    def __init__(self, *args: Any, options: Options | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.legacy = options or Options()
        self.memory: dict[int, float] = {}
        self.sent: list[NDArray[Any]] | None = None
        self.weights_history: list[dict[int, float]] = []
        self.shares_history: list[dict[int, float]] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Any:
        self.sent = [arrays[k].numpy() for k in arrays]
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good = [m for m in replies if not m.has_error()]
        if not good:
            return None, None
        records = [next(iter(m.content.array_records.values())) for m in good]
        keys = list(records[0].keys())
        updates = [[r[k].numpy() for k in keys] for r in records]
        counts = [float(next(iter(m.content.metric_records.values()))[self.weighted_by_key]) for m in good]
        nodes = [int(m.metadata.src_node_id) for m in good]
        prior = np.array([self.memory.get(n, 1.0) for n in nodes])
        w, r = legacy_weights(updates, counts, prior, self.legacy, self.sent)
        for n, rel in zip(nodes, r, strict=True):
            self.memory[n] = (1 - self.legacy.memory_rate) * self.memory.get(n, 1.0) + self.legacy.memory_rate * float(rel)
        self.weights_history.append(dict(zip(nodes, map(float, w), strict=True)))
        self.shares_history.append(dict(zip(nodes, map(float, np.array(counts) / sum(counts)), strict=True)))
        out = [sum(float(wk) * np.asarray(u[j], dtype=np.float64) for wk, u in zip(w, updates, strict=True))
               for j in range(len(keys))]
        arrays = ArrayRecord({k: Array(np.asarray(a, dtype=np.asarray(updates[0][j]).dtype)) for j, (k, a) in enumerate(zip(keys, out, strict=True))})
        return arrays, MetricRecord({})
