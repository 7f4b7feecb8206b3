"""The known privacy-noise law of a functional-mechanism release, carried to its solution (pure numpy).

A release perturbs every entry of its Gram matrix ``G`` and cross term ``C`` (or ``b``) with
independent noise of standard deviation ``s``: the release's public ``noise_sd`` (``√2 Δ₁/ε`` for
Laplace noise of scale ``b = Δ₁/ε``, ``σ`` for Gaussian noise, ``sqrt(Σ c_k² s_k²)`` for a weighted
sum of releases). Every function here takes that per-entry standard deviation, whatever the law:
the first-order formulas need only the variance ``s²``. Its solution solves ``W Ĝ / K = C̄`` (Taylor-softmax head, K classes) or
``Ĝ w = b̄`` (regression), so to first order ``δW = (K δC - W δG) Ĝ⁺`` and ``δw = Ĝ⁺ (δb - δG w)``.
Treating the entries of ``δG`` as independent (its upper triangle is; the mirror adds a small
correlation), the variance of every entry of the solution is

    Var δW_ij = s^2 (K^2 + ||W_i||^2) ||Ĝ⁺_{:, j}||^2,     Var δw_j = s^2 (1 + ||w||^2) ||Ĝ⁺_{j, :}||^2.

The calibrated estimator subtracts this from a participant's residual energy before comparing it
with the others' (honest heterogeneity is what is left), so a participant with few records or a small
ε is not mistaken for an unreliable one. The server computes it from what it already received.
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


def solution_noise_variance(
    task: str, pseudo_inverse: FloatArray, weights: FloatArray, noise_sd: float, num_classes: int | None = None
) -> FloatArray:
    """First-order noise variance of every entry of a released statistics' solution.

    Parameters
    ----------
    task : {"classification", "regression"}
    pseudo_inverse : ndarray, shape (D, D)
        ``Ĝ⁺`` of the repaired Gram matrix (symmetric).
    weights : ndarray, shape (K, D) or (D,)
        The solution (normalised units).
    noise_sd : float
        Standard deviation ``s`` of the noise on every released entry (the release's ``noise_sd``;
        variance ``s^2`` for any law).
    num_classes : int, optional
        K (classification).

    Returns
    -------
    ndarray, same shape as ``weights``
    """
    entry = _check_sd(noise_sd) ** 2
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


def class_means(cross: FloatArray, gram: FloatArray, num_examples: float, noise_sd: float) -> tuple[FloatArray, FloatArray]:
    """A classification release's class means of the features, and their variance (noise and sampling).

    With bias-augmented features ``h~ = [h; 1]`` the released cross term is
    ``C[c] = sum_{i in c} h~_i - (1/K) sum_i h~_i`` and the Gram matrix's bias column is
    ``sum_i h~_i``, so the class-c feature sum is ``S_c = C[c] + G[:, -1] / K`` and the class count
    ``n_c = S_c[-1]`` (the bias entry). The class mean is ``S_c / n_c`` on the d feature columns. The
    counts are noisy, so they are floored at three noise standard deviations (a class the
    participant barely has gets a mean of large, stated variance instead of an unbounded one). The
    variance of a class mean is its privacy noise plus its sampling variance,

        Var(mean_cj) = s^2 (1 + 1/K^2 + mean_cj^2) / n_c^2 + v_j / n_c,

    with ``s`` the per-entry noise standard deviation and ``v_j`` the participant's total variance of feature j (Gram diagonal over n minus the
    squared mean: an upper bound, on average, of the within-class variance).

    Label skew changes ``n_c``, not the class means, so honest participants with skewed labels agree
    on them; random labels make every row the overall mean; flipped labels permute the rows.

    Parameters
    ----------
    cross : ndarray, shape (K, D)
    gram : ndarray, shape (D, D)
    num_examples : float
        ``n`` (public under replace-one neighbours).
    noise_sd : float
        Standard deviation ``s`` of the noise on every released entry (the release's ``noise_sd``).

    Returns
    -------
    means, variance : ndarray, shape (K, D - 1)
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
    """A regression release's target moments ``b / n = mean_i h~_i y_i`` and their privacy-noise variance.

    With bias-augmented features ``h~ = [h; 1]`` the released cross term is ``b = sum_i h~_i y_i``, so
    ``b / n`` holds the feature-target moments and, in its last (bias) entry, the mean target. Every
    entry of ``b`` carries independent noise of standard deviation ``s`` and ``n`` is public, so the
    noise variance of each moment is exactly ``s^2 / n^2`` -- no inverse of the noisy Gram matrix
    amplifies it (the solution ``Ĝ⁺ b`` of a 2,360-record census participant at epsilon = 1 varies by
    0.2-0.6 per coefficient, as much as the coefficients themselves). Participants with the same
    relation between features and target agree on the moments up to sampling (part of the honest
    heterogeneity the estimator measures); random targets take them to ``mean(h~) * mean(y)`` (the
    covariance part vanishes), shrunk targets scale them down, exploded ones up.

    Parameters
    ----------
    cross : ndarray, shape (D,)
        The released ``b``.
    num_examples : float
        ``n`` (public under replace-one neighbours).
    noise_sd : float
        Standard deviation ``s`` of the noise on every released entry (the release's ``noise_sd``).

    Returns
    -------
    moments, variance : ndarray, shape (D,)
    """
    b = np.asarray(cross, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"a regression cross term must be (D,); got shape {b.shape}")
    n = float(num_examples)
    if not (np.isfinite(n) and n >= 1):
        raise ValueError(f"num_examples={num_examples!r} must be a finite number >= 1")
    sd = _check_sd(noise_sd)
    return b / n, np.full(b.shape, (sd / n) ** 2)
