"""Decoders other than the Taylor closed form, computed from the same released statistics (free).

A classification release holds ``G~ = Σ h~ h~ᵀ + E_G`` and ``C~ = Σ (e_y - 1/K) h~ᵀ + E_C``
(``h~ = [h; 1]``, bias last). The same numbers determine, up to the noise, every class's sum of
features and its count:

* the Gram's bias column is ``Σ_i h~_i``, so the class sums are ``S_k = C_k + G[:, bias]/K`` and the
  count of class ``k`` is ``S_k``'s bias entry ``n_k``;
* the within-class scatter of the features is ``W = G_hh - Σ_k s_k s_kᵀ / n_k`` (``s_k`` = ``S_k``
  without its bias entry).

:func:`lda_weights` turns them into the linear discriminant (shared covariance ``W/(N - K)``): class
``k``'s logit is ``μ_kᵀ P h - ½ μ_kᵀ P μ_k + log(n_k/N)`` with ``μ_k = s_k/n_k`` and ``P`` the inverse
of the repaired covariance. Everything here reads only released arrays and public constants, so it
costs no privacy (post-processing). The scatter is repaired with the release's own public rule
(:func:`.repair.repair`: ``ρ = m·2·sd·√d``, keep eigenvalues above ``ρ/2``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.privacy.repair import repair

FloatArray = NDArray[np.float64]

DECODERS: tuple[str, ...] = ("taylor", "lda")
"""``"taylor"``: the closed form of the second-order softmax surrogate (:func:`.repair.closed_form`);
``"lda"``: linear discriminant analysis from the same statistics (:func:`lda_weights`)."""

MIN_CLASS_COUNT: float = 1.0
"""A noisy class count below it is raised to it (a class absent from the data, or drowned in noise)."""


def class_sums_and_counts(gram: FloatArray, cross: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Noisy class sums ``s_k`` (K, d) of the features and class counts ``n_k`` (K,) from ``(G~, C~)``.

    ``S_k = C_k + G[:, bias]/K``: the cross term's row ``k`` is ``Σ_{y_i = k} h~_i - (1/K)Σ_i h~_i``
    and the Gram's bias column is ``Σ_i h~_i``. The counts are clipped below at
    :data:`MIN_CLASS_COUNT`.
    """
    k = cross.shape[0]
    sums = cross + gram[:, -1][None, :] / k
    counts = np.maximum(sums[:, -1], MIN_CLASS_COUNT)
    return np.ascontiguousarray(sums[:, :-1]), counts


def lda_weights(
    gram: FloatArray,
    cross: FloatArray,
    noise_sd: float,
    repair_multiplier: float = 1.0,
    repair_keep: str = "half-rho",
) -> FloatArray:
    """Normalised weights ``(K, D)`` of the linear discriminant decoded from a classification release.

    Parameters
    ----------
    gram, cross
        The released (noisy) ``G~`` (D, D) and ``C~`` (K, D), bias last.
    noise_sd
        Per-entry noise standard deviation of ``gram`` (``Release.noise_sd``; 0 without noise).
    repair_multiplier, repair_keep
        The release's public repair rule, applied to the within-class scatter.

    Returns
    -------
    numpy.ndarray
        ``W`` with logits ``W @ [h; 1]``: ``W[k] = [P μ_k, -½ μ_kᵀ P μ_k + log(n_k / N)]``, ``N = Σ n_k``,
        ``P = (N - K) · pinv(repaired W)`` on the kept eigenspace.
    """
    num_classes = cross.shape[0]
    sums, counts = class_sums_and_counts(gram, cross)
    d = sums.shape[1]
    scatter = gram[:d, :d] - (sums.T / counts) @ sums
    scatter = 0.5 * (scatter + scatter.T)
    kept = repair("regression", scatter, np.zeros(d), noise_sd, repair_keep, repair_multiplier)
    total = float(np.sum(counts))
    dof = max(total - num_classes, 1.0)
    means = sums / counts[:, None]
    coef = ((means @ kept.eigvecs) * (dof / kept.eigvals)) @ kept.eigvecs.T
    bias = -0.5 * np.sum(coef * means, axis=1) + np.log(counts / total)
    weights = np.hstack([coef, bias[:, None]])
    if not np.all(np.isfinite(weights)):  # only reachable through absurd inputs (overflowing sums)
        raise ValueError(f"the LDA decoder produced non-finite weights (noise_sd={noise_sd!r})")
    return weights


__all__ = ["DECODERS", "MIN_CLASS_COUNT", "class_sums_and_counts", "lda_weights"]
