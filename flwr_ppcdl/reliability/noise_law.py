"""The known privacy-noise law of a functional-mechanism release, carried to its solution (pure numpy).

A release perturbs every entry of its Gram matrix ``G`` and cross term ``C`` (or ``b``) with
independent noise of variance ``2 b^2`` (Laplace of scale ``b = Δ/ε``, the release's public
``noise_scale``). Its solution solves ``W Ĝ / K = C̄`` (Taylor-softmax head, K classes) or
``Ĝ w = b̄`` (regression), so to first order ``δW = (K δC - W δG) Ĝ⁺`` and ``δw = Ĝ⁺ (δb - δG w)``.
Treating the entries of ``δG`` as independent (its upper triangle is; the mirror adds a small
correlation), the variance of every entry of the solution is

    Var δW_ij = 2 b^2 (K^2 + ||W_i||^2) ||Ĝ⁺_{:, j}||^2,     Var δw_j = 2 b^2 (1 + ||w||^2) ||Ĝ⁺_{j, :}||^2.

The calibrated estimator subtracts this from a participant's residual energy before comparing it
with the others' (honest heterogeneity is what is left), so a participant with few records or a small
ε is not mistaken for an unreliable one. The server computes it from what it already received.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def solution_noise_variance(
    task: str, pseudo_inverse: FloatArray, weights: FloatArray, noise_scale: float, num_classes: int | None = None
) -> FloatArray:
    """First-order noise variance of every entry of a released statistics' solution.

    Parameters
    ----------
    task : {"classification", "regression"}
    pseudo_inverse : ndarray, shape (D, D)
        ``Ĝ⁺`` of the repaired Gram matrix (symmetric).
    weights : ndarray, shape (K, D) or (D,)
        The solution (normalised units).
    noise_scale : float
        Laplace scale ``b`` of every released entry (variance ``2 b^2``).
    num_classes : int, optional
        K (classification).

    Returns
    -------
    ndarray, same shape as ``weights``
    """
    if not np.isfinite(noise_scale) or noise_scale < 0:
        raise ValueError(f"noise_scale={noise_scale!r} must be a finite number >= 0")
    entry = 2.0 * float(noise_scale) ** 2
    col = np.sum(np.asarray(pseudo_inverse, dtype=np.float64) ** 2, axis=0)  # ||P_{:, j}||^2
    w = np.asarray(weights, dtype=np.float64)
    if task == "classification":
        if w.ndim != 2:
            raise ValueError(f"classification weights must be (K, D); got shape {w.shape}")
        k = float(num_classes or w.shape[0])
        rows = k * k + np.sum(w * w, axis=1)
        return np.asarray(entry * rows[:, None] * col[None, :], dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"regression weights must be (D,); got shape {w.shape}")
    return np.asarray(entry * (1.0 + float(w @ w)) * col, dtype=np.float64)
