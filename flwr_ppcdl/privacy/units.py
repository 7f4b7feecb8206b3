"""Units: the mechanism's normalised weights and an ``nn.Linear`` head's parameters, both directions.

The mechanism works on ``h~ = [phi(x) / c; 1]`` (``c = feature_bound``) and, for regression, on
targets ``y / B``. A linear head acting on ``phi(x)`` directly therefore has

    weight = scale * W[:, :d] / c        bias = scale * W[:, d]

with ``scale = B`` for regression and 1 for classification. Exact when ``||phi(x)|| <= c``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.release import Release

FloatArray = NDArray[np.float64]


def output_scale(task: str, target_bound: float | None) -> float:
    """``B`` for regression, 1 for classification."""
    return float(target_bound) if task == "regression" and target_bound else 1.0


def head_from_normalised(
    weights: ArrayLike, *, task: str, feature_bound: float, target_bound: float | None
) -> tuple[FloatArray, FloatArray]:
    """Normalised FM weights ``(K, D)`` or ``(D,)`` -> ``(weight (K, d), bias (K,))`` of the head."""
    full = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    scale = output_scale(task, target_bound)
    return full[:, :-1] * scale / feature_bound, full[:, -1] * scale


def normalised_from_head(
    weight: ArrayLike, bias: ArrayLike | None, *, task: str, feature_bound: float, target_bound: float | None
) -> FloatArray:
    """The head's ``(weight, bias)`` -> normalised FM weights (``(K, D)`` class-centred, or ``(D,)``).

    Softmax is shift invariant, so classification weights are centred over classes.
    """
    scale = output_scale(task, target_bound)
    w = np.asarray(weight, dtype=np.float64) * feature_bound / scale
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64) / scale
    full = np.concatenate([w, b[:, None]], axis=1)
    if task == "regression":
        return full[0]
    return full - full.mean(axis=0, keepdims=True)


def linear_head_parameters(weights: ArrayLike, release: Release) -> tuple[FloatArray, FloatArray]:
    """Normalised FM weights -> ``(weight, bias)`` of an ``nn.Linear`` acting on the body's output,
    in the units of ``release`` (see the module docstring)."""
    return head_from_normalised(
        weights, task=release.task, feature_bound=release.feature_bound, target_bound=release.target_bound
    )
