"""Free post-processing of a release: repair the noisy quadratic, solve it, evaluate it.

Everything here reads only released (noisy) statistics and public constants, so it costs no
privacy. The noisy Gram matrix is generally indefinite; the repair is a fixed public rule:

* ``ρ = m·2·sd·√D`` with ``sd`` the per-entry noise standard deviation of the released Gram matrix
  and ``m`` the public ``repair_multiplier``: with ``m = 1`` about the spectral norm of the noise
  matrix (the 'specnorm' rule; for Laplace noise of scale ``b``, ``sd = √2·b``: ``2·√2·b·√D``);
  ``m = 0.5`` is the ridge the Gaussian release uses by default (measured,
  ``benchmarks/gaussian_fm_tuning.py``);
* eigendecompose ``G~ + ρI`` and keep eigenvalues ``> ρ/2`` (``"half-rho"``, default) or ``> 0``
  (``"positive"``); without noise, eigenvalues above ``4·D·2**-52·λ_max`` (least squares);
* re-centre the cross term over classes (classification) and project it onto the kept eigenspace,
  which makes the objective bounded below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

REPAIR_RULES: tuple[str, ...] = ("half-rho", "positive")


@dataclass
class RepairedStatistics:
    """Post-processed release: a PSD quadratic on the kept eigenspace.

    Attributes
    ----------
    eigvecs:
        ``Q'`` (D, r), orthonormal columns of the kept eigenspace of ``G~ + ρI``.
    eigvals:
        ``Λ'`` (r,), the kept eigenvalues (of ``G~ + ρI``, all > 0).
    cross:
        Re-centred (classification) and projected cross term: ``C̄`` (K, D) or ``b̄`` (D,).
    rho:
        The regulariser ``ρ`` added before the eigendecomposition.
    threshold:
        Eigenvalues above it were kept.
    """

    eigvecs: FloatArray
    eigvals: FloatArray
    cross: FloatArray
    rho: float
    threshold: float

    @cached_property
    def gram(self) -> FloatArray:
        """``Ĝ = Q' Λ' Q'ᵀ`` (D, D), positive semi-definite (computed once per object)."""
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T


def repair_rho(noise_sd: float, dim: int, multiplier: float = 1.0) -> float:
    """The public regulariser ``ρ = multiplier · 2 · noise_sd · √dim`` (0 without noise)."""
    return multiplier * 2.0 * noise_sd * math.sqrt(dim)


def repair(
    task: str,
    gram: FloatArray,
    cross: FloatArray,
    noise_sd: float,
    rule: str = "half-rho",
    multiplier: float = 1.0,
) -> RepairedStatistics:
    """Repair noisy statistics into a PSD quadratic (see the module docstring for the rule).

    ``noise_sd`` is the per-entry noise standard deviation of ``gram`` (``Release.noise_sd``).
    """
    if rule not in REPAIR_RULES:
        raise ValueError(f"repair_keep must be one of {REPAIR_RULES}; got {rule!r}")
    dim = gram.shape[0]
    rho = repair_rho(noise_sd, dim, multiplier)
    eigvals, eigvecs = np.linalg.eigh(gram + rho * np.eye(dim))
    if rho == 0.0:
        threshold = 4.0 * dim * 2.0**-52 * max(float(np.max(np.abs(eigvals))), 0.0)
    elif rule == "half-rho":
        threshold = rho / 2.0
    else:
        threshold = 0.0
    keep = eigvals > threshold
    q = np.ascontiguousarray(eigvecs[:, keep])
    if task == "classification":
        centred = cross - cross.mean(axis=0, keepdims=True)
        projected = (centred @ q) @ q.T
    else:
        projected = q @ (q.T @ cross)
    return RepairedStatistics(eigvecs=q, eigvals=eigvals[keep].copy(), cross=projected, rho=rho, threshold=threshold)


def closed_form(
    task: str,
    num_classes: int | None,
    rep: RepairedStatistics,
    ridge: float = 0.0,
    prox_mu: float = 0.0,
    anchor: FloatArray | None = None,
) -> FloatArray:
    """Minimiser of the repaired objective (+ ``ridge/2 ||W||^2`` + ``prox_mu/2 ||W - anchor||^2``).

    Classification returns ``W`` (K, D) with logits ``W @ [h; 1]``: without ridge/prox it is the
    class-centred minimum-norm solution ``K·C̄ Q'Λ'^{-1}Q'ᵀ``; with ``c = ridge + prox_mu > 0`` it is
    ``(C̄ + μ A_c)(Ĝ/K + cI)^{-1} + 1·(μ/c)·mean_k(A)`` (``A_c`` the class-centred anchor; the
    last term is the minimiser along the softmax-invariant direction). Regression returns ``w``
    (D,) with ``y/B ≈ w @ [h; 1]``, solving ``(2Ĝ + cI) w = 2b̄ + μa`` (minimum norm when ``c = 0``).
    """
    q, lam = rep.eigvecs, rep.eigvals
    c = ridge + prox_mu
    if task == "classification":
        k = float(num_classes or 0)
        if c == 0.0:
            return (rep.cross @ q / (lam / k)) @ q.T
        rhs = rep.cross.copy()
        shift = np.zeros(rep.cross.shape[1])
        if anchor is not None and prox_mu > 0:
            mean = anchor.mean(axis=0)
            rhs += prox_mu * (anchor - mean)
            shift = (prox_mu / c) * mean
        inside = (rhs @ q / (lam / k + c)) @ q.T
        outside = (rhs - (rhs @ q) @ q.T) / c
        return inside + outside + shift[None, :]
    if c == 0.0:
        return q @ ((q.T @ rep.cross) / lam)
    rhs = 2.0 * rep.cross + (prox_mu * anchor if anchor is not None and prox_mu > 0 else 0.0)
    inside = q @ ((q.T @ rhs) / (2.0 * lam + c))
    outside = (rhs - q @ (q.T @ rhs)) / c
    return inside + outside


def objective_value(
    task: str, num_classes: int | None, rep: RepairedStatistics, weights: FloatArray, ridge: float, n: int
) -> float:
    """Repaired noisy objective ``[F(W) + ridge/2 ||W||^2] / n`` (see :mod:`.objective`)."""
    gram = rep.gram
    if task == "classification":
        k = float(num_classes or 0)
        hw = (weights - weights.mean(axis=0, keepdims=True)) / k
        value = -float(np.sum(weights * rep.cross)) + 0.5 * float(np.sum(weights * (hw @ gram)))
    else:
        value = float(weights @ gram @ weights) - 2.0 * float(rep.cross @ weights)
    value += 0.5 * ridge * float(np.sum(weights * weights))
    return value / n
