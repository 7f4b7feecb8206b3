"""The aggregate itself, layer by layer (pure numpy): the weighted sum (one fused multiply-add per upload
and layer through one reusable buffer), or the coordinate-wise median of a round without a decidable
honest majority."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def weighted_sum(updates: Sequence[Sequence[Any]], weights: Sequence[float] | FloatArray) -> list[NDArray[Any]]:
    """Return ``sum_k weights[k] * updates[k]`` layer by layer (float64 accumulation).

    Uploads with weight 0 are never read, so excluded (e.g. NaN) uploads cannot leak in.
    The result takes the dtype of the first contributing upload's layer; accumulation is
    float64 for small layers and in that dtype for large ones (as Flower's FedAvg does).
    """
    w = np.asarray(weights, dtype=np.float64)
    contributing = [k for k in range(len(updates)) if w[k] > 0]
    if not contributing:
        raise ValueError("weighted_sum needs at least one positive weight")
    out: list[NDArray[Any]] = []
    first = updates[contributing[0]]
    for layer in range(len(first)):
        ref = np.asarray(first[layer])
        # accumulate in float64 for small layers, in the input float dtype for large ones
        dtype = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64
        acc_dtype = np.dtype(np.float64) if ref.size * len(contributing) <= 4_000_000 else np.dtype(dtype)
        acc = np.empty(ref.shape, dtype=acc_dtype)
        # scaled upload goes through one reusable buffer: no per-upload allocation, no
        # float64 copy of float32 uploads (the cast happens inside the ufunc loop)
        np.multiply(ref, acc_dtype.type(w[contributing[0]]), out=acc)
        tmp = np.empty(ref.shape, dtype=acc_dtype) if len(contributing) > 1 else acc
        for k in contributing[1:]:
            np.multiply(np.asarray(updates[k][layer]), acc_dtype.type(w[k]), out=tmp)
            acc += tmp
        out.append(acc.astype(dtype, copy=False))
    return out


_MEDIAN_CHUNK = 1 << 22  # entries (participants x coordinates) per median chunk: bounded memory at any K


def coordinate_median(updates: Sequence[Sequence[Any]], members: Sequence[int]) -> list[NDArray[Any]]:
    """Coordinate-wise median of the uploads ``members``, layer by layer (Flower's FedMedian arithmetic).

    The bounded-influence aggregate of a round without a decidable honest majority: any minority moves
    each coordinate at most within the range of the others' values. Computed in column chunks of the
    uploads' dtype (no ``K x P`` float64 copy); the result takes the first member's dtype.
    """
    if not members:
        raise ValueError("coordinate_median needs at least one upload")
    out: list[NDArray[Any]] = []
    first = updates[members[0]]
    for layer in range(len(first)):
        ref = np.asarray(first[layer])
        flat = [np.asarray(updates[k][layer]).reshape(-1) for k in members]
        size = ref.size
        result = np.empty(size, dtype=np.float64)
        step = max(1, _MEDIAN_CHUNK // len(members))
        for lo in range(0, size, step):
            hi = min(size, lo + step)
            result[lo:hi] = np.median(np.stack([f[lo:hi] for f in flat]), axis=0)
        dtype = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64
        out.append(result.reshape(ref.shape).astype(dtype, copy=False))
    return out
