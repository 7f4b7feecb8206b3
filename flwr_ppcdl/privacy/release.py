"""`Release`: the noisy statistics one participant released, and what may be done with them for free."""

from __future__ import annotations

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
RELEASE_FORMAT = "flwr_ppcdl.fm-release/2"
"""Version 2 adds the noise law (``noise``, ``delta``, ``noise_sd``) and ``repair_multiplier``."""
RELEASE_FORMAT_LAPLACE_ONLY = "flwr_ppcdl.fm-release/1"
"""Version 1 (every release was Laplace, repair multiplier 1); still read."""


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
            "noise": self.noise,
            "delta": self.delta,
            "noise_sd": self.noise_sd,
            "repair_multiplier": self.repair_multiplier,
            "statistics": {key: value.tolist() for key, value in self.statistics.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """Inverse of :meth:`to_dict` (validates format and shapes); version 1 reads as Laplace."""
        fmt = data.get("format")
        if fmt not in (RELEASE_FORMAT, RELEASE_FORMAT_LAPLACE_ONLY):
            raise ValueError(f"not a {RELEASE_FORMAT} dict; got format {fmt!r}")
        law: dict[str, Any] = {}
        if fmt == RELEASE_FORMAT:
            law = {
                "noise": str(data["noise"]),
                "delta": float(data["delta"]),
                "noise_sd": float(data["noise_sd"]),
                "repair_multiplier": float(data["repair_multiplier"]),
            }
        stats = {key: np.asarray(value, dtype=np.float64) for key, value in data["statistics"].items()}
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
