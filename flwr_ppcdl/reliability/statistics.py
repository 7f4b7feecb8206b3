"""Per-participant test statistics of the calibrated estimator (pure numpy; no Flower).

Everything here is computed on a random sample of coordinates (:func:`sample_layers`), in float64,
from residuals to a robust, unweighted centre: the leave-one-out coordinate-wise median of the
uploads (claimed example counts never enter it, so a count liar cannot steer it). Residuals are
formed directly (no Gram-matrix identities), so a far upload is scored without cancellation.

Statistics, one number per participant (large = suspicious unless marked two-sided):

``energy``
    ``log mean_i r_ki^2 / (tau_l^2 + v_ki)``: the residual energy over what honest heterogeneity
    plus the participant's own privacy noise explain, coordinate by coordinate (``v_ki`` the
    participant's noise variance at coordinate i, ``tau_l^2`` the honest heterogeneity of layer l,
    a robust Paule-Mandel estimate, :func:`paule_mandel`). Without a known law ``v = 0`` and
    ``tau_l^2`` is a common constant, absorbed by the null.
``collapse`` (two-sided)
    ``-<r_k, a> / ||a||^2``: the residual's component along the consensus model
    ``a = centre + reference`` in absolute terms, as a fraction of it; with a known noise law
    divided by its honest standard deviation ``sqrt(tau^2 + sum_i v_ki a_i^2 / ||a||^4)``, without
    one the null's scale is floored at a typical participant's sampling error of the projection. A release whose class
    structure collapsed (random labels), shrunk targets or a permuted head moves away from the
    consensus *against* it (positive); exploded targets move along it (negative).
``gap``
    Heads without a known noise law (2-D layers with 3-64 rows, scored on every coordinate): per row j, the best cosine
    of the residual row with *another* consensus row minus the one with its own row, energy
    weighted: rows permuted relative to the consensus (flipped labels) point at another class.
``swap``
    Heads with a known noise law only (:func:`~flwr_ppcdl.reliability.rows.row_swap`): how much
    closer a row is to another class's precision-weighted consensus row than to its own, in standard
    deviations of the known law; the largest over the rows.

Privacy: post-processing of released uploads only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.rows import (
    consistent_majority,
    group_dispersion,
    overdispersion,
    pairwise_consistency,
    row_swap,
)
from flwr_ppcdl.reliability.sketch import _sample_blocks, _unit_ids

FloatArray = NDArray[np.float64]

TWO_SIDED: dict[str, bool] = {"energy": False, "collapse": True, "gap": False, "swap": False}
"""Which statistics are tested on both sides."""
_LOO_MAX_K = 32  # above this, removing one upload moves the median by a negligible order-statistic gap
_MAX_HEAD_ROWS = 64
_SCORED_ENTRIES = 400_000  # at most this many sampled entries (K x coordinates) are scored ...
_MIN_COORDINATES = 2_000  # ... but never fewer coordinates than this
COLLAPSE_FLOOR = 0.5  # fraction of a typical honest sampling error of the projection below which honest values are not told apart


@dataclass
class ScoredLayer:
    """One layer's sampled coordinates of every upload (float64)."""

    stack: FloatArray  # (K, m): uploads (minus the reference) on the scored coordinates
    reference: FloatArray  # (m,): the reference on the same coordinates (zeros without one)
    units: NDArray[np.intp]  # (m,): unit id per coordinate
    noise: FloatArray | None  # (K, m): privacy-noise variance per coordinate
    head_rows: int  # > 0 when the layer is a fully scored head with this many rows (gap test)
    dispersion: float = 1.0  # known-law heads: :func:`~.rows.overdispersion` of the uploads, once per round


@dataclass
class Residuals:
    """One layer's residuals to the centre and the consensus, standardised by the layer's scale."""

    residual: FloatArray  # (K, m): upload minus its leave-one-out centre
    consensus: FloatArray  # (K, m): that centre + reference (absolute)
    noise: FloatArray | None  # (K, m): noise variance, same scaling
    layer: ScoredLayer


@dataclass
class Statistics:
    """The statistics of one round (see module docstring), one value per participant."""

    values: dict[str, FloatArray] = field(default_factory=dict)
    coordinates: int = 0
    floors: dict[str, float] = field(default_factory=dict)  # sampling error of each statistic
    effects: dict[str, float] = field(default_factory=dict)  # the modelled corruption's value, where bounded
    # statistics whose null is known (standard normal per comparison, below it on average), and the
    # number of comparisons their value is the largest of: tested against the Bonferroni threshold,
    # not against a null estimated from the participants
    comparisons: dict[str, int] = field(default_factory=dict)


def sample_layers(
    updates: Sequence[Sequence[Any]],
    idx: Sequence[int] | NDArray[np.intp],
    reference: Sequence[Any] | None,
    max_coordinates: int | None,
    rng: np.random.Generator,
    noise_variance: Sequence[Sequence[Any]] | None = None,
    max_units: int = 64,
) -> list[ScoredLayer]:
    """The scored coordinates of the uploads ``idx``, layer by layer.

    About ``max_coordinates`` coordinates in all are scored (at most 400,000 / K with K uploads,
    never fewer than 2,000; proportionally per layer; small layers fully), drawn afresh each call as random contiguous blocks so an uploader cannot know
    where it is looked at. Coordinates on which all uploads agree carry no evidence and are dropped.
    """
    k = len(idx)
    if max_coordinates is not None:
        # scoring costs K x coordinates: with many uploads fewer coordinates suffice (the
        # statistics of 4,000 coordinates are precise to a few percent)
        max_coordinates = min(max_coordinates, max(_MIN_COORDINATES, _SCORED_ENTRIES // max(k, 1)))
    first = updates[idx[0]]
    shapes = [tuple(np.shape(a)) for a in first]
    sizes = [int(np.prod(sh)) if sh else 1 for sh in shapes]
    total = sum(sizes)
    layers: list[ScoredLayer] = []
    for layer, (shape, size) in enumerate(zip(shapes, sizes, strict=True)):
        take: NDArray[np.intp] | None = None
        # a head with a known noise law is scored in full whatever its size: its row tests
        # (:mod:`.rows`) need every entry and cost K^2 x entries, not the parameter count
        known_head = noise_variance is not None and len(shape) == 2 and 3 <= shape[0] <= _MAX_HEAD_ROWS
        if max_coordinates is not None and total > max_coordinates and size > 0 and not known_head:
            m = max(1, int(round(max_coordinates * size / total)))
            if m < size:
                take = np.sort(_sample_blocks(size, m, rng))
        stack = np.empty((k, size if take is None else len(take)), dtype=np.float64)
        for j, i in enumerate(idx):
            row = np.asarray(updates[i][layer]).reshape(-1)
            stack[j] = row if take is None else row[take]
        ref = np.zeros(stack.shape[1])
        if reference is not None:
            r = np.asarray(reference[layer], dtype=np.float64).reshape(-1)
            ref = r if take is None else r[take]
            stack -= ref
        live = np.ptp(stack, axis=0) > 0
        if not np.any(live):
            continue
        cols = np.arange(size, dtype=np.intp) if take is None else take
        stack, ref, cols = stack[:, live], ref[live], cols[live]
        noise = None
        if noise_variance is not None:
            noise = np.empty_like(stack)
            for j, i in enumerate(idx):
                v = np.broadcast_to(np.asarray(noise_variance[i][layer], dtype=np.float64), shape).reshape(-1)
                noise[j] = (v if take is None else v[take])[live]
        units = _unit_ids(shape, cols, len(cols), max_units)
        full_head = take is None and bool(np.all(live)) and len(shape) == 2 and 3 <= shape[0] <= _MAX_HEAD_ROWS
        dispersion = overdispersion(pairwise_consistency(stack, noise)[0]) if full_head and noise is not None else 1.0
        layers.append(ScoredLayer(stack, ref, units, noise, int(shape[0]) if full_head else 0, dispersion))
    return layers


def residuals(layers: list[ScoredLayer], clean: NDArray[np.bool_]) -> list[Residuals]:
    """Residuals of every upload to the leave-one-out median of the ``clean`` uploads, per layer.

    A layer is standardised by the median residual energy per coordinate of the clean uploads, so
    layers of any scale weigh by their number of scored coordinates.
    """
    out: list[Residuals] = []
    for lay in layers:
        centre = subset_loo_median(lay.stack, clean)
        res = lay.stack - centre
        energy = np.mean(res * res, axis=1)
        scale = float(np.median(energy[clean]))
        if not scale > 0:
            scale = float(np.mean(energy))
        if not (scale > 0 and np.isfinite(scale)):
            continue
        inv = 1.0 / np.sqrt(scale)
        noise = None if lay.noise is None else lay.noise / scale
        out.append(Residuals(res * inv, (centre + lay.reference) * inv, noise, lay))
    return out


def subset_loo_median(stack: FloatArray, clean: NDArray[np.bool_]) -> FloatArray:
    """Row k: the coordinate-wise median of the clean uploads other than k (shape (K, m))."""
    if bool(np.all(clean)):
        return loo_median(stack)
    sub = stack[clean]
    centre = np.empty_like(stack)
    centre[clean] = loo_median(sub)
    centre[~clean] = np.median(sub, axis=0)
    return centre


def loo_median(stack: FloatArray) -> FloatArray:
    """Leave-one-out coordinate-wise medians, shape (K, m): row k is the median of the others.

    One sort per coordinate: removing the value of rank rho from the sorted column shifts the
    order statistics above it down by one. Above 32 uploads the plain median is used for every row.
    """
    k = stack.shape[0]
    if k <= 2:
        return np.broadcast_to(np.mean(stack, axis=0), stack.shape).copy() if k == 2 else np.zeros_like(stack)
    if k > _LOO_MAX_K:
        return np.broadcast_to(np.median(stack, axis=0), stack.shape).copy()
    order = np.argsort(stack, axis=0, kind="stable")
    ordered = np.take_along_axis(stack, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(k)[:, None], order.shape), axis=0)
    n = k - 1

    def stat(j: int) -> FloatArray:
        return np.where(j < rank, ordered[j][None, :], ordered[j + 1][None, :])

    if n % 2 == 1:
        return stat(n // 2)
    return 0.5 * (stat(n // 2 - 1) + stat(n // 2))


def compute_statistics(
    layers: list[Residuals], clean: NDArray[np.bool_], law_dispersion: float | None = None
) -> Statistics:
    """The statistics of the module docstring from :func:`residuals`' output.

    ``law_dispersion`` (known law only): ``clean`` is a majority consistent within the law
    (:func:`law_majority`), which understates its spread by this
    factor (>= 1); the collapse statistic's null is then the law's, not estimated (see below).
    """
    out = Statistics()
    if not layers:
        return out
    k = clean.size
    energy = np.zeros(k)
    expected = np.zeros(k)
    proj = np.zeros(k)
    cons = np.zeros(k)
    proj_noise = np.zeros(k)
    proj_own = np.zeros(k)
    fourth = np.zeros(k)
    known = any(lay.noise is not None for lay in layers)
    gap_num = np.zeros(k)
    gap_den = np.zeros(k)
    swap: FloatArray | None = None
    swap_comparisons = 0
    for lay in layers:
        res, con = lay.residual, lay.consensus
        sq = res * res
        rr = np.sum(sq, axis=1)
        m = res.shape[1]
        if lay.noise is None:
            fourth += np.einsum("km,km->k", sq, sq)
        if lay.noise is not None:
            # precision-weighted: a coordinate weighs by 1 / (tau^2 + v_ki + c_i), so precise rows
            # count and rows a participant barely has data for do not drown them; c_i is the noise
            # of the centre itself (a median of K - 1 values: about pi/2 of their typical variance
            # over K - 1), which a precise participant's residual carries in full
            centre = (np.pi / 2.0) * np.median(lay.noise[clean], axis=0) / max(int(np.count_nonzero(clean)) - 1, 1)
            variance = lay.noise + centre[None, :]
            tau2 = paule_mandel(res, variance, clean)
            energy += np.sum(sq / (tau2 + variance + 1e-300), axis=1)
        else:
            energy += rr
        expected += m
        proj += np.einsum("km,km->k", res, con)
        cons += np.einsum("km,km->k", con, con)
        if lay.noise is not None:
            proj_noise += np.einsum("km,km->k", lay.noise, con * con)
        proj_own += np.einsum("km,km->k", sq, con * con)
        if lay.layer.head_rows and lay.layer.noise is not None:
            # a known law: the swap test against it replaces the cosine gap, whose null is estimated
            # from the participants (on Fashion-MNIST it split ten honest IID participants into two
            # camps of five in every round of one seed, and caught nothing the swap test misses)
            found = row_swap(lay.layer.stack, lay.layer.noise, lay.layer.head_rows, clean, lay.layer.dispersion)
            swap = found if swap is None else np.maximum(swap, found)
            swap_comparisons += lay.layer.head_rows * (lay.layer.head_rows - 1)
        elif lay.layer.head_rows:
            per_row, weight = _row_gap(res, con, lay.layer.head_rows)
            gap_num += (per_row * weight).sum(axis=1)
            gap_den += weight.sum(axis=1)
        out.coordinates += m
    floor = 1e-12 * float(np.median(energy)) + 1e-300  # exact zeros (identical uploads) only
    out.values["energy"] = np.log(np.maximum(energy, floor)) - np.log(np.maximum(expected, 1e-300))
    if not known and np.any(fourth > 0):
        # sd of a log chi-square energy with m_eff = 3 (sum r^2)^2 / sum r^4 effective coordinates
        m_eff = float(np.median(3.0 * energy**2 / np.maximum(fourth, 1e-300)))
        out.floors["energy"] = float(np.sqrt(2.0 / max(m_eff, 1.0)))
    collapse = -proj / np.maximum(cons, 1e-300)
    if not known:
        # the sampling error of an honest projection, sqrt(sum_i r_ki^2 a_i^2) / ||a||^2 for a
        # typical clean participant, floors the null's scale: chance clusters of honest values
        # closer than that are not told apart
        own = np.sqrt(np.maximum(proj_own, 0.0)) / np.maximum(cons, 1e-300)
        out.floors["collapse"] = COLLAPSE_FLOOR * float(np.median(own[clean]))
    if known:
        # the noise part of the projection has the known variance sum_i v_ki a_i^2 / ||a||^4
        noise_var = proj_noise / np.maximum(cons, 1e-300) ** 2
        if law_dispersion is not None:
            # the reference is a majority consistent within the law: an honest projection varies by the
            # law times the majority's dispersion, plus the noise of the median it is measured from
            # (about pi/2 of a participant's variance over the n - 1 others) -- a known null, standard
            # normal, rather than a spread estimated from a handful of values
            n_ref = max(int(np.count_nonzero(clean)) - 1, 1)
            sd = np.sqrt(np.maximum(noise_var * float(law_dispersion) * (1.0 + 0.5 * np.pi / n_ref), 1e-300))
            out.comparisons["collapse"] = 1
        else:
            # the heterogeneity part tau^2 is the clean participants' median square beyond the noise
            # (0.4549 is the median of chi-square with one degree of freedom), floored at 0
            tau2 = max(float(np.median(collapse[clean] ** 2)) / 0.4549364231195724 - float(np.median(noise_var[clean])), 0.0)
            sd = np.sqrt(np.maximum(tau2 + noise_var, 1e-300))
        collapse = collapse / sd
        out.floors["collapse"] = 1.0
        out.effects["collapse"] = float(np.median(1.0 / sd[clean]))
    out.values["collapse"] = collapse
    if swap is not None:
        out.values["swap"] = swap
        out.comparisons["swap"] = swap_comparisons
    if np.any(gap_den > 0):
        # no floor from its own sampling error: gap is computed for heads without a known law only
        # (plain clients: as measured on the quickstart App, no floor)
        out.values["gap"] = gap_num / np.maximum(gap_den, 1e-300)
    return out


def paule_mandel(res: FloatArray, noise: FloatArray, clean: NDArray[np.bool_]) -> float:
    """Honest heterogeneity ``tau^2`` per coordinate beyond the known noise (a robust Paule-Mandel).

    The value at which the clean participants' *median* standardised energy
    ``mean_i r_ki^2 / (tau^2 + v_ki)`` equals 1 (the Paule-Mandel moment equation, with the median
    in place of the mean so a corrupted minority does not inflate it); 0 when the noise alone
    already explains the residuals. Bisection on a log scale (the left side decreases in tau^2).
    """
    r2 = res[clean] ** 2
    v = noise[clean]

    def excess(tau2: float) -> float:
        return float(np.median(np.mean(r2 / (tau2 + v + 1e-300), axis=1))) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, float(np.max(np.mean(r2, axis=1))) + 1e-300
    while excess(hi) > 0:
        hi *= 4.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _row_gap(res: FloatArray, con: FloatArray, rows: int) -> tuple[FloatArray, FloatArray]:
    """Per row j, ``max_{c != j} cos(r_kj, a_kc) - cos(r_kj, a_kj)`` and the row's weight (both (K, rows)).

    A row weighs by its residual energy. (Heads with a known noise law take the swap test instead.)"""
    k = res.shape[0]
    r = res.reshape(k, rows, -1)
    a = con.reshape(k, rows, -1)
    rn = np.linalg.norm(r, axis=2)
    an = np.linalg.norm(a, axis=2)
    cos = np.einsum("kjp,kcp->kjc", r, a) / np.maximum(rn[:, :, None] * an[:, None, :], 1e-300)
    diag = np.einsum("kjj->kj", cos).copy()
    cos[:, np.arange(rows), np.arange(rows)] = -np.inf
    return cos.max(axis=2) - diag, rn * rn


def head_majority(layers: list[ScoredLayer]) -> NDArray[np.bool_] | None:
    """The strict majority of participants consistent with one another under the known law, or None.

    Only heads with a known noise law (the statistics protocol's class means) are used: there two
    honest participants agree up to the stated variance whatever their label skew
    (:mod:`.rows`). The first pass then measures everyone from the centre of that majority.
    """
    known = known_law_entries(layers, heads=True)
    return None if known is None else consistent_majority(*known)


def law_majority(layers: list[ScoredLayer]) -> tuple[NDArray[np.bool_], float] | None:
    """For known-law views without a head (the regression target moments): the strict majority of
    participants consistent with one another within the stated law itself, and its dispersion; or None.

    Where the law explains the honest spread (census2000 IID at epsilon = 1), that majority is the
    honest reference: the centre is its median and the collapse statistic's null the law times the
    majority's dispersion (:func:`~flwr_ppcdl.reliability.rows.group_dispersion`), a known null that a
    coherent 40 % of random targets cannot widen. Where honest participants differ beyond the law
    (target skew, sampling at large epsilon) none is claimed (``law_must_hold``).
    """
    known = known_law_entries(layers, heads=False)
    group = None if known is None else consistent_majority(*known, law_must_hold=True)
    if known is None or group is None:
        return None
    return group, group_dispersion(*known, group)


def known_law_entries(layers: list[ScoredLayer], *, heads: bool) -> tuple[FloatArray, FloatArray] | None:
    """The uploads' entries (absolute, not residuals) and their known variances, over the layers with a
    known law that are heads (``heads=True``) or are not; None where there is none."""
    chosen = [lay for lay in layers if lay.noise is not None and bool(lay.head_rows) == heads]
    if not chosen:
        return None
    stack = np.concatenate([lay.stack + lay.reference[None, :] for lay in chosen], axis=1)
    noise = np.concatenate([lay.noise for lay in chosen if lay.noise is not None], axis=1)
    return stack, noise
