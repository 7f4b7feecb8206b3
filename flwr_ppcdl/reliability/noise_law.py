"""The known privacy-noise law of a functional-mechanism release's scored views (pure numpy).

A release perturbs every entry of its Gram matrix ``G`` and cross term ``C`` (or ``b``) with independent
noise of standard deviation ``s``: the release's public ``noise_sd`` (``sqrt(2) Delta_1 / epsilon`` for
Laplace noise of scale ``Delta_1 / epsilon``, ``sigma`` for Gaussian noise, ``sqrt(sum c_k^2 s_k^2)`` for a
weighted sum of releases). The functions here read a view of a release -- class means, target moments,
feature second moments -- and state the variance of each of its entries, which the calibrated estimator
uses as the known part ``v`` of an honest participant's spread. The server computes it from what it
already received; no inverse of the noisy Gram matrix amplifies the noise of any view.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def _check_sd(noise_sd: float) -> float:
    sd = float(noise_sd)
    if not np.isfinite(sd) or sd < 0:
        raise ValueError(f"noise_sd={noise_sd!r} must be a finite number >= 0 (the per-entry noise standard deviation)")
    return sd


def class_means(cross: FloatArray, gram: FloatArray, num_examples: float, noise_sd: float) -> tuple[FloatArray, FloatArray]:
    """A classification release's class means of the features and their variance (noise and sampling),
    both (K, D - 1), from its cross term ``cross`` (K, D), Gram matrix ``gram`` (D, D), public count ``n``
    and per-entry noise sd ``s``.

    With bias-augmented features the class-c feature sum is ``S_c = C[c] + G[:, -1] / K`` and the class
    count ``n_c = S_c[-1]``, floored at three noise sds (a class barely held gets a mean of large stated
    variance, not an unbounded one); ``Var(mean_cj) = s^2 (1 + 1/K^2 + mean_cj^2) / n_c^2 + v_j / n_c``
    with ``v_j`` the participant's total variance of feature j (an upper bound, on average, of the
    within-class one). Label skew changes ``n_c``, not the means; random labels make every row the
    overall mean; flipped labels permute the rows.
    """
    if cross.ndim != 2 or gram.shape != (cross.shape[1], cross.shape[1]):
        raise ValueError(f"cross {cross.shape} and gram {gram.shape} do not match a (K, D) / (D, D) release")
    sd = _check_sd(noise_sd)
    k = cross.shape[0]
    n = max(float(num_examples), 1.0)
    sums = cross + gram[:, -1][None, :] / k
    floor = max(1.0, 3.0 * sd, 1e-3 * n)
    counts = np.maximum(sums[:, -1], floor)
    means = sums[:, :-1] / counts[:, None]
    privacy = sd**2 * (1.0 + 1.0 / k**2 + means * means) / (counts[:, None] ** 2)
    # sampling: a class mean of n_c records varies by (within-class variance) / n_c; the participant's
    # own total variance of each feature (Gram diagonal / n minus its squared mean) bounds it
    total = np.maximum(np.diag(gram)[:-1] / n - (gram[:-1, -1] / n) ** 2, 0.0)
    sampling = total[None, :] / counts[:, None]
    return np.asarray(means, dtype=np.float64), np.asarray(privacy + sampling, dtype=np.float64)


def target_moments(cross: FloatArray, num_examples: float, noise_sd: float) -> tuple[FloatArray, FloatArray]:
    """A regression release's target moments ``b / n`` (the feature-target moments; last entry the mean
    target) and their noise variance, exactly ``s^2 / n^2`` per entry (``n`` public): no inverse of the
    noisy Gram matrix amplifies it (a 2,360-record census participant's solution ``G^+ b`` varies by
    0.2-0.6 per coefficient at epsilon = 1, as much as the coefficients). Random targets remove the
    covariance part, shrunk or exploded targets scale the moments.
    """
    b = np.asarray(cross, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"a regression cross term must be (D,); got shape {b.shape}")
    n = float(num_examples)
    if not (np.isfinite(n) and n >= 1):
        raise ValueError(f"num_examples={num_examples!r} must be a finite number >= 1")
    sd = _check_sd(noise_sd)
    return b / n, np.full(b.shape, (sd / n) ** 2)


def gram_moments(gram: FloatArray, num_examples: float, noise_sd: float) -> tuple[FloatArray, FloatArray]:
    """A release's feature second moments ``G / n`` (upper triangle with the diagonal, D (D + 1) / 2
    entries) and their noise variance ``s^2 / n^2`` (the lower triangle mirrors the upper). A forged entry
    (an off-diagonal set to ``-n``) is far from every honest participant's moments: the energy bounds it."""
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"a Gram matrix must be square; got shape {g.shape}")
    n = float(num_examples)
    if not (np.isfinite(n) and n >= 1):
        raise ValueError(f"num_examples={num_examples!r} must be a finite number >= 1")
    upper = g[np.triu_indices(g.shape[0])] / n
    return upper, np.full(upper.shape, (_check_sd(noise_sd) / n) ** 2)
