"""Sketching the uploads for scoring: coordinate samples, per-layer (per-unit) Gram matrices.

All pairwise quantities the estimators need are functions of the per-layer (per-unit) K x K Gram
matrices of the uploads, so scoring costs one O(K^2 * m) BLAS pass over a random sample of
m <= ``max_coordinates`` coordinates, and no K x P float64 copy is made (one K x m stack per layer
at a time). Scoring products run with BLAS limited to one thread when ``threadpoolctl`` is
available (they are small, and spinning BLAS threads cost more than they save on shared cores).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_BLAS_CONTROLLER: Any = None


def single_thread_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while scoring (when ``threadpoolctl`` is installed).

    The scoring products are small (K x m by m x K with m <= ``max_coordinates``): a
    multi-threaded OpenBLAS gains little on them, while its spinning worker threads cost
    several times the whole aggregation when cores are shared (measured 2-10x slower on a
    loaded 2-core host). Without ``threadpoolctl`` (an optional dependency, e.g. via
    scikit-learn) BLAS runs with its default threads; set ``OPENBLAS_NUM_THREADS`` instead.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except Exception:  # noqa: BLE001 - optional speed-up only
            _BLAS_CONTROLLER = False
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    try:
        return cast(contextlib.AbstractContextManager[Any], _BLAS_CONTROLLER.limit(limits=1, user_api="blas"))
    except Exception:  # noqa: BLE001
        return contextlib.nullcontext()


UNIT_BUDGET = 4_000_000  # float64 entries of all per-unit K x K Grams together (32 MB)
_BLOCK = 64  # coordinates per sampled block (256 bytes of float32: one or a few cache lines)


def _sample_blocks(size: int, m: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """About ``m`` coordinates of ``range(size)`` as random circular blocks of ``_BLOCK``.

    Block starts are uniform (with replacement) and blocks wrap around, so every coordinate
    has the same inclusion probability (the sample stays unbiased for sums of squares and
    inner products), while reads are contiguous: a gather of ``m`` scattered coordinates from
    each of K large uploads is memory-latency bound, contiguous blocks are not.
    """
    blen = min(_BLOCK, size)
    starts = np.sort(rng.integers(0, size, size=max(1, -(-m // blen))))
    return ((starts[:, None] + np.arange(blen)) % size).reshape(-1)


@dataclass
class LayerStats:
    """Sufficient statistics of one layer's scoring vectors (all float64).

    ``gram_c`` is the K x K Gram matrix of the centred vectors; ``unit_raw`` holds one K x K
    Gram matrix of the raw (uncentred) vectors per *unit* (a group of output rows, see
    :func:`_unit_ids`), shape (U, K, K), and ``unit_size`` the number of scored coordinates
    of each unit. The raw Gram of the whole layer is ``unit_raw.sum(0)``.
    """

    gram_c: FloatArray
    unit_raw: FloatArray
    unit_size: FloatArray


def _unit_ids(shape: tuple[int, ...], cols: NDArray[np.intp], width: int, max_units: int) -> NDArray[np.intp]:
    """Unit index of each scored coordinate (flat index ``cols``) of a layer of ``shape``.

    A unit is a group of consecutive output rows (axis 0 of a 2-D+ layer: an output unit of
    a dense layer, a filter of a convolution, a class row of a linear head). Rows are merged
    so there are at most ``max_units`` units and, on average, at least 8 scored
    coordinates per unit; a 1-D layer is one unit.
    """
    if len(shape) < 2 or shape[0] <= 1 or max_units <= 1:
        return np.zeros(len(cols), dtype=np.intp)
    rows = int(shape[0])
    row_len = max(1, int(np.prod(shape[1:])))
    per_row = width / rows
    group = max(-(-rows // max_units), int(math.ceil(8.0 / per_row)) if per_row > 0 else rows, 1)
    return np.asarray((cols // row_len) // group, dtype=np.intp)


def layer_grams(
    updates: Sequence[Sequence[Any]],
    idx: Sequence[int],
    base_weights: FloatArray,
    reference: Sequence[Any] | None,
    max_coordinates: int | None,
    rng: np.random.Generator,
    max_units: int = 1,
) -> list[LayerStats]:
    """Per-layer Gram matrices of the scoring vectors (see :class:`LayerStats`).

    Scoring vectors are ``update - reference`` restricted, for large models, to a random
    sample of about ``max_coordinates`` coordinates in all (proportional per layer, drawn as
    random contiguous blocks, see :func:`_sample_blocks`): squared distances and inner
    products on a uniform coordinate sample are unbiased (rescaled) estimates of the full
    ones, and the sample is drawn afresh each call so an uploader cannot know where it is
    looked at. Centring on the base-weighted mean keeps float32 products accurate; raw
    Grams (for alignment) are rebuilt from centred ones. The per-unit Grams sum to the
    layer's, so splitting into units costs no extra arithmetic.
    """
    n_layers = len(updates[idx[0]])
    shapes = [tuple(np.shape(updates[idx[0]][layer])) for layer in range(n_layers)]
    sizes = [int(np.prod(sh)) if sh else 1 for sh in shapes]
    total = sum(sizes)
    stats: list[LayerStats] = []
    k = len(idx)
    for layer in range(n_layers):
        size = sizes[layer]
        take: NDArray[np.intp] | None = None
        if max_coordinates is not None and total > max_coordinates and size > 0:
            m = max(1, int(round(max_coordinates * size / total)))
            if m < size:
                take = np.sort(_sample_blocks(size, m, rng))
        width = size if take is None else len(take)
        # float64 for small stacks; float32 BLAS above (centring keeps its products accurate,
        # and a float64 K x K Gram over 10^4+ columns costs 5-20x as much on OpenBLAS)
        dtype = np.float64 if k * width <= 1_000_000 else np.float32
        stack = np.empty((k, width), dtype=dtype)
        ref = None
        if reference is not None:
            ref = np.asarray(reference[layer]).reshape(-1)
            ref = ref if take is None else ref[take]
        for j, i in enumerate(idx):
            row = np.asarray(updates[i][layer]).reshape(-1)
            row = row if take is None else row[take]
            stack[j] = row if ref is None else np.subtract(row, ref, dtype=np.float64)
        mean: NDArray[Any] = np.matmul(base_weights.astype(dtype), stack)
        stack -= mean
        cols = np.arange(width, dtype=np.intp) if take is None else take
        units = _unit_ids(shapes[layer], cols, width, max_units)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(units)) + 1, [width]))
        n_units = len(bounds) - 1
        unit_raw = np.empty((n_units, k, k), dtype=np.float64)
        unit_size = np.empty(n_units, dtype=np.float64)
        gram_c = np.zeros((k, k), dtype=np.float64)
        for u in range(n_units):
            lo, hi = int(bounds[u]), int(bounds[u + 1])
            part = stack[:, lo:hi]
            mu = mean[lo:hi]
            g = (part @ part.T).astype(np.float64)
            g = (g + g.T) / 2.0
            cross = (part @ mu).astype(np.float64)  # <c_i, m>
            m2 = float(np.dot(mu.astype(np.float64), mu.astype(np.float64)))
            gram_c += g
            unit_raw[u] = g + cross[:, None] + cross[None, :] + m2
            unit_size[u] = hi - lo
        del stack
        stats.append(LayerStats(gram_c, unit_raw, unit_size))
    return stats
