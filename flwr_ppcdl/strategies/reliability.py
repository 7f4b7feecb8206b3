"""Reliability weights for federated aggregation (pure numpy; no Flower, no Ray).

Privacy
-------
Everything here is post-processing of what participants already released (their
differentially private parameters) plus, optionally, losses that the *server* computes on
data it owns. No participant data is read, so reliability estimation costs no privacy
budget (see docs: functional-mechanism.md §5).

Estimators
----------
``"truth_discovery"`` (default)
    CRH-style truth discovery. Start from the (capped) sample-weighted mean; repeat:
    per-layer normalised squared distance of every upload to the current estimate, a
    robust noise scale (the median distance), weights
    ``r_k = exp(-sharpness * max(z_k - tolerance, 0))`` with ``z_k = d_k / median(d)``
    (Huber-like: no penalty inside the typical spread, exponential decay outside), and
    the estimate becomes the weighted mean; stop when the weights settle. With
    ``alignment`` (default) two gates multiply ``r_k``:

    * a *cosine* gate inside the iterations: the (clipped, median-normalised) cosine between
      the upload and the leave-one-out estimate, so uploads without signal relative to the
      reference (random labels on deltas) lose weight even when they form a tight cluster;
    * a *per-unit alignment* gate, computed against the consensus of the converged
      iteration and applied as a prior to two further runs. Units are groups of output rows
      (a class row of a linear head, an output neuron, a filter). The gate measures how much
      of an upload's energy lies along the consensus, unit by unit, above what a
      signal-free upload would show by chance. Why per unit: under label skew (Dirichlet
      non-IID) an honest participant's head is far from the consensus and its layer-level
      cosine is diluted by the rows of classes it barely has, so distance and cosine mistake
      it for a random-label participant (whose head sits near zero, close to everyone). Its
      well-represented rows still point along the consensus rows, a random-label head's do
      not. The gate is trusted only as far as the typical excess alignment stands out of
      its chance fluctuation (uploads dominated by privacy noise leave it neutral).
``"server_data"``
    Scores every upload by a loss the server computed on its own data (lower is better):
    ``r_k = exp(-sharpness * max(L_k / min_j L_j - tolerance, 0))`` (positive losses; for
    non-positive ones the excess over the best loss goes through the median rule). Default
    ``tolerance`` 1.2 (see :data:`DEFAULT_TOLERANCE` and :func:`estimate_reliability`).
``"fedavg"`` / ``"uniform"``
    Sample-count weights (FedAvg) or equal weights; useful as baselines and for tests.

All pairwise quantities of truth discovery are functions of the per-layer (per-unit) K x K
Gram matrices of the uploads, so the iterations cost O(K^2 * L) after one O(K^2 * m) BLAS
pass over a random sample of m <= ``max_coordinates`` coordinates, and no K x P float64 copy
is made (one K x m stack per layer at a time).

Speed
-----
The aggregate itself (:func:`weighted_sum`) is one fused multiply-add per upload and layer
in the uploads' dtype (float64 for small layers), through one reusable buffer; validation
is one pass per array (:func:`_value_problem`); the adapters read Flower's ``.npy`` bytes
through zero-copy read-only views (``_arrays.npy_view``); scoring products run with BLAS
limited to one thread when ``threadpoolctl`` is available (they are small, and spinning
BLAS threads cost more than they save on shared cores). Measured at K = 100, P = 10^6
float32: about 1.0-1.5x Flower FedAvg's ``aggregate_train`` (``benchmarks/aggregation_speed.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_TOLERANCE",
    "METHODS",
    "SAMPLE_WEIGHTINGS",
    "ReliabilityMemory",
    "ReliabilityResult",
    "estimate_reliability",
    "reliability_weights",
    "validate_updates",
    "weighted_sum",
]

METHODS = ("truth_discovery", "server_data", "fedavg", "uniform")
# Default ``tolerance`` per method (``tolerance=None``); see estimate_reliability's docstring.
DEFAULT_TOLERANCE = {"truth_discovery": 1.5, "server_data": 1.2}
SAMPLE_WEIGHTINGS = ("linear", "sqrt", "uniform")

FloatArray = NDArray[np.float64]


@dataclass
class ReliabilityResult:
    """Outcome of :func:`estimate_reliability`.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Final aggregation weights (>= 0, sum to 1; all zero only if nothing was valid).
    reliability : ndarray, shape (K,)
        Reliability factor in [0, 1] before sample counts and caps (0 for excluded).
    sample_weights : ndarray, shape (K,)
        Normalised sample-count factor after capping (0 for excluded).
    distances : ndarray, shape (K,)
        Per-layer-normalised distance to the final estimate (truth discovery), or excess
        server loss (server-data); ``nan`` for excluded uploads.
    excluded : dict[int, str]
        Index of each excluded upload and the reason.
    iterations : int
        Truth-discovery iterations run (0 for other methods).
    """

    weights: FloatArray
    reliability: FloatArray
    sample_weights: FloatArray
    distances: FloatArray
    excluded: dict[int, str] = field(default_factory=dict)
    iterations: int = 0


# --------------------------------------------------------------------------- validation


def validate_updates(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    *,
    max_abs: float = 1e12,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
) -> dict[int, str]:
    """Find uploads that cannot be aggregated.

    Parameters
    ----------
    updates : list of list of array-like
        One list of arrays per participant.
    num_examples : sequence of numbers
        Claimed example counts, one per participant.
    max_abs : float
        Any entry with absolute value above this is "absurd" (e.g. 1e30) and excludes the upload.
    expected_shapes : list of tuple, optional
        Required layer shapes (e.g. those of the global model). Without it, the most common
        shape signature among the uploads is taken as the reference.

    Returns
    -------
    dict[int, str]
        Index -> human-readable reason, for each upload to exclude.
    """
    reasons: dict[int, str] = {}
    if len(num_examples) != len(updates):
        raise ValueError(
            f"num_examples has {len(num_examples)} entries but there are {len(updates)} updates"
        )
    signatures: list[tuple[tuple[int, ...], ...] | None] = []
    for k, upd in enumerate(updates):
        sig: tuple[tuple[int, ...], ...] | None = None
        try:
            arrays = [np.asarray(a) for a in upd]
            if not all(np.issubdtype(a.dtype, np.number) for a in arrays):
                reasons[k] = "non-numeric dtype"
            elif any(np.issubdtype(a.dtype, np.complexfloating) for a in arrays):
                reasons[k] = "complex dtype"
            else:
                sig = tuple(a.shape for a in arrays)
        except (TypeError, ValueError) as exc:
            reasons[k] = f"unreadable arrays ({exc})"
        signatures.append(sig)
    if expected_shapes is not None:
        reference = tuple(tuple(s) for s in expected_shapes)
    else:
        counts: dict[tuple[tuple[int, ...], ...], int] = {}
        for sig in signatures:
            if sig is not None:
                counts[sig] = counts.get(sig, 0) + 1
        reference = max(counts, key=lambda s: counts[s]) if counts else ()
    for k, upd in enumerate(updates):
        if k in reasons:
            continue
        if signatures[k] != reference:
            reasons[k] = f"shapes {signatures[k]} differ from expected {reference}"
            continue
        for layer, a in enumerate(upd):
            problem = _value_problem(np.asarray(a), max_abs)
            if problem is not None:
                reasons[k] = f"{problem} in array {layer}"
                break
        if k in reasons:
            continue
        try:
            n = float(num_examples[k])
        except (TypeError, ValueError):
            reasons[k] = f"example count {num_examples[k]!r} is not a number"
            continue
        if not math.isfinite(n) or n <= 0:
            reasons[k] = f"example count {num_examples[k]!r} is not positive"
    return reasons


def _value_problem(arr: NDArray[Any], max_abs: float) -> str | None:
    """Why ``arr`` cannot be aggregated (non-finite or absurd entries), or None.

    Fast path (float32/float64): one pass (einsum; no BLAS threads woken) computes ``s = x . x``. Squares are >= 0, so
    ``s`` is NaN/Inf whenever some entry is, and ``max|x_i| <= sqrt(s)``; a finite ``s``
    with ``sqrt(s)`` (with a rounding margin) within ``max_abs`` therefore proves the array
    clean. Only arrays that fail the screen (bad ones, or large norms) take the exact
    ``max(|x|)`` pass, which names the problem. No copy of a contiguous array is made.
    """
    if not arr.size:
        return None
    if arr.dtype in (np.float32, np.float64):
        flat = arr.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            sq = float(np.einsum("i,i->", flat, flat))
        if math.isfinite(sq) and math.sqrt(sq) * (1.0 + 1e-3) <= max_abs:
            return None
    with np.errstate(over="ignore", invalid="ignore"):
        peak = float(np.max(np.abs(arr)))
    if not math.isfinite(peak):
        return "non-finite values (NaN/Inf)"
    if peak > max_abs:
        return f"absurd magnitude (> {max_abs:g})"
    return None


# --------------------------------------------------------------------------- helpers


def _sample_factor(
    counts: FloatArray, valid: NDArray[np.bool_], weighting: str, count_cap: float | None
) -> FloatArray:
    """Sample-count factor: cap counts at ``count_cap * median``, then transform, normalise."""
    s = np.zeros_like(counts)
    if not np.any(valid):
        return s
    c = counts[valid].astype(np.float64)
    if count_cap is not None:
        c = np.minimum(c, count_cap * float(np.median(c)))
    if weighting == "sqrt":
        c = np.sqrt(c)
    elif weighting == "uniform":
        c = np.ones_like(c)
    s[valid] = c / c.sum()
    return s


def _cap_shares(w: FloatArray, max_share: float | None) -> FloatArray:
    """Water-filling: no entry above ``max_share`` of the total (when feasible), sum 1."""
    total = w.sum()
    if total <= 0:
        return w
    w = w / total
    positive = int(np.count_nonzero(w > 0))
    if max_share is None or positive * max_share < 1.0:
        return w  # infeasible (e.g. one participant): leave as is
    for _ in range(len(w)):
        over = w > max_share + 1e-15
        if not np.any(over):
            break
        excess = float(np.sum(w[over] - max_share))
        w[over] = max_share
        free = (~over) & (w > 0) & (w < max_share)
        if not np.any(free):
            break
        w[free] += excess * w[free] / w[free].sum()
    return w / w.sum()


def _robust_weights(dist: FloatArray, sharpness: float, tolerance: float) -> FloatArray:
    """Map distances to reliability in [0, 1] relative to the median (robust noise scale)."""
    scale = float(np.median(dist))
    if not np.isfinite(scale) or scale <= 0:
        positive = dist[dist > 0]
        if positive.size == 0:
            return np.ones_like(dist)  # all identical: everyone equally reliable
        scale = float(np.min(positive))
    z = dist / scale
    return np.asarray(np.exp(-sharpness * np.maximum(z - tolerance, 0.0)), dtype=np.float64)


_BLAS_CONTROLLER: Any = None


def _single_thread_blas() -> contextlib.AbstractContextManager[Any]:
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


_UNIT_BUDGET = 4_000_000  # float64 entries of all per-unit K x K Grams together (32 MB)
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
class _LayerStats:
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


def _layer_grams(
    updates: Sequence[Sequence[Any]],
    idx: Sequence[int],
    base_weights: FloatArray,
    reference: Sequence[Any] | None,
    max_coordinates: int | None,
    rng: np.random.Generator,
    max_units: int = 1,
) -> list[_LayerStats]:
    """Per-layer Gram matrices of the scoring vectors (see :class:`_LayerStats`).

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
    stats: list[_LayerStats] = []
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
        stats.append(_LayerStats(gram_c, unit_raw, unit_size))
    return stats


def weighted_sum(
    updates: Sequence[Sequence[Any]], weights: Sequence[float] | FloatArray
) -> list[NDArray[Any]]:
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


# --------------------------------------------------------------------------- estimator


def _check_options(
    method: str,
    sample_weighting: str,
    sharpness: float,
    tolerance: float,
    count_cap: float | None,
    max_share: float | None,
    max_iter: int,
    tol: float,
    max_coordinates: int | None = None,
) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if sample_weighting not in SAMPLE_WEIGHTINGS:
        raise ValueError(f"sample_weighting={sample_weighting!r} is not one of {SAMPLE_WEIGHTINGS}")
    if not (math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness={sharpness!r} must be a positive finite number")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance!r} must be a non-negative finite number")
    if count_cap is not None and not (math.isfinite(count_cap) and count_cap >= 1):
        raise ValueError(f"count_cap={count_cap!r} must be None or a finite number >= 1")
    if max_share is not None and not (0 < max_share <= 1):
        raise ValueError(f"max_share={max_share!r} must be None or in (0, 1]")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r} must be an integer >= 1")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a positive finite number")
    if max_coordinates is not None and not (isinstance(max_coordinates, int) and max_coordinates >= 1):
        raise ValueError(f"max_coordinates={max_coordinates!r} must be None or an integer >= 1")


def estimate_reliability(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    *,
    method: str = "truth_discovery",
    sharpness: float = 2.0,
    tolerance: float | None = None,
    alignment: bool = True,
    sample_weighting: str = "linear",
    count_cap: float | None = 10.0,
    max_share: float | None = 0.5,
    prior: Sequence[float] | NDArray[Any] | None = None,
    server_losses: Sequence[float] | NDArray[Any] | None = None,
    expected_shapes: Sequence[tuple[int, ...]] | None = None,
    max_abs: float = 1e12,
    max_iter: int = 50,
    tol: float = 1e-7,
    reference: Sequence[Any] | None = None,
    max_coordinates: int | None = 50_000,
    seed: int | np.random.Generator | None = None,
    alignment_units: int = 64,
    alignment_relax: float = 0.5,
) -> ReliabilityResult:
    """Estimate reliability and aggregation weights of K uploads.

    Parameters
    ----------
    updates : list of list of array-like
        One list of arrays per participant: parameters, or deltas to the current global
        model (deltas are needed for ``alignment``).
    num_examples : sequence of numbers
        Claimed example counts (untrusted). Non-positive or non-finite counts exclude the upload.
    method : {"truth_discovery", "server_data", "fedavg", "uniform"}
        Reliability estimator (see module docstring).
    sharpness : float, default 2.0
        Decay rate of ``exp(-sharpness * max(z - tolerance, 0))``, ``z`` = distance over the
        median distance. Plain CRH log-weights suppress weakly; this decays exponentially.
    tolerance : float or None, default None
        None picks the method's default (:data:`DEFAULT_TOLERANCE`). Truth discovery
        (1.5): distances up to ``tolerance`` times the median carry no penalty, so honest
        participants within the typical (non-IID + noise) spread keep their share. Server
        data (1.2): losses up to ``tolerance`` times the best upload's loss carry no penalty.
        1.2 rather than 1.5: a random-label or flipped-label model's server loss is only
        1.2-2x the best honest one's, so 1.5 left them 0.3-0.4 of their FedAvg share; 1.2
        halves that in IID settings, while 1.1 (slightly sharper still) cut honest non-IID
        minorities, whose loss on the server's class mix is naturally higher, to about half
        their share (``benchmarks/reliability_measure.py``).
    alignment : bool, default True
        Gate by agreement with the leave-one-out estimate: whole-layer cosine during the
        iterations, then the per-unit alignment gate (module docstring).
    sample_weighting : {"linear", "sqrt", "uniform"}, default "linear"
        How claimed counts enter (``linear`` = FedAvg). Combined multiplicatively with reliability.
    count_cap : float or None, default 10.0
        Counts are clipped at ``count_cap`` times the median count before use.
    max_share : float or None, default 0.5
        No single participant gets more than this share of the final weight (water-filling),
        whenever at least ``1 / max_share`` participants have positive weight.
    prior : sequence of float, optional
        Multiplicative prior per upload (e.g. from :class:`ReliabilityMemory`); 1 = neutral.
    server_losses : sequence of float, optional
        Losses of each upload on server-held data (lower is better); required by ``server_data``.
    expected_shapes : list of tuple, optional
        Required layer shapes; see :func:`validate_updates`.
    max_abs : float, default 1e12
        Entries above this magnitude exclude the upload.
    max_iter, tol : int, float
        Truth-discovery iteration limit and convergence threshold on the weights.
    reference : list of array-like, optional
        Global model the uploads started from; truth discovery then scores
        ``update - reference`` (deltas) without materialising the deltas.
    max_coordinates : int or None, default 50_000
        Score on a fresh uniform random sample of at most this many coordinates (the
        aggregate always uses every coordinate). None scores on all coordinates.
    seed : int, Generator or None
        Randomness of the coordinate sample (None: fresh OS entropy, unpredictable to uploaders).
    alignment_units : int, default 64
        At most this many units (groups of consecutive output rows, axis 0) per layer for
        the per-unit alignment gate; rows are merged so that a unit has on average >= 8
        scored coordinates. 1 turns the per-unit gate off (whole-layer cosine only). Cost:
        a (units, K, K) float64 array per layer; the units per layer are lowered so that
        all layers together stay within 4e6 entries (32 MB), e.g. 400 units at K = 100.
    alignment_relax : float in (0, 1], default 0.5
        The per-unit gate is ``clip(excess / (alignment_relax * typical), 0, 1)`` with
        ``typical`` the weighted median excess alignment: uploads aligned at least half as
        well as the typical one are not penalised (honest skewed participants), uploads at
        chance level get 0. Larger values penalise weak alignment more.

    Returns
    -------
    ReliabilityResult
    """
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE.get(method, 1.5)
    _check_options(
        method, sample_weighting, sharpness, tolerance, count_cap, max_share, max_iter, tol, max_coordinates
    )
    if not (isinstance(alignment_units, int) and alignment_units >= 1):
        raise ValueError(f"alignment_units={alignment_units!r} must be an integer >= 1")
    if not (math.isfinite(alignment_relax) and 0 < alignment_relax <= 1):
        raise ValueError(f"alignment_relax={alignment_relax!r} must be in (0, 1]")
    n_up = len(updates)
    excluded = validate_updates(updates, num_examples, max_abs=max_abs, expected_shapes=expected_shapes)
    counts = np.zeros(n_up, dtype=np.float64)
    for k in range(n_up):
        if k not in excluded:
            counts[k] = float(num_examples[k])
    pri = np.ones(n_up, dtype=np.float64)
    if prior is not None:
        pri = np.asarray(prior, dtype=np.float64).reshape(-1)
        if pri.shape != (n_up,):
            raise ValueError(f"prior has shape {pri.shape}, expected ({n_up},)")
        bad_prior = ~np.isfinite(pri) | (pri < 0)
        pri = np.where(bad_prior, 0.0, pri)
    losses: FloatArray | None = None
    if method == "server_data":
        if server_losses is None:
            raise ValueError("method='server_data' needs server_losses (one loss per upload)")
        losses = np.asarray(server_losses, dtype=np.float64).reshape(-1)
        if losses.shape != (n_up,):
            raise ValueError(f"server_losses has shape {losses.shape}, expected ({n_up},)")
        for k in range(n_up):
            if k not in excluded and not np.isfinite(losses[k]):
                excluded[k] = f"server loss {losses[k]!r} is not finite"
    valid = np.array([k not in excluded for k in range(n_up)], dtype=bool)
    distances = np.full(n_up, np.nan)
    reliability = np.zeros(n_up)
    sample = _sample_factor(counts, valid, sample_weighting, count_cap)
    if not np.any(valid):
        return ReliabilityResult(np.zeros(n_up), reliability, sample, distances, excluded, 0)

    idx = np.flatnonzero(valid)
    s_v = sample[idx]
    p_v = pri[idx]
    iterations = 0
    if method in ("fedavg", "uniform"):
        r_v = np.ones(len(idx))
        if method == "uniform":
            s_v = np.full(len(idx), 1.0 / len(idx))
            sample[idx] = s_v
    elif method == "server_data":
        assert losses is not None
        lv = losses[idx]
        best = float(np.min(lv))
        if best > 0:
            # losses are on a ratio scale: compare each to the best upload's loss
            ratio = lv / best
            distances[idx] = ratio
            r_v = np.exp(-sharpness * np.maximum(ratio - tolerance, 0.0))
        else:
            excess = lv - best
            distances[idx] = excess
            r_v = _robust_weights(excess, sharpness, tolerance)
    else:
        r_v, d_v, iterations = _truth_discovery(
            updates, idx, s_v * p_v, sharpness, tolerance, alignment, max_iter, tol,
            reference, max_coordinates, np.random.default_rng(seed),
            alignment_units, alignment_relax,
        )
        distances[idx] = d_v
    reliability[idx] = r_v
    w = np.zeros(n_up)
    w[idx] = s_v * p_v * r_v
    if w.sum() <= 0:  # prior/reliability wiped everyone out: fall back to sample weights
        w[idx] = s_v
    w = _cap_shares(w, max_share)
    return ReliabilityResult(w, reliability, sample, distances, excluded, iterations)


def _truth_discovery(
    updates: Sequence[Sequence[Any]],
    idx: NDArray[np.intp],
    base: FloatArray,
    sharpness: float,
    tolerance: float,
    alignment: bool,
    max_iter: int,
    tol: float,
    reference: Sequence[Any] | None,
    max_coordinates: int | None,
    rng: np.random.Generator,
    alignment_units: int = 64,
    alignment_relax: float = 0.5,
) -> tuple[FloatArray, FloatArray, int]:
    """CRH on per-layer Gram matrices; return (reliability, distance, iterations).

    Stage 1 iterates distances (and, with ``alignment``, the whole-layer cosine gate) to a
    fixed point. With ``alignment`` and ``alignment_units > 1``, stage 2 then computes the
    per-unit alignment gate against the stage-1 consensus, which is already cleaned of most
    unreliable uploads (computed against the initial FedAvg mean, the gate would inherit its
    contamination), and re-runs the iteration with the gate as a prior; twice, so the gate
    is also computed once against a consensus it helped clean.
    """
    k = len(idx)
    base = base / base.sum() if base.sum() > 0 else np.full(k, 1.0 / k)
    if k == 1:
        return np.ones(1), np.zeros(1), 0
    units = 1
    if alignment:
        # (units, K, K) float64 per layer: keep all layers together within ~32 MB
        n_layers = max(1, len(updates[idx[0]]))
        budget = max(n_layers, _UNIT_BUDGET // (k * k))
        units = max(1, min(alignment_units, budget // n_layers))
    with _single_thread_blas():
        stats = _layer_grams(updates, list(idx), base, reference, max_coordinates, rng, max_units=units)
    raws = [st.unit_raw.sum(axis=0) for st in stats] if alignment else []
    r, dist, w, it = _crh(stats, raws, base, base, sharpness, tolerance, max_iter, tol)
    if alignment and alignment_units > 1:
        for _ in range(2):
            gate = _alignment_gate(stats, w, alignment_relax)
            if not np.any(gate > 0):
                break
            r_s, dist, w, it_s = _crh(stats, raws, base * gate, w, sharpness, tolerance, max_iter, tol)
            r = r_s * gate
            it += it_s
    return r, dist, it


def _crh(
    stats: list[_LayerStats],
    raws: list[FloatArray],
    base: FloatArray,
    start: FloatArray,
    sharpness: float,
    tolerance: float,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, FloatArray, FloatArray, int]:
    """One CRH fixed point from weights ``start``; return (reliability, distance, weights, iterations).

    All layers are processed at once on stacked (L, K, K) Grams, so an iteration costs a
    few numpy calls whatever the number of layers.
    """
    k = len(base)
    base = base / base.sum() if base.sum() > 0 else np.full(k, 1.0 / k)
    w = start / start.sum() if start.sum() > 0 else base.copy()
    grams = np.stack([st.gram_c for st in stats])  # (L, K, K)
    diag_c = np.einsum("lkk->lk", grams)
    raw = np.stack(raws) if raws else None
    diag_raw = np.einsum("lkk->lk", raw) if raw is not None else None
    r = np.ones(k)
    dist = np.zeros(k)
    it = 0
    while it < max_iter:
        it += 1
        gw = grams @ w  # (L, K)
        d = np.maximum(diag_c - 2.0 * gw + (gw @ w)[:, None], 0.0)
        scale = np.median(d, axis=1)
        scale = np.where(scale > 0, scale, d.mean(axis=1))
        used = scale > 1e-300  # a layer identical across uploads carries no evidence
        if np.any(used):
            dist = (d[used] / scale[used, None]).mean(axis=0)
        else:
            dist = np.zeros(k)
        r = _robust_weights(dist, sharpness, tolerance)
        if raw is not None and diag_raw is not None:
            r = r * _cosine_gate(raw, diag_raw, w)
        new_w = base * r
        new_w = new_w / new_w.sum() if new_w.sum() > 0 else base.copy()
        converged = float(np.max(np.abs(new_w - w))) < tol
        w = new_w
        if converged:
            break
    return r, dist, w, it


def _cosine_gate(raw: FloatArray, diag: FloatArray, w: FloatArray) -> FloatArray:
    """Mean over layers of cos(u_k, leave-one-out estimate), clipped and median-normalised.

    ``raw``: (L, K, K) raw Grams; ``diag``: their diagonals, (L, K).
    """
    k = len(w)
    gw = raw @ w  # (L, K)
    ee = gw @ w  # (L,)
    num = gw - w * diag
    den2 = np.maximum(ee[:, None] - 2.0 * w * gw + w * w * diag, 0.0)
    denom = np.sqrt(np.maximum(diag, 0.0) * den2)
    pos = denom > 0
    layer_used = np.any(pos, axis=1)
    if not np.any(layer_used):
        return np.ones(k)
    cos = np.where(pos, num / np.where(pos, denom, 1.0), 0.0)[layer_used].mean(axis=0)
    positive = cos[cos > 0]
    if positive.size == 0:
        return np.ones(k)
    return np.asarray(np.clip(cos / float(np.median(positive)), 0.0, 1.0), dtype=np.float64)


def _weighted_median(values: FloatArray, weights: FloatArray) -> float:
    """Median of ``values`` under ``weights`` (>= 0, not all zero)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    pos = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(values[order][min(pos, len(order) - 1)])


def _alignment_gate(stats: list[_LayerStats], w: FloatArray, relax: float) -> FloatArray:
    """Gate in [0, 1] from per-unit agreement with the leave-one-out estimate.

    For upload k and each unit u (a group of output rows) let ``p_ku`` be the projection of
    the upload's unit vector onto the leave-one-out estimate's (``sum_{j != k} w_j x_j``),
    kept only when positive. The *aligned energy fraction* ``sum_u p_ku^2 / ||x_k||^2``
    minus its chance level for a signal-free (isotropic) upload, ``sum_u ||x_ku||^2 /
    (2 n_u) / ||x_k||^2`` with ``n_u`` scored coordinates in unit u, is the upload's
    *excess alignment* (averaged over layers). A random-label or pure-noise upload sits at
    about 0 whatever its norm or its distance to the others; an honest upload from skewed
    (non-IID) data still has rows (its well-represented classes / features) aligned with
    the consensus. Per-unit rather than whole-layer projections matter there: a skewed
    participant's layer-level cosine is diluted by its off rows, its good rows' are not.
    The gate is ``clip(excess / (relax * reference), 0, 1)`` with ``reference`` the
    ``w``-weighted median excess (no penalty from ``relax`` times the typical excess up).
    """
    k = len(w)
    excess = np.zeros(k)
    noise2 = np.zeros(k)
    used = 0
    for st in stats:
        diag = np.einsum("ukk->uk", st.unit_raw)  # ||x_ku||^2, shape (U, K)
        energy = diag.sum(axis=0)
        if not np.any(energy > 0):
            continue
        gw = st.unit_raw @ w  # <x_ku, m_u>, shape (U, K)
        ee = gw @ w  # ||m_u||^2
        num = gw - w * diag  # <x_ku, m_u - w_k x_ku>
        den = ee[:, None] - 2.0 * w * gw + w * w * diag  # ||m_u - w_k x_ku||^2
        ok = (num > 0) & (den > 0)
        p2 = np.where(ok, num * num / np.where(ok, den, 1.0), 0.0)  # positive projections only
        chance = (diag / (2.0 * st.unit_size[:, None])).sum(axis=0)
        safe = np.where(energy > 0, energy, 1.0)
        excess += np.where(energy > 0, (p2.sum(axis=0) - chance) / safe, 0.0)
        # std of the aligned energy of a signal-free upload: Var(max(z, 0)^2) = 5/4
        noise2 += np.where(energy > 0, 1.25 * ((diag / st.unit_size[:, None]) ** 2).sum(axis=0) / safe**2, 0.0)
        used += 1
    if not used:
        return np.ones(k)
    excess /= used
    noise = np.sqrt(noise2) / used
    reference = _weighted_median(excess, w) if w.sum() > 0 else float(np.median(excess))
    if not reference > 0:
        return np.ones(k)  # no consensus signal to align with: no evidence either way
    gate = np.clip(excess / (relax * reference), 0.0, 1.0)
    # Trust the gate only as far as the typical excess stands out of chance fluctuations:
    # fully from 4 noise standard deviations up, not at all below 2 (all uploads noisy).
    typical_noise = float(np.median(noise))
    if typical_noise > 0:
        confidence = min(max((reference / typical_noise - 2.0) / 2.0, 0.0), 1.0)
        gate = 1.0 - confidence * (1.0 - gate)
    return np.asarray(gate, dtype=np.float64)


def reliability_weights(
    updates: Sequence[Sequence[Any]],
    num_examples: Sequence[Any] | NDArray[Any],
    **options: Any,
) -> FloatArray:
    """Aggregation weights of K uploads: non-negative, summing to 1.

    Thin wrapper around :func:`estimate_reliability` (same keyword options) that returns
    only the weights. Invalid uploads (NaN/Inf, wrong shapes, absurd values, non-positive
    counts) get weight 0. If no upload is valid the result is all zeros (nothing to sum to 1);
    callers must then keep the previous model.
    """
    return estimate_reliability(updates, num_examples, **options).weights


# --------------------------------------------------------------------------- memory


class ReliabilityMemory:
    """Moving average of reliability per node id across rounds.

    Each round, a node's reliability factor ``r_k`` in [0, 1] (1 = fully trusted, before
    sample counts) is blended into its score: ``m <- (1 - rate) * m + rate * r_k``. The
    score, clipped to ``[floor, 1]``, is used as a multiplicative prior next round, so a persistently
    unreliable node stays down-weighted while a newcomer starts neutral (1).

    Parameters
    ----------
    rate : float, default 0.5
        Blend rate in (0, 1]; 1 = no memory.
    floor : float, default 0.0
        Smallest prior a node can have.
    """

    def __init__(self, rate: float = 0.5, floor: float = 0.0) -> None:
        if not (0 < rate <= 1):
            raise ValueError(f"rate={rate!r} must be in (0, 1]")
        if not (0 <= floor <= 1):
            raise ValueError(f"floor={floor!r} must be in [0, 1]")
        self.rate = rate
        self.floor = floor
        self.scores: dict[int, float] = {}

    def prior(self, node_ids: Sequence[int]) -> FloatArray:
        """Prior per node (1.0 for unseen nodes)."""
        return np.array(
            [max(self.floor, min(1.0, self.scores.get(int(n), 1.0))) for n in node_ids],
            dtype=np.float64,
        )

    def update(self, node_ids: Sequence[int], reliability: Sequence[float] | FloatArray) -> None:
        """Blend this round's reliability factors (in [0, 1]) into the per-node scores."""
        for node, rel in zip(node_ids, reliability, strict=True):
            old = self.scores.get(int(node), 1.0)
            value = float(rel) if math.isfinite(float(rel)) else 0.0
            self.scores[int(node)] = (1 - self.rate) * old + self.rate * min(max(value, 0.0), 1.0)

    def state(self) -> Mapping[int, float]:
        """Current scores (read-only view)."""
        return dict(self.scores)
