"""`Release`: the noisy statistics one participant released, and what may be done with them for free."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.decoders import DECODERS, lda_weights
from flwr_ppcdl.privacy.repair import RepairedStatistics, closed_form, objective_value, repair
from flwr_ppcdl.privacy.validation import (
    check_choice,
    check_nonnegative_finite,
    check_positive_finite,
)

if TYPE_CHECKING:  # torch is imported lazily, only by the objective module
    from flwr_ppcdl.privacy.objective import TorchObjective

FloatArray = NDArray[np.float64]

TASKS: tuple[str, ...] = ("classification", "regression")
NOISES: tuple[str, ...] = ("laplace", "gaussian")
"""Noise laws of a release: ``"laplace"`` (pure ε-DP) or ``"gaussian"`` (ρ-zCDP, reported as (ε, δ))."""
RELEASE_FORMAT = "flwr_ppcdl.fm-release/3"
"""Arrays as base64 of little-endian float64 (a symmetric matrix as its upper triangle), and the
noise law (``noise``, ``delta``, ``noise_sd``) with the public ``repair_multiplier``."""
RELEASE_FORMAT_BASE64_LAPLACE = "flwr_ppcdl.fm-release/2"
"""Arrays as base64; every release of this format was Laplace with repair multiplier 1. Still read."""
RELEASE_FORMAT_LISTS = "flwr_ppcdl.fm-release/1"
"""The earliest format (arrays as nested JSON lists; Laplace, repair multiplier 1); still read."""
REPAIR_FORMAT = "flwr_ppcdl.fm-repair/1"


def encode_array(array: FloatArray) -> dict[str, Any]:
    """A float64 array as JSON-safe ``{"shape", "upper", "base64"}`` (exact, about 10.7 bytes a value).

    A symmetric square matrix keeps only its upper triangle (``"upper": true``), half the bytes.
    JSON lists of the same floats take about 20 bytes a value.
    """
    values = np.ascontiguousarray(array, dtype="<f8")
    upper = values.ndim == 2 and values.shape[0] == values.shape[1] and bool(np.array_equal(values, values.T))
    payload = values[np.triu_indices(values.shape[0])] if upper else values.ravel()
    return {
        "shape": list(values.shape),
        "upper": upper,
        "base64": base64.b64encode(np.ascontiguousarray(payload).tobytes()).decode("ascii"),
    }


def decode_array(data: Any) -> FloatArray:
    """Inverse of :func:`encode_array`; raises ``ValueError`` naming what is malformed."""
    if not isinstance(data, dict) or not {"shape", "upper", "base64"} <= set(data):
        raise ValueError("an encoded array needs 'shape', 'upper' and 'base64'")
    shape = tuple(int(n) for n in data["shape"])
    if any(n < 0 for n in shape):
        raise ValueError(f"an encoded array has a negative dimension: {shape}")
    upper = bool(data["upper"])
    if upper and (len(shape) != 2 or shape[0] != shape[1]):
        raise ValueError(f"an upper-triangle array must be square; got shape {shape}")
    raw = base64.b64decode(str(data["base64"]).encode("ascii"), validate=True)
    expected = shape[0] * (shape[0] + 1) // 2 if upper else int(np.prod(shape, dtype=np.int64))
    if len(raw) != 8 * expected:
        raise ValueError(f"an encoded array of shape {shape} needs {8 * expected} bytes; got {len(raw)}")
    flat = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    if not upper:
        return flat.reshape(shape)
    out = np.zeros(shape)
    out[np.triu_indices(shape[0])] = flat
    return out + np.triu(out, 1).T


def noise_sd_of(noise: str, noise_scale: float) -> float:
    """Per-coordinate standard deviation of one draw: ``√2·b`` (Laplace scale ``b``) or ``σ``."""
    return math.sqrt(2.0) * noise_scale if noise == "laplace" else noise_scale


@dataclass
class Release:
    """Noisy statistics released by :class:`~flwr_ppcdl.privacy.FunctionalMechanism`.

    ``statistics`` holds only the released (noisy) arrays: ``"gram"`` (D, D) symmetric and
    ``"cross"`` (K, D) for classification or (D,) for regression, in normalised units (features
    ``h~ = [clip_l2(x/feature_bound); 1]``, targets ``clip(y, -B, B)/B``). Every method is
    post-processing of those arrays (:mod:`.repair`, :mod:`.decoders`) and costs no privacy.

    The public noise law: ``noise`` (``"laplace"``: pure ``epsilon``-DP, ``delta = 0``;
    ``"gaussian"``: ``(epsilon, delta)``-DP), ``noise_scale`` (the sampler's parameter: Laplace
    ``b`` or Gaussian ``σ``) and ``noise_sd``, the per-coordinate standard deviation of the noise
    in ``statistics`` (for a sum of releases, ``sqrt(Σ c_k² sd_k²)``). The repair reads ``noise_sd``:
    ``ρ = repair_multiplier · 2 · noise_sd · √D``.
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
    noise: str = "laplace"
    delta: float = 0.0
    noise_sd: float = math.nan
    repair_multiplier: float = 1.0
    _repaired: RepairedStatistics | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("noise", self.noise, NOISES)
        if math.isnan(self.noise_sd):  # not given: the sd of one draw of the named law
            self.noise_sd = noise_sd_of(self.noise, self.noise_scale)
        check_nonnegative_finite("noise_sd", self.noise_sd)
        check_positive_finite("repair_multiplier", self.repair_multiplier)
        if self.noise == "laplace" and self.delta != 0.0:
            raise ValueError(f"a Laplace release is pure epsilon-DP (delta 0); got delta={self.delta!r}")

    @property
    def guarantee_text(self) -> str:
        """``"pure epsilon-DP"`` or ``"(epsilon, delta)-DP"`` with the values (record level, per release)."""
        if self.noise == "laplace":
            return f"pure epsilon-DP, epsilon = {self.epsilon:g}"
        return f"(epsilon, delta)-DP, epsilon = {self.epsilon:g}, delta = {self.delta:g}"

    @property
    def dimension(self) -> int:
        """``D = num_features + 1`` (bias appended)."""
        return self.num_features + 1

    @property
    def cross_shape(self) -> tuple[int, ...]:
        """Shape of the cross term (and of the normalised weights): ``(K, D)`` or ``(D,)``."""
        return (int(self.num_classes or 0), self.dimension) if self.task == "classification" else (self.dimension,)

    def repaired(self) -> RepairedStatistics:
        """The repaired PSD quadratic (cached; a fixed public rule, see :mod:`.repair`)."""
        if self._repaired is None:
            self._repaired = repair(
                self.task,
                self.statistics["gram"],
                self.statistics["cross"],
                self.noise_sd,
                self.repair_keep,
                self.repair_multiplier,
            )
        return self._repaired

    def digest(self) -> str:
        """SHA-256 of the released arrays and the public constants the repair depends on."""
        h = hashlib.sha256()
        h.update(repr((self.task, self.num_classes, self.noise_scale, self.noise_sd, self.repair_multiplier, self.repair_keep)).encode())
        for key in sorted(self.statistics):
            value = np.ascontiguousarray(self.statistics[key], dtype="<f8")
            h.update(f"{key}{value.shape}".encode())
            h.update(value.tobytes())
        return h.hexdigest()

    def repaired_to_dict(self) -> dict[str, Any]:
        """The repair (computing it if needed) as a JSON-safe dict, tied to this release's digest.

        Persisting it next to the release lets a new trainer object (Flower builds one per round)
        skip the eigendecomposition (:meth:`restore_repaired`). Post-processing only: nothing in
        it is a raw statistic.
        """
        rep = self.repaired()
        return {
            "format": REPAIR_FORMAT,
            "release": self.digest(),
            "eigvecs": encode_array(rep.eigvecs),
            "eigvals": encode_array(rep.eigvals),
            "cross": encode_array(rep.cross),
            "rho": rep.rho,
            "threshold": rep.threshold,
        }

    def restore_repaired(self, data: dict[str, Any] | None) -> bool:
        """Reuse a repair saved by :meth:`repaired_to_dict` if it belongs to this release.

        Returns whether it was used. A repair of another release (another digest, format or
        shape) is ignored and the repair is recomputed when needed.
        """
        if not isinstance(data, dict) or data.get("format") != REPAIR_FORMAT or data.get("release") != self.digest():
            return False
        eigvecs = decode_array(data["eigvecs"])
        eigvals = decode_array(data["eigvals"])
        cross = decode_array(data["cross"])
        dim = self.dimension
        if eigvecs.ndim != 2 or eigvecs.shape[0] != dim or eigvals.shape != (eigvecs.shape[1],) or cross.shape != self.cross_shape:
            return False
        self._repaired = RepairedStatistics(
            eigvecs=eigvecs, eigvals=eigvals, cross=cross, rho=float(data["rho"]), threshold=float(data["threshold"])
        )
        return True

    def _check_weights(self, weights: ArrayLike, name: str) -> FloatArray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != self.cross_shape:
            raise ValueError(f"{name} must have shape {self.cross_shape}; got {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"{name} must be finite")
        return w

    def solve(
        self,
        ridge: float = 0.0,
        prox_mu: float = 0.0,
        anchor: ArrayLike | None = None,
        decoder: str = "taylor",
    ) -> FloatArray:
        """Normalised weights decoded from the release (free post-processing).

        ``decoder="taylor"`` (default): the closed-form minimiser of :meth:`torch_objective` (same
        ``ridge``, ``prox_mu``, ``anchor``; :func:`.repair.closed_form`). ``decoder="lda"``
        (classification only, no ridge or proximal term): linear discriminant analysis from the
        class sums and counts contained in the same statistics (:func:`.decoders.lda_weights`).
        """
        check_choice("decoder", decoder, DECODERS)
        ridge_ = check_nonnegative_finite("ridge", ridge)
        mu = check_nonnegative_finite("prox_mu", prox_mu)
        if mu > 0 and anchor is None:
            raise ValueError(f"prox_mu={prox_mu!r} needs an anchor")
        anchor_ = self._check_weights(anchor, "anchor") if anchor is not None else None
        if decoder == "lda":
            if self.task != "classification":
                raise ValueError(f"decoder='lda' is for classification; this release is {self.task!r}")
            if ridge_ > 0 or mu > 0:
                raise ValueError(f"decoder='lda' takes no ridge or proximal term; got ridge={ridge!r}, prox_mu={prox_mu!r}")
            return lda_weights(
                self.statistics["gram"],
                self.statistics["cross"],
                self.noise_sd,
                self.repair_multiplier,
                self.repair_keep,
            )
        return closed_form(self.task, self.num_classes, self.repaired(), ridge_, mu, anchor_)

    def objective_value(self, weights: ArrayLike, ridge: float = 0.0) -> float:
        """Repaired noisy objective ``[F(W) + ridge/2 ||W||^2] / n`` (numpy; see :meth:`torch_objective`)."""
        w = self._check_weights(weights, "weights")
        ridge_ = check_nonnegative_finite("ridge", ridge)
        return objective_value(self.task, self.num_classes, self.repaired(), w, ridge_, self.num_examples)

    def torch_objective(self, prox_mu: float = 0.0, ridge: float = 0.0) -> TorchObjective:
        """Differentiable float64 objective ``(W, anchor=None) -> scalar`` for local training.

        ``[F(W) + ridge/2 ||W||^2 + prox_mu/2 ||W - anchor||^2] / n`` with, for classification,
        ``F(W) = -<W, C̄> + ½ tr(Wᵀ H W Ĝ)``, ``H = (I - 11ᵀ/K)/K``, and for regression
        ``F(w) = wᵀĜw - 2b̄ᵀw``. Reads only the repaired release: any number of epochs is free.
        """
        from flwr_ppcdl.privacy.objective import make_torch_objective

        mu = check_nonnegative_finite("prox_mu", prox_mu)
        ridge_ = check_nonnegative_finite("ridge", ridge)
        rep = self.repaired()
        return make_torch_objective(
            task=self.task, gram=rep.gram, cross=rep.cross, num_examples=self.num_examples, prox_mu=mu, ridge=ridge_
        )

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain dict, exact for float64 (arrays as :func:`encode_array`). ``inf`` stays a float."""
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
            "noise": self.noise,
            "delta": self.delta,
            "noise_sd": self.noise_sd,
            "repair_multiplier": self.repair_multiplier,
            "statistics": {key: encode_array(value) for key, value in self.statistics.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """Inverse of :meth:`to_dict` (validates format and shapes); also reads the earlier formats
        (lists, then base64), whose releases were all Laplace with repair multiplier 1."""
        fmt = data.get("format")
        law: dict[str, Any] = {}
        if fmt == RELEASE_FORMAT:
            stats = {key: decode_array(value) for key, value in data["statistics"].items()}
            law = {
                "noise": str(data["noise"]),
                "delta": float(data["delta"]),
                "noise_sd": float(data["noise_sd"]),
                "repair_multiplier": float(data["repair_multiplier"]),
            }
        elif fmt == RELEASE_FORMAT_BASE64_LAPLACE:
            stats = {key: decode_array(value) for key, value in data["statistics"].items()}
        elif fmt == RELEASE_FORMAT_LISTS:
            stats = {key: np.asarray(value, dtype=np.float64) for key, value in data["statistics"].items()}
        else:
            raise ValueError(f"not a {RELEASE_FORMAT} dict; got format {fmt!r}")
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
            **law,
        )
        dim = release.dimension
        gram_shape = stats.get("gram", np.empty(0)).shape
        cross_shape = stats.get("cross", np.empty(0)).shape
        if gram_shape != (dim, dim) or cross_shape != release.cross_shape:
            raise ValueError(f"statistics shapes do not match D={dim}: gram {gram_shape}, cross {cross_shape}")
        return release
