"""The honest model of one round, fitted to one block of uploads, and the statistics scored against it.

Honest ``u_k = theta + h_k + n_k``: consensus, heterogeneity of variance ``tau_l^2`` per array, privacy
noise of known variance ``v_k`` where the server holds the release (``docs/reliability.md`` section 2).
:func:`fit_block`: identical uploads speak once (:func:`~.sketch.voices`); ``theta`` is the least-trimmed-
squares centre of the ``floor(n/2) + 1`` closest voices (a majority of participants, not of data) and
``tau^2`` solves a robust Paule-Mandel equation (over every voice under a known law, else the majority); the
*consistent* voices pass the calibrated energy test and give the heterogeneity and the nulls; on leave-one-out
residuals: ``energy`` (the free alternative: beyond the round-level threshold a voice is *incompatible* and its
influence bounded; ``rival``: how near the incompatible voices are to one another's centre), ``collapse``
(scaled towards zero or beyond), ``reversal`` (deltas only), ``gap`` and ``swap`` (head rows permuted,
without and with a known law) as evidence.

Privacy: post-processing of released uploads only; no participant record is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability import constants as const
from flwr_ppcdl.reliability.calibration import (
    Kind,
    beyond_mirror,
    chance_spread,
    energy_threshold,
    known_to_normal,
    squared_scale,
    standardise,
)
from flwr_ppcdl.reliability.sketch import Layer

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
_TINY = 1e-300


@dataclass
class BlockFit:
    """One block's fitted honest model and statistics (positions into the block's participants)."""

    z: dict[str, FloatArray] = field(default_factory=dict)  # evidence statistics, standardised
    kinds: dict[str, Kind] = field(default_factory=dict)  # their nulls and sides (for the calibration)
    energy: FloatArray = field(default_factory=lambda: np.zeros(0))  # standardised energy z (free alternative)
    clip: FloatArray = field(default_factory=lambda: np.ones(0))  # bounded-influence factor in (0, 1]
    incompatible: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # beyond the round-level threshold
    rival: FloatArray = field(default_factory=lambda: np.zeros(0))  # energy to the other incompatible voices' centre / to theta
    consistent: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # the voices C


def fit_block(layers: list[Layer], voice: NDArray[np.intp], alpha: float, *, deltas: bool, evidence: bool = True, rng: np.random.Generator | None = None) -> BlockFit:
    """Fit the honest model to one block and score every participant (module docstring); ``voice[k]``:
    whose identical upload speaks for k; ``deltas``: the stacks are deltas (adds ``reversal``); ``evidence``:
    whether the structured statistics are scored (else the energy alone)."""
    k = voice.size
    is_voice = voice == np.arange(k)
    n = int(is_voice.sum())
    out = BlockFit(energy=np.zeros(k), clip=np.ones(k), incompatible=np.zeros(k, dtype=bool), consistent=is_voice.copy(), rival=np.full(k, np.inf))
    if n < 3 or not layers:
        return out
    known = any(lay.noise is not None for lay in layers)
    majority = _least_trimmed(layers, is_voice)
    centre = _centre(layers, majority)
    tau2 = _heterogeneity(layers, centre, is_voice if known else majority)  # a law: every voice (section 2)
    energy, _ = _energy(layers, centre, tau2, _loo_residuals(layers, centre, tau2, majority))
    log_energy = np.log(energy)
    closest = np.sort(log_energy[is_voice])[: (n + 1) // 2]
    z1 = (log_energy - closest.mean()) / max(float(closest.std(ddof=1)), _TINY)
    consistent = is_voice & (z1 <= energy_threshold(n, alpha, True))
    if int(consistent.sum()) < 3:
        consistent = majority
    out.consistent = consistent
    tau2 = _heterogeneity(layers, centre, consistent)
    centre = _centre(layers, majority, tau2)
    loo = _loo_residuals(layers, centre, tau2, majority)
    energy, m_eff = _energy(layers, centre, tau2, loo)
    floor = float(np.sqrt(2.0 / max(m_eff, 1.0)))
    log_energy = np.log(energy)
    scale = max(float(log_energy[consistent].std(ddof=1)), floor)
    out.energy = (log_energy - log_energy[consistent].mean()) / scale
    # one round-level threshold (an honest participant passes it with probability alpha): incompatible, bounded
    far = energy_threshold(n, alpha / n, False)
    out.incompatible = is_voice & (out.energy > far)
    if int(out.incompatible.sum()) >= 2:  # do the incompatible agree with one another (a rival camp), or on nothing?
        other = _centre(layers, out.incompatible, tau2)
        out.rival = np.where(out.incompatible, _energy(layers, other, tau2, _loo_residuals(layers, other, tau2, out.incompatible))[0] / energy, np.inf)
    if any(lay.bounded for lay in layers):
        out.clip = np.minimum(1.0, np.exp(-0.5 * np.maximum(out.energy - far, 0.0) * scale))
    if evidence:
        _projections(out, layers, loo, centre, tau2, consistent, known, deltas, alpha)
        _heads(out, layers, loo, centre, tau2, consistent, deltas, rng)
    return _spread_to_duplicates(out, voice)


# -- the honest majority and the centre -----------------------------------------------------------


def _variance(lay: Layer, tau2: float) -> FloatArray | float:
    return tau2 if lay.noise is None else np.maximum(lay.noise, _TINY) + tau2


def _centre(layers: list[Layer], members: BoolArray, tau2: list[float] | None = None) -> list[FloatArray]:
    """Precision-weighted mean of the ``members``, per layer (heterogeneity ``tau2`` added to the law)."""
    out = []
    for i, lay in enumerate(layers):
        if lay.noise is None:
            out.append(lay.stack[members].mean(axis=0))
        else:
            w = 1.0 / np.asarray(_variance(lay, 0.0 if tau2 is None else tau2[i]))[members]
            out.append((w * lay.stack[members]).sum(axis=0) / w.sum(axis=0))
    return out


def _heterogeneity(layers: list[Layer], centre: list[FloatArray], members: BoolArray) -> list[float]:
    """``tau_l^2`` per layer: the value at which the members' median standardised energy is 1 (a robust
    Paule-Mandel equation; without a noise law simply their median mean square)."""
    out = []
    for lay, c in zip(layers, centre, strict=True):
        r2 = (lay.stack[members] - c) ** 2
        if lay.noise is None:
            out.append(max(float(np.median(r2.mean(axis=1))), _TINY))
            continue
        v = np.maximum(lay.noise[members], _TINY)

        def excess(t: float, r2: FloatArray = r2, v: FloatArray = v) -> float:
            return float(np.median(np.mean(r2 / (t + v), axis=1))) - 1.0

        if excess(0.0) <= 0:
            out.append(0.0)
            continue
        lo, hi = 0.0, float(np.max(r2.mean(axis=1))) + _TINY
        while excess(hi) > 0:
            hi *= 4.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
        out.append(0.5 * (lo + hi))
    return out


def _least_trimmed(layers: list[Layer], is_voice: BoolArray) -> BoolArray:
    """The least-trimmed-squares majority: the ``floor(n/2) + 1`` voices closest to the centre they define.
    Concentration steps (each lowers the trimmed sum) from the coordinate-wise median of all voices and from that of
    the voices the first fit left out; the majority whose trimmed sum, in the first fit's metric, is smaller is kept."""
    n = int(is_voice.sum())
    h = n // 2 + 1

    def concentrate(start: list[FloatArray]) -> tuple[BoolArray, list[float]]:
        centre, members = start, np.zeros_like(is_voice)
        tau2 = _heterogeneity(layers, centre, is_voice)  # one metric per start
        for _ in range(const.MAX_STEPS):
            e = np.where(is_voice, _energy(layers, centre, tau2, None)[0], np.inf)
            nxt = np.zeros_like(is_voice)
            nxt[np.argsort(e, kind="stable")[:h]] = True
            if np.array_equal(nxt, members):
                break
            members = nxt
            centre = _centre(layers, members, tau2)
        return members, tau2

    first, metric = concentrate([_column_median(lay.stack[is_voice]) for lay in layers])
    rest = is_voice & ~first
    if int(rest.sum()) < 2:
        return first
    second, _ = concentrate([_column_median(lay.stack[rest]) for lay in layers])

    def trimmed_sum(members: BoolArray) -> float:
        e = _energy(layers, _centre(layers, members, metric), metric, None)[0]
        return float(np.sort(e[is_voice])[:h].sum())

    return second if trimmed_sum(second) < trimmed_sum(first) else first


def _column_median(stack: FloatArray) -> FloatArray:
    """Coordinate-wise median of the rows (partitioned along contiguous memory: twice as fast)."""
    return np.asarray(np.median(np.ascontiguousarray(stack.T), axis=1), dtype=np.float64)


def _loo_residuals(layers: list[Layer], centre: list[FloatArray], tau2: list[float], members: BoolArray) -> list[tuple[FloatArray, FloatArray]]:
    """Per layer: every participant's residual to the members' centre without itself, and that centre's
    own variance per entry (leave-one-out: a member's upload does not pull its own reference)."""
    out = []
    h = float(np.count_nonzero(members))
    for lay, c, t in zip(layers, centre, tau2, strict=True):
        if lay.noise is None:  # one variance for everyone: the plain leave-one-out mean, no K x m weights
            inside = members[:, None]
            rest = np.where(inside, max(h - 1.0, 1.0), h)
            loo = np.where(inside, (c[None, :] * h - lay.stack) / rest, c[None, :])
            out.append((lay.stack - loo, t / rest))
            continue
        var = np.broadcast_to(np.asarray(_variance(lay, t), dtype=np.float64), lay.stack.shape)
        w = np.where(members[:, None], 1.0 / var, 0.0)
        total = w.sum(axis=0)
        own = np.where(members[:, None], w, 0.0)
        rest = np.maximum(total[None, :] - own, _TINY)
        loo = (c[None, :] * total[None, :] - own * lay.stack) / rest
        out.append((lay.stack - loo, 1.0 / rest))
    return out


def _energy(layers: list[Layer], centre: list[FloatArray], tau2: list[float],
            loo: list[tuple[FloatArray, FloatArray]] | None) -> tuple[FloatArray, float]:
    """Mean standardised squared residual per participant, and the effective number of coordinates (NaN without
    ``loo``: the concentration steps rank energies only)."""
    k = layers[0].stack.shape[0]
    num, count, fourth = np.zeros(k), 0, np.zeros(k)
    for i, (lay, c, t) in enumerate(zip(layers, centre, tau2, strict=True)):
        res, cvar = (lay.stack - c, 0.0) if loo is None else loo[i]
        s = res * res / (_variance(lay, t) + cvar)
        num += s.sum(axis=1)
        fourth += (s * s).sum(axis=1) if loo is not None else 0.0
        count += res.shape[1]
    m_eff = float(np.median(3.0 * num * num / np.maximum(fourth, _TINY))) if loo is not None else np.nan  # (sum r^2)^2 / sum r^4: m/3
    return np.maximum(num / max(count, 1), _TINY), m_eff


# -- the structured alternatives --------------------------------------------------------------------


def _projections(out: BlockFit, layers: list[Layer], loo: list[tuple[FloatArray, FloatArray]], centre: list[FloatArray],
                 tau2: list[float], members: BoolArray, known: bool, deltas: bool, alpha: float) -> None:
    """The scaled alternatives (``docs/reliability.md`` section 2), in the model's metric (each entry weighed
    by ``1 / (tau^2 + v + the centre's variance)``): ``collapse``, the residual along the consensus ``a =
    theta + reference`` (towards zero: positive; beyond: negative) -- under a known law ``<r, a> / ||a||``
    scaled by the consistent voices' median square, its share beyond the laws (where it exceeds their
    chance spread) calibrated heavy-tailed; without a law a cosine times the square root of the number of
    entries, standardised by their median and MAD -- and, for deltas of plain uploads, ``reversal``: the
    update's cosine with the others' consensus update and its length along it (``beyond_mirror``; the larger
    counts), calibrated at the round's median / MAD, not run at a ratio <= 0 (nothing to reverse)."""
    k = layers[0].stack.shape[0]
    weight = [1.0 / (_variance(lay, t) + cvar) for lay, t, (_, cvar) in zip(layers, tau2, loo, strict=True)]
    proj, aa, rr = np.zeros(k), np.zeros(k), np.zeros(k)
    along = [c + lay.reference for c, lay in zip(centre, layers, strict=True)]
    for (res, _), a, w in zip(loo, along, weight, strict=True):
        proj += np.sum(res * a * w, axis=1)
        aa += np.sum(a * a * w, axis=1)
        rr += np.sum(res * res * w, axis=1)
    if np.any(aa > _TINY):
        if known:
            z = -proj / np.sqrt(np.maximum(aa, _TINY))
            scale2 = max(float(squared_scale(z[members])), _TINY)
            law = sum(np.sum(a * a * w * w * (_variance(lay, 0.0) + cvar), axis=1) for a, lay, w, (_, cvar) in zip(along, layers, weight, loo, strict=True))
            tail = round(min(max(1.0 - float(np.median(law[members] / aa[members])) / scale2, 0.0), 1.0), 1)
            tail = tail if scale2 > chance_spread(int(members.sum()), alpha) else 0.0  # beyond its law's chance
            out.z["collapse"], out.kinds["collapse"] = z / np.sqrt(scale2), ("scaled", True, 1.0, tail)
        else:
            cosine = -proj / np.sqrt(np.maximum(rr * aa, _TINY))
            count = sum(res.shape[1] for res, _ in loo)
            out.z["collapse"], shrink, tail = standardise(cosine * np.sqrt(count), members, const.SAMPLING_FLOOR)
            out.kinds["collapse"] = ("estimated", True, round(shrink, 1), tail)
    if deltas and not known:
        dot, dd, oo = np.zeros(k), np.zeros(k), np.zeros(k)
        for (res, _), lay, w in zip(loo, layers, weight, strict=True):
            others = lay.stack - res  # the leave-one-out consensus update
            dot += np.sum(lay.stack * others * w, axis=1)
            dd += np.sum(lay.stack * lay.stack * w, axis=1)
            oo += np.sum(others * others * w, axis=1)
        direction, length = dot / np.sqrt(np.maximum(dd * oo, _TINY)), dot / np.maximum(oo, _TINY)  # the others' update
        (z_cos, r_cos), (z_len, r_len) = beyond_mirror(direction, members, _TINY), beyond_mirror(length, members, _TINY)
        ratio = min(float(r_cos[0]), float(r_len[0]))
        if ratio > 0:  # the honest go with the others at all (near a fixed point they do not)
            out.z["reversal"] = np.maximum(z_cos, z_len)
            out.kinds["reversal"] = ("mirror", False, min(round(ratio * 2.0) / 2.0, const.MIRROR_CAP), 1.0)


def _heads(out: BlockFit, layers: list[Layer], loo: list[tuple[FloatArray, FloatArray]], centre: list[FloatArray],
           tau2: list[float], members: BoolArray, deltas: bool, rng: np.random.Generator | None) -> None:
    """Rows permuted: ``swap`` under a known law (a known null), ``gap`` otherwise (an estimated null); for deltas
    also ``permuted`` (the rows against the others' consensus update, an estimated null: :func:`permuted_rows`)."""
    swap, comparisons, gap_num, gap_den, permuted = None, 0, None, None, None
    for (res, _), lay, c, t in zip(loo, layers, centre, tau2, strict=True):
        if not lay.rows:
            continue
        if lay.noise is not None:
            found = row_swap(lay.stack + lay.reference, np.maximum(lay.noise, _TINY) + t, lay.rows, members)
            swap = found if swap is None else np.maximum(swap, found)
            comparisons += lay.rows * (lay.rows - 1)
            continue
        if deltas:  # the update's rows against the majority's model head, the class templates; and the consensus update's
            following = permuted_rows(lay.stack, lay.stack - res, lay.rows, members, rng)
            permuted = permuted if following is None else following + (0.0 if permuted is None else permuted)
            per_row, weight = _row_gap(lay.stack, np.broadcast_to(_delta_templates(lay, c, res, members), res.shape), lay.rows)
        else:  # a permuted row j deviates from the consensus towards another row's consensus
            per_row, weight = _row_gap(res, np.broadcast_to(c + lay.reference, res.shape), lay.rows)
        gap_num = (per_row * weight).sum(axis=1) + (0.0 if gap_num is None else gap_num)
        gap_den = weight.sum(axis=1) + (0.0 if gap_den is None else gap_den)
    if swap is not None:
        out.z["swap"], out.kinds["swap"] = known_to_normal(swap, comparisons), ("known", False, 1.0, 0.0)
    if permuted is not None:
        out.z["permuted"], _, tail = standardise(permuted, members)
        out.kinds["permuted"] = ("estimated", False, 1.0, tail)
    if gap_num is not None and gap_den is not None and np.any(gap_den > 0):
        out.z["gap"], _, tail = standardise(gap_num / np.maximum(gap_den, _TINY), members)
        out.kinds["gap"] = ("estimated", False, 1.0, tail)


def _delta_templates(lay: Layer, centre: FloatArray, residuals: FloatArray, members: BoolArray) -> FloatArray:
    """The class templates of a head's update rows (``gap``): the majority's model head (global head + ``centre``), rows
    centred (a softmax ignores a common shift); ``benchmarks/reliability_templates.py`` swaps in the screened choices."""
    return np.asarray(((head := (lay.reference + centre).reshape(lay.rows, -1)) - head.mean(axis=0)).reshape(-1))


def _row_gap(rows_of: FloatArray, reference: FloatArray, rows: int) -> tuple[FloatArray, FloatArray]:
    """Per participant and row j, ``max_{c != j} cos(x_kj, a_kc) - cos(x_kj, a_kj)`` and the row's energy
    (both (K, rows)); ``x`` and ``a`` are (K, rows x p): each participant's rows and its reference rows."""
    k = rows_of.shape[0]
    r = rows_of.reshape(k, rows, -1)
    a = reference.reshape(k, rows, -1)
    rn = np.linalg.norm(r, axis=2)
    an = np.linalg.norm(a, axis=2)
    cos = np.einsum("kjp,kcp->kjc", r, a) / np.maximum(rn[:, :, None] * an[:, None, :], _TINY)
    diag = np.einsum("kjj->kj", cos).copy()
    cos[:, np.arange(rows), np.arange(rows)] = -np.inf
    return cos.max(axis=2) - diag, rn * rn


def permuted_rows(stack: FloatArray, templates: FloatArray, rows: int, members: BoolArray, rng: np.random.Generator | None = None) -> FloatArray | None:
    """Per participant, how far its rows follow other rows of the consensus update: row j against the ``templates``
    (the others' consensus rows ``t_c``, unit), ``b_jc = <x_j, t_c> / |e_j|`` (``e_j``: the row off its own template).
    Honest ``x_j = a_j t_j + e_j``: after fitting ``a_j``'s pattern ``(t_j . t_c)`` the residual of ``b_j`` does not
    depend on ``a_j`` (a weak or noisy honest row is not a permuted one). Summed over rows: its largest entry ``c != j``
    over its sd (``e``'s direction covariance pooled over the ``members``, plus the templates' noise off their direction,
    / (n - 1)); None where that noise exceeds ``TEMPLATE_NOISE`` of the rows'. Columns beyond ``PERMUTED_COLUMNS``: a sample from ``rng``."""
    k, n = stack.shape[0], int(members.sum())
    x, t = stack.reshape(k, rows, -1), templates.reshape(k, rows, -1)
    if x.shape[2] > const.PERMUTED_COLUMNS:  # the same coordinates for everyone: the statistic's cost is bounded
        cols = np.sort((rng or np.random.default_rng()).choice(x.shape[2], const.PERMUTED_COLUMNS, replace=False))
        x, t = x[:, :, cols], t[:, :, cols]
    tn, xn = np.maximum(np.linalg.norm(t, axis=2), _TINY), np.linalg.norm(x, axis=2)  # row lengths, once
    th = t / tn[:, :, None]
    e = x - np.einsum("kjp,kjp->kj", x, th)[:, :, None] * th
    en = np.maximum(np.linalg.norm(e, axis=2), _TINY)
    eh, centre = (e / en[:, :, None])[members], th[members].mean(axis=0)
    centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), _TINY)
    s0 = s = eh.reshape(-1, x.shape[2]).T @ eh.reshape(-1, x.shape[2]) / (n * rows)
    for _ in range(30):  # s0 = mean_j P_j s P_j (each row lost its own direction): solve for s, O(rows p^2)
        u = centre @ s
        s = s0 + (centre.T @ u + u.T @ centre - (centre.T * np.einsum("jp,jp->j", u, centre)) @ centre) / rows
    v = centre @ s @ centre.T  # singular if rows sum to zero (softmax): a pseudo-inverse below
    half = np.flatnonzero(members)[: 2 * min(16, n // 2)].reshape(2, -1)  # template noise off its direction
    xh = x[half[0]] / np.maximum(xn[half[0]], _TINY)[:, :, None]
    omega = np.mean((xh.reshape(-1, x.shape[2]) @ e[half[1]].reshape(-1, x.shape[2]).T).reshape(-1, rows) ** 2, axis=0) / max(n - 1, 1)
    w = (xn / en)[:, :, None] ** 2 * omega[None, None, :] / tn[:, None, :] ** 2
    if float(np.median(np.median(w[members], axis=0) / np.maximum(np.diag(v), _TINY)[None, :])) > const.TEMPLATE_NOISE:
        return None
    b, ch = x @ th.transpose(0, 2, 1) / en[:, :, None], th @ th.transpose(0, 2, 1)
    chv = ch @ np.linalg.pinv(v, rcond=1e-6, hermitian=True)
    num, den = (chv * b).sum(axis=2), np.maximum((chv * ch).sum(axis=2), _TINY)
    z = (b - (num / den)[:, :, None] * ch) / np.sqrt(np.maximum(np.diag(v) + w - ch * ch / den[:, :, None], _TINY))
    z[:, np.arange(rows), np.arange(rows)] = -np.inf
    return np.asarray(z.max(axis=2).sum(axis=1), dtype=np.float64)


def row_swap(stack: FloatArray, variance: FloatArray, rows: int, members: BoolArray) -> FloatArray:
    """Per participant, the strongest evidence that one of its rows belongs to another class: against the
    precision-weighted mean ``a`` of the other ``members``, ``D_jc = sum_p (u_kjp - a_cp)^2 / (v_kjp +
    w_jp)``; under the law ``z_jc = (D_jj - D_jc) / (2 sqrt(lambda_jc))`` (``lambda`` the classes'
    separation in the same units) is at most standard normal, a permuted row sits near ``+sqrt(lambda)/2``.
    Returns ``max_{j, c} z_jc``."""
    k = stack.shape[0]
    u = stack.reshape(k, rows, -1)
    precision = 1.0 / variance.reshape(k, rows, -1)
    use = members.astype(np.float64)[:, None, None]
    total_p = np.sum(precision * use, axis=0)
    total_pu = np.sum(precision * u * use, axis=0)
    out = np.zeros(k)
    for i in range(k):
        p_i = precision[i] * use[i]
        tp = np.maximum(total_p - p_i, _TINY)
        centre = (total_pu - p_i * u[i]) / tp
        var = 1.0 / precision[i] + 1.0 / tp
        dist = np.einsum("jcp->jc", (u[i][:, None, :] - centre[None, :, :]) ** 2 / var[:, None, :])
        sep = np.einsum("jcp->jc", (centre[:, None, :] - centre[None, :, :]) ** 2 / var[:, None, :])
        z = (np.diag(dist)[:, None] - dist) / (2.0 * np.sqrt(np.maximum(sep, _TINY)))
        z[np.arange(rows), np.arange(rows)] = -np.inf
        out[i] = float(np.max(z))
    return out


def _spread_to_duplicates(out: BlockFit, voice: NDArray[np.intp]) -> BlockFit:
    """A participant whose upload repeats another's gets that voice's statistics."""
    out.z = {name: z[voice] for name, z in out.z.items()}
    out.energy, out.clip, out.incompatible, out.rival = out.energy[voice], out.clip[voice], out.incompatible[voice], out.rival[voice]
    return out
