"""Public per-record bounding and the floating-point slack of the released sums.

The functional mechanism's sensitivities hold for bounded records: features
``h = clip_l2(x / feature_bound)`` (so ``||h||_2 <= 1``) with a constant bias coordinate appended,
and regression targets ``clip(y, -B, B) / B``. The maps here use only the record itself and public
constants: no data-dependent scaling, no batch statistics.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.validation import check_positive_finite

FloatArray = NDArray[np.float64]

UNIT_ROUNDOFF: float = 2.0**-53
CLIP_MARGIN: float = 2.0**-40
"""Rows are clipped to norm ``1 - CLIP_MARGIN`` so that the true norm of the float row is <= 1."""


def clip_l2(x: ArrayLike, max_norm: float = 1.0) -> FloatArray:
    """Per-record L2 clipping: rescale every row whose norm exceeds ``max_norm``.

    Parameters
    ----------
    x:
        One record ``(d,)`` or records ``(n, d)``; finite real values.
    max_norm:
        Public bound, positive and finite.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape with ``||row||_2 <= max_norm`` in exact arithmetic on the
        returned floats: rows are rescaled to ``max_norm·(1 - 2**-40)``, a margin far above the few
        ulps by which a computed norm can be off, so rounding cannot push a row over the bound.
        Rows already inside that radius are returned unchanged. The map uses only the row itself
        and the public constant (no data-dependent scaling). Overflow-safe for finite input.
    """
    bound = check_positive_finite("max_norm", max_norm)
    arr = np.array(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"clip_l2 expects a record (d,) or records (n, d); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("clip_l2 needs finite input; got a NaN or infinite value")
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if rows.size == 0:
        return arr
    peak = np.max(np.abs(rows), axis=1, keepdims=True)
    safe_peak = np.where(peak > 0, peak, 1.0)
    scaled = rows / safe_peak  # entries in [-1, 1]: the norm below cannot overflow
    target = bound * (1.0 - CLIP_MARGIN)
    # ||row|| = peak * ||scaled||; compare without forming the product (it may overflow).
    with np.errstate(over="ignore"):  # target/peak = inf for a subnormal peak: correctly "not over"
        over = np.linalg.norm(scaled, axis=1) > target / safe_peak[:, 0]
    if over.any():
        unit = scaled[over] / np.linalg.norm(scaled[over], axis=1, keepdims=True)
        rows[over] = unit * target
    return rows.reshape(arr.shape)


def bound_feature_matrix(x: FloatArray, feature_bound: float) -> FloatArray:
    """``[clip_l2(x / feature_bound); 1]`` for a validated finite ``(n, d)`` float64 matrix."""
    scaled = x / feature_bound
    if not np.isfinite(scaled).all():
        raise ValueError(f"features / feature_bound overflowed; feature_bound={feature_bound!r} is too small")
    h = clip_l2(scaled)
    return np.hstack([h, np.ones((h.shape[0], 1))])


def bound_target_vector(y: FloatArray, target_bound: float) -> FloatArray:
    """``clip(y, -B, B) / B`` for validated finite targets."""
    return np.clip(y, -target_bound, target_bound) / target_bound


def summation_slack(num_examples: int, num_coordinates: int) -> float:
    """Bound on how far floating-point summation can move the L1 distance of the released vector.

    Every per-record term of every released coordinate has absolute value <= 1 (``|h~_j h~_l| <= 1``,
    ``|(e_y - 1/K) h~_j| <= 1``, ``|y h~_j| <= 1``). Computing a sum of ``n`` such products in float64,
    in any order and with or without fused multiply-add, errs by at most ``γ_n Σ|terms| <= γ_n·n``
    with ``γ_k = k u / (1 - k u)``, ``u = 2**-53`` (Higham, *Accuracy and Stability of Numerical
    Algorithms*, §3.1). Between two neighbouring datasets each coordinate's computed difference can
    therefore exceed the exact difference by ``2 γ_n n``; over ``m`` coordinates the slack is
    ``2 m γ_{n+1} n`` (``n + 1`` for margin). For ``n = 10^4`` and ``m = 323`` this is about 7e-6.
    """
    k = (num_examples + 1) * UNIT_ROUNDOFF
    if k >= 0.5:
        raise ValueError(f"num_examples={num_examples} too large for the float64 slack bound")
    gamma = k / (1.0 - k)
    return 2.0 * num_coordinates * gamma * num_examples
