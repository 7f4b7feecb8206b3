"""The functional mechanism (Zhang et al., PVLDB 2012) for a linear head on bounded features.

Guarantee
---------
:meth:`FunctionalMechanism.release` is ``ε``-differentially private (pure DP) with respect to the
chosen neighbouring relation over the records it is given, under these assumptions:

* each record's features depend on that record only (no batch statistics); the bound
  ``h = clip_l2(x / feature_bound)`` uses the *public* constant ``feature_bound`` and is enforced here;
* regression targets are clipped to the public ``[-target_bound, target_bound]``; labels lie in
  ``{0, ..., K-1}`` (checked);
* under ``"replace-one"`` the number of records ``n`` is public (it is published in the release);
  under ``"add-remove-one"`` ``n`` is also published and therefore NOT protected;
* the mechanism is called once per dataset (or the ledger sums every call).

What it releases: the upper triangle (with diagonal) of the Gram matrix ``G = Σ h~ h~ᵀ`` and the cross
term (classification ``C = Σ (e_y - 1/K) h~ᵀ``; regression ``b = Σ y h~``), ``h~ = [h; 1]``, perturbed by
one Laplace draw of scale ``Δ/ε`` per coordinate (``Δ`` from :mod:`.sensitivity`, plus a
floating-point summation slack). Everything else in this module -- the repair, the closed-form solve,
the objective used for local training -- is post-processing of the released arrays and costs nothing.

Mathematics: ``docs/functional-mechanism.md`` §2.4 (regression), §3.2 (softmax, K = 2 is binary
logistic regression via the second-order Taylor expansion of log-sum-exp at 0).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.ledger import PrivacyLedger
from flwr_ppcdl.privacy.noise import (
    DiscreteGridLaplace,
    NumpyLaplace,
    OpenDPLaplace,
    PrivacyLeakWarning,
    generator_randbelow,
    os_randbelow,
)
from flwr_ppcdl.privacy.sensitivity import (
    NEIGHBOURING_RELATIONS,
    sensitivity_regression,
    sensitivity_softmax,
)

Task = Literal["classification", "regression"]
Sampler = Literal["discrete", "opendp", "numpy"]
RepairKeep = Literal["half-rho", "positive"]

TASKS: tuple[str, ...] = ("classification", "regression")
SAMPLERS: tuple[str, ...] = ("discrete", "opendp", "numpy")
REPAIR_RULES: tuple[str, ...] = ("half-rho", "positive")
RELEASE_FORMAT = "flwr_ppcdl.fm-release/1"

UNIT_ROUNDOFF: float = 2.0**-53
CLIP_MARGIN: float = 2.0**-40
"""Rows are clipped to norm ``1 - CLIP_MARGIN`` so that the true norm of the float row is <= 1."""

if TYPE_CHECKING:  # torch is imported lazily, only by the objective module
    from flwr_ppcdl.privacy.objective import TorchObjective

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- validation helpers


def _check_epsilon(epsilon: object) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(
            f"epsilon must be a real number; got {epsilon!r} of type {type(epsilon).__name__}"
        )
    value = float(epsilon)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"epsilon must be > 0 (float('inf') for no noise); got {epsilon!r}")
    return value


def _check_finite_real(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    result = float(value)
    if not (math.isfinite(result) and (result >= 0 if allow_zero else result > 0)):
        wanted = ">= 0 and finite" if allow_zero else "positive and finite"
        raise ValueError(f"{name} must be {wanted}; got {value!r}")
    return result


def _check_positive_finite(name: str, value: object) -> float:
    return _check_finite_real(name, value, allow_zero=False)


def _check_nonnegative_finite(name: str, value: object) -> float:
    return _check_finite_real(name, value, allow_zero=True)


def _first_bad_index(mask: NDArray[np.bool_]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _as_feature_matrix(features: ArrayLike) -> FloatArray:
    """Convert once to a finite float64 ``(n, d)`` copy, with the offending value in every error."""
    raw = np.asarray(features)
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"features must be a real numeric array; got dtype {raw.dtype}")
    if raw.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d); got shape {raw.shape}")
    if raw.shape[0] == 0:
        raise ValueError(f"features is empty: got shape {raw.shape} (need at least one record)")
    if raw.shape[1] == 0:
        raise ValueError(f"features has no columns: got shape {raw.shape}")
    x = np.array(raw, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = _first_bad_index(bad)
        raise ValueError(f"features must be finite; got {x[row, col]} at row {row}, column {col}")
    return x


def _as_vector(values: ArrayLike, name: str, n: int) -> NDArray[Any]:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry per record; got shape {raw.shape}")
    if raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} entries but features has {n} rows")
    return raw


def _check_labels(raw: NDArray[Any], num_classes: int) -> NDArray[np.int64]:
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"labels must be integers in [0, {num_classes}); got {raw[i]} at index {i}"
            )
    elif raw.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers in [0, {num_classes}); got dtype {raw.dtype}")
    out_of_range = (raw < 0) | (raw >= num_classes)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        value = raw[i].item()
        raise ValueError(f"labels must be integers in [0, {num_classes}); got {value} at index {i}")
    return raw.astype(np.int64)


def _check_targets(raw: NDArray[Any]) -> FloatArray:
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"regression targets must be real numbers; got dtype {raw.dtype}")
    y = np.array(raw, dtype=np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"regression targets must be finite; got {y[i]} at index {i}")
    return y


# --------------------------------------------------------------------------- bounding


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
    bound = _check_positive_finite("max_norm", max_norm)
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


# --------------------------------------------------------------------------- release


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

    @property
    def gram(self) -> FloatArray:
        """``Ĝ = Q' Λ' Q'ᵀ`` (D, D), positive semi-definite."""
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T


@dataclass
class Release:
    """Noisy statistics released by :class:`FunctionalMechanism`, and their free post-processing.

    ``statistics`` holds only the released (noisy) arrays: ``"gram"`` (D, D) symmetric and
    ``"cross"`` (K, D) for classification or (D,) for regression, in normalised units (features
    ``h~ = [clip_l2(x/feature_bound); 1]``, targets ``clip(y, -B, B)/B``).
    """

    task: str
    num_classes: int | None
    epsilon: float
    sensitivity: float
    noise_scale: float
    neighbouring: str
    num_examples: int
    num_features: int
    feature_bound: float
    target_bound: float | None
    statistics: dict[str, FloatArray]
    sampler: str = "discrete"
    repair_keep: str = "half-rho"
    _repaired: RepairedStatistics | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # ---------------------------------------------------------------- post-processing

    @property
    def dimension(self) -> int:
        """``D = num_features + 1`` (bias appended)."""
        return self.num_features + 1

    def repaired(self) -> RepairedStatistics:
        """Repair the noisy Gram into a PSD quadratic (cached; a fixed public rule, so free).

        ``ρ = 2·√2·noise_scale·√D`` ('specnorm' rule); eigendecompose ``G~ + ρI``; keep eigenvalues
        ``> ρ/2`` (``repair_keep="half-rho"``, default) or ``> 0`` (``"positive"``). Without noise
        (``noise_scale == 0``) ``ρ = 0`` and eigenvalues above ``4·D·2**-52·λ_max`` are kept, so the
        solve is least squares. The cross term is re-centred over classes (classification) and
        projected onto the kept eigenspace, which makes the objective bounded below.
        """
        if self._repaired is not None:
            return self._repaired
        if self.repair_keep not in REPAIR_RULES:
            raise ValueError(f"repair_keep must be one of {REPAIR_RULES}; got {self.repair_keep!r}")
        dim = self.dimension
        gram = self.statistics["gram"]
        rho = 2.0 * math.sqrt(2.0) * self.noise_scale * math.sqrt(dim)
        eigvals, eigvecs = np.linalg.eigh(gram + rho * np.eye(dim))
        if rho == 0.0:
            threshold = 4.0 * dim * 2.0**-52 * max(float(np.max(np.abs(eigvals))), 0.0)
        elif self.repair_keep == "half-rho":
            threshold = rho / 2.0
        else:
            threshold = 0.0
        keep = eigvals > threshold
        q = np.ascontiguousarray(eigvecs[:, keep])
        cross = self.statistics["cross"]
        if self.task == "classification":
            cross = cross - cross.mean(axis=0, keepdims=True)
            projected = (cross @ q) @ q.T
        else:
            projected = q @ (q.T @ cross)
        self._repaired = RepairedStatistics(
            eigvecs=q, eigvals=eigvals[keep].copy(), cross=projected, rho=rho, threshold=threshold
        )
        return self._repaired

    def _check_weights(self, weights: ArrayLike, name: str) -> FloatArray:
        w = np.asarray(weights, dtype=np.float64)
        expected = self.statistics["cross"].shape
        if w.shape != expected:
            raise ValueError(f"{name} must have shape {expected}; got {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"{name} must be finite")
        return w

    def solve(
        self, ridge: float = 0.0, prox_mu: float = 0.0, anchor: ArrayLike | None = None
    ) -> FloatArray:
        """Closed-form minimiser of :meth:`torch_objective` (same ``ridge``, ``prox_mu``, ``anchor``).

        Classification returns ``W`` (K, D) with logits ``W @ [h; 1]``: without ridge/prox it is the
        class-centred minimum-norm solution ``K·C̄ Q'Λ'^{-1}Q'ᵀ``; with ``c = ridge + prox_mu > 0`` it is
        ``(C̄ + μ A_c)(Ĝ/K + cI)^{-1} + 1·(μ/c)·mean_k(A)`` (``A_c`` the class-centred anchor; the
        last term is the minimiser along the softmax-invariant direction). Regression returns ``w``
        (D,) with ``y/B ≈ w @ [h; 1]``, solving ``(2Ĝ + cI) w = 2b̄ + μa`` (minimum norm when ``c = 0``).
        """
        ridge_ = _check_nonnegative_finite("ridge", ridge)
        mu = _check_nonnegative_finite("prox_mu", prox_mu)
        if mu > 0 and anchor is None:
            raise ValueError(f"prox_mu={prox_mu!r} needs an anchor")
        anchor_ = self._check_weights(anchor, "anchor") if anchor is not None else None
        rep = self.repaired()
        q, lam = rep.eigvecs, rep.eigvals
        c = ridge_ + mu
        if self.task == "classification":
            k = float(self.num_classes or 0)
            if c == 0.0:
                return (rep.cross @ q / (lam / k)) @ q.T
            rhs = rep.cross.copy()
            shift = np.zeros(self.dimension)
            if anchor_ is not None and mu > 0:
                mean = anchor_.mean(axis=0)
                rhs += mu * (anchor_ - mean)
                shift = (mu / c) * mean
            inside = (rhs @ q / (lam / k + c)) @ q.T
            outside = (rhs - (rhs @ q) @ q.T) / c
            return inside + outside + shift[None, :]
        if c == 0.0:
            return q @ ((q.T @ rep.cross) / lam)
        rhs = 2.0 * rep.cross + (mu * anchor_ if anchor_ is not None and mu > 0 else 0.0)
        inside = q @ ((q.T @ rhs) / (2.0 * lam + c))
        outside = (rhs - q @ (q.T @ rhs)) / c
        return inside + outside

    def objective_value(self, weights: ArrayLike, ridge: float = 0.0) -> float:
        """Repaired noisy objective ``[F(W) + ridge/2 ||W||^2] / n`` (numpy; see :meth:`torch_objective`)."""
        w = self._check_weights(weights, "weights")
        ridge_ = _check_nonnegative_finite("ridge", ridge)
        rep = self.repaired()
        gram = rep.gram
        if self.task == "classification":
            k = float(self.num_classes or 0)
            hw = (w - w.mean(axis=0, keepdims=True)) / k
            value = -float(np.sum(w * rep.cross)) + 0.5 * float(np.sum(w * (hw @ gram)))
        else:
            value = float(w @ gram @ w) - 2.0 * float(rep.cross @ w)
        value += 0.5 * ridge_ * float(np.sum(w * w))
        return value / self.num_examples

    def torch_objective(self, prox_mu: float = 0.0, ridge: float = 0.0) -> TorchObjective:
        """Differentiable float64 objective ``(W, anchor=None) -> scalar`` for local training.

        ``[F(W) + ridge/2 ||W||^2 + prox_mu/2 ||W - anchor||^2] / n`` with, for classification,
        ``F(W) = -<W, C̄> + ½ tr(Wᵀ H W Ĝ)``, ``H = (I - 11ᵀ/K)/K``, and for regression
        ``F(w) = wᵀĜw - 2b̄ᵀw``. Reads only the repaired release: any number of epochs is free.
        """
        from flwr_ppcdl.privacy.objective import make_torch_objective

        mu = _check_nonnegative_finite("prox_mu", prox_mu)
        ridge_ = _check_nonnegative_finite("ridge", ridge)
        rep = self.repaired()
        return make_torch_objective(
            task=self.task,
            gram=rep.gram,
            cross=rep.cross,
            num_examples=self.num_examples,
            prox_mu=mu,
            ridge=ridge_,
        )

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain dict (lists and floats; exact for float64). ``inf`` stays a float."""
        return {
            "format": RELEASE_FORMAT,
            "task": self.task,
            "num_classes": self.num_classes,
            "epsilon": self.epsilon,
            "sensitivity": self.sensitivity,
            "noise_scale": self.noise_scale,
            "neighbouring": self.neighbouring,
            "num_examples": self.num_examples,
            "num_features": self.num_features,
            "feature_bound": self.feature_bound,
            "target_bound": self.target_bound,
            "sampler": self.sampler,
            "repair_keep": self.repair_keep,
            "statistics": {key: value.tolist() for key, value in self.statistics.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """Inverse of :meth:`to_dict` (validates format and shapes)."""
        if data.get("format") != RELEASE_FORMAT:
            raise ValueError(f"not a {RELEASE_FORMAT} dict; got format {data.get('format')!r}")
        stats = {
            key: np.asarray(value, dtype=np.float64) for key, value in data["statistics"].items()
        }
        release = cls(
            task=str(data["task"]),
            num_classes=None if data["num_classes"] is None else int(data["num_classes"]),
            epsilon=float(data["epsilon"]),
            sensitivity=float(data["sensitivity"]),
            noise_scale=float(data["noise_scale"]),
            neighbouring=str(data["neighbouring"]),
            num_examples=int(data["num_examples"]),
            num_features=int(data["num_features"]),
            feature_bound=float(data["feature_bound"]),
            target_bound=None if data["target_bound"] is None else float(data["target_bound"]),
            statistics=stats,
            sampler=str(data.get("sampler", "discrete")),
            repair_keep=str(data.get("repair_keep", "half-rho")),
        )
        dim = release.dimension
        expected_cross = (
            (release.num_classes or 0, dim) if release.task == "classification" else (dim,)
        )
        if (
            stats.get("gram", np.empty(0)).shape != (dim, dim)
            or stats.get("cross", np.empty(0)).shape != expected_cross
        ):
            raise ValueError(
                f"statistics shapes do not match D={dim}: gram {stats.get('gram', np.empty(0)).shape}, "
                f"cross {stats.get('cross', np.empty(0)).shape}"
            )
        return release


class FunctionalMechanism:
    """Functional mechanism for a linear softmax / logistic / least-squares head on bounded features.

    Parameters (all keyword-only)
    -----------------------------
    task:
        ``"classification"`` (K-class softmax through its second-order Taylor expansion at 0;
        ``K = 2`` is binary logistic regression) or ``"regression"`` (squared loss, exact).
    num_classes:
        ``K >= 2`` for classification; must be ``None`` for regression.
    epsilon:
        Pure-DP ε > 0 of one release. ``float("inf")`` releases exact statistics and warns
        :class:`PrivacyLeakWarning`.
    feature_bound:
        Public constant ``c``: features are mapped to ``h = clip_l2(x / c)``. Never derived from data.
    target_bound:
        Public ``B`` (regression): targets are mapped to ``clip(y, -B, B) / B``.
    neighbouring:
        ``"replace-one"`` (default; ``n`` public) or ``"add-remove-one"`` (halves Δ; ``n`` is
        published and so not protected).
    sampler:
        ``"discrete"`` (default, hardened: exact discrete Laplace on a power-of-two grid),
        ``"opendp"`` (OpenDP ``make_laplace``; cannot be seeded), ``"numpy"`` (fast, NOT hardened).
    seed:
        ``None`` (OS CSPRNG; the default), an ``int`` or a ``numpy.random.Generator`` (reproducible,
        PCG64 is not cryptographic: for tests and experiments).
    ledger:
        Optional :class:`PrivacyLedger`, charged by :meth:`release` before any noise is drawn.
    repair_keep:
        Public repair rule stored in the release (``"half-rho"`` default, or ``"positive"``).
    """

    def __init__(
        self,
        *,
        task: Task,
        num_classes: int | None = None,
        epsilon: float,
        feature_bound: float = 1.0,
        target_bound: float = 1.0,
        neighbouring: str = "replace-one",
        sampler: Sampler = "discrete",
        seed: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        repair_keep: RepairKeep = "half-rho",
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {task!r}")
        if task == "classification":
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
                raise TypeError(
                    f"num_classes must be an int >= 2 for classification; got {num_classes!r}"
                )
            if int(num_classes) < 2:
                raise ValueError(f"num_classes must be >= 2; got {num_classes!r}")
            self.num_classes: int | None = int(num_classes)
        else:
            if num_classes is not None:
                raise ValueError(
                    f"num_classes is for classification only; got {num_classes!r} for regression"
                )
            self.num_classes = None
        self.task: str = task
        self.epsilon = _check_epsilon(epsilon)
        self.feature_bound = _check_positive_finite("feature_bound", feature_bound)
        self.target_bound = _check_positive_finite("target_bound", target_bound)
        if neighbouring not in NEIGHBOURING_RELATIONS:
            raise ValueError(
                f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {neighbouring!r}"
            )
        self.neighbouring = neighbouring
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
        self.sampler: str = sampler
        if repair_keep not in REPAIR_RULES:
            raise ValueError(f"repair_keep must be one of {REPAIR_RULES}; got {repair_keep!r}")
        self.repair_keep: str = repair_keep
        if ledger is not None and not isinstance(ledger, PrivacyLedger):
            raise TypeError(f"ledger must be a PrivacyLedger or None; got {type(ledger).__name__}")
        self.ledger = ledger
        self._rng: np.random.Generator | None
        if seed is None:
            self._rng = None
        elif isinstance(seed, np.random.Generator):
            self._rng = seed
        elif isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            if int(seed) < 0:
                raise ValueError(f"seed must be >= 0; got {seed!r}")
            self._rng = np.random.default_rng(int(seed))
        else:
            raise TypeError(f"seed must be None, an int or a numpy Generator; got {seed!r}")
        if sampler == "opendp" and seed is not None:
            warnings.warn(
                f"sampler='opendp' cannot be seeded; seed={seed!r} is ignored and releases are not "
                "reproducible",
                UserWarning,
                stacklevel=2,
            )
        if math.isinf(self.epsilon):
            warnings.warn(
                "epsilon=inf: statistics are released WITHOUT noise (no differential privacy)",
                PrivacyLeakWarning,
                stacklevel=2,
            )

    # ---------------------------------------------------------------- public transforms

    def bound_features(self, x: ArrayLike) -> FloatArray:
        """Public per-record transform ``[clip_l2(x / feature_bound); 1]`` -> (n, d+1) float64."""
        return self._bound_matrix(_as_feature_matrix(x))

    def _bound_matrix(self, x: FloatArray) -> FloatArray:
        scaled = x / self.feature_bound
        if not np.isfinite(scaled).all():
            raise ValueError(
                f"features / feature_bound overflowed; feature_bound={self.feature_bound!r} is too small"
            )
        h = clip_l2(scaled)
        return np.hstack([h, np.ones((h.shape[0], 1))])

    def bound_targets(self, y: ArrayLike) -> FloatArray:
        """Public per-record transform ``clip(y, -B, B) / B`` -> (n,) float64 (regression)."""
        raw = np.asarray(y)
        if raw.ndim != 1:
            raise ValueError(f"regression targets must be 1-D; got shape {raw.shape}")
        return self._bound_target_vector(_check_targets(raw))

    def _bound_target_vector(self, y: FloatArray) -> FloatArray:
        b = self.target_bound
        return np.clip(y, -b, b) / b

    def sensitivity(self, d: int) -> float:
        """Δ of the whole release for ``d`` features (before the bias); see :mod:`.sensitivity`."""
        if self.task == "classification":
            return sensitivity_softmax(d, int(self.num_classes or 0), self.neighbouring)
        return sensitivity_regression(d, self.neighbouring)

    def _released_description(self, d: int) -> str:
        dim = d + 1
        cross = (
            f"cross C ({self.num_classes}x{dim})"
            if self.task == "classification"
            else f"cross b ({dim})"
        )
        return f"gram upper triangle ({dim * (dim + 1) // 2}) + {cross}"

    # ---------------------------------------------------------------- the release

    def release(self, features: ArrayLike, labels_or_targets: ArrayLike) -> Release:
        """Read the records once and release their noisy statistics. THE ONLY function reading records.

        Parameters
        ----------
        features:
            (n, d) real array of raw features (bounded here with the public ``feature_bound``).
        labels_or_targets:
            (n,) integer labels in ``[0, K)`` (classification) or real targets (regression, clipped
            here with the public ``target_bound``).

        Returns
        -------
        Release
            Noisy statistics only; the exact statistics are deleted before returning.

        Guarantee: ``ε``-DP under :attr:`neighbouring` (module docstring). Input errors are raised
        before anything is charged or released. The ledger, if any, is charged before noise is drawn;
        if it refuses (:class:`BudgetExceededError`) nothing is released.
        """
        x = _as_feature_matrix(features)
        n, d = x.shape
        target_raw = _as_vector(
            labels_or_targets, "labels" if self.task == "classification" else "targets", n
        )
        h = self._bound_matrix(x)
        del x
        if self.task == "classification":
            k = int(self.num_classes or 0)
            labels = _check_labels(target_raw, k)
            centred = np.full((n, k), -1.0 / k)
            centred[np.arange(n), labels] += 1.0
            cross = centred.T @ h
            del labels, centred
        else:
            cross = h.T @ self._bound_target_vector(_check_targets(target_raw))
        del target_raw
        gram = h.T @ h
        del h
        dim = d + 1
        upper = np.triu_indices(dim)
        exact = np.concatenate([gram[upper], cross.ravel()])
        cross_shape = cross.shape
        del gram, cross

        delta = self.sensitivity(d)
        description = self._released_description(d)
        mechanism = f"functional-mechanism/{self.task}/{self.sampler}"
        if math.isinf(self.epsilon):
            if self.ledger is not None:
                self.ledger.charge(
                    math.inf,
                    mechanism=mechanism,
                    released=description,
                    neighbouring=self.neighbouring,
                    note="no noise",
                )
            noisy, noise_scale, spent = exact, 0.0, math.inf
        else:
            l1_bound = delta + summation_slack(n, exact.size)
            noise: DiscreteGridLaplace | OpenDPLaplace | NumpyLaplace
            if self.sampler == "discrete":
                randbelow = os_randbelow if self._rng is None else generator_randbelow(self._rng)
                noise = DiscreteGridLaplace(
                    l1_bound=l1_bound, epsilon=self.epsilon, size=exact.size, randbelow=randbelow
                )
            elif self.sampler == "opendp":
                noise = OpenDPLaplace(l1_bound=l1_bound, epsilon=self.epsilon, size=exact.size)
            else:
                rng = self._rng if self._rng is not None else np.random.default_rng()
                noise = NumpyLaplace(
                    l1_bound=l1_bound, epsilon=self.epsilon, size=exact.size, rng=rng
                )
            if self.ledger is not None:
                self.ledger.charge(
                    noise.epsilon_spent,
                    mechanism=mechanism,
                    released=description,
                    neighbouring=self.neighbouring,
                )
            noisy = noise.perturb(exact)
            noise_scale, spent = noise.scale, noise.epsilon_spent
        del exact

        n_upper = upper[0].size
        gram_noisy = np.zeros((dim, dim))
        gram_noisy[upper] = noisy[:n_upper]
        gram_noisy = gram_noisy + np.triu(gram_noisy, 1).T
        cross_noisy = np.array(noisy[n_upper:]).reshape(cross_shape)
        return Release(
            task=self.task,
            num_classes=self.num_classes,
            epsilon=spent,
            sensitivity=delta,
            noise_scale=noise_scale,
            neighbouring=self.neighbouring,
            num_examples=n,
            num_features=d,
            feature_bound=self.feature_bound,
            target_bound=self.target_bound if self.task == "regression" else None,
            statistics={"gram": gram_noisy, "cross": cross_noisy},
            sampler=self.sampler,
            repair_keep=self.repair_keep,
        )

    def __repr__(self) -> str:
        return (
            f"FunctionalMechanism(task={self.task!r}, num_classes={self.num_classes!r}, "
            f"epsilon={self.epsilon!r}, feature_bound={self.feature_bound!r}, "
            f"target_bound={self.target_bound!r}, neighbouring={self.neighbouring!r}, "
            f"sampler={self.sampler!r})"
        )
