"""`Release`: the noisy statistics one participant released, and what may be done with them for free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flwr_ppcdl.privacy.repair import RepairedStatistics, closed_form, objective_value, repair
from flwr_ppcdl.privacy.validation import check_nonnegative_finite

if TYPE_CHECKING:  # torch is imported lazily, only by the objective module
    from flwr_ppcdl.privacy.objective import TorchObjective

FloatArray = NDArray[np.float64]

TASKS: tuple[str, ...] = ("classification", "regression")
RELEASE_FORMAT = "flwr_ppcdl.fm-release/1"


@dataclass
class Release:
    """Noisy statistics released by :class:`~flwr_ppcdl.privacy.FunctionalMechanism`.

    ``statistics`` holds only the released (noisy) arrays: ``"gram"`` (D, D) symmetric and
    ``"cross"`` (K, D) for classification or (D,) for regression, in normalised units (features
    ``h~ = [clip_l2(x/feature_bound); 1]``, targets ``clip(y, -B, B)/B``). Every method is
    post-processing of those arrays (:mod:`.repair`) and costs no privacy.
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
    _repaired: RepairedStatistics | None = field(default=None, init=False, repr=False, compare=False)

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
                self.task, self.statistics["gram"], self.statistics["cross"], self.noise_scale, self.repair_keep
            )
        return self._repaired

    def _check_weights(self, weights: ArrayLike, name: str) -> FloatArray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != self.cross_shape:
            raise ValueError(f"{name} must have shape {self.cross_shape}; got {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"{name} must be finite")
        return w

    def solve(self, ridge: float = 0.0, prox_mu: float = 0.0, anchor: ArrayLike | None = None) -> FloatArray:
        """Closed-form minimiser of :meth:`torch_objective` (same ``ridge``, ``prox_mu``, ``anchor``);
        see :func:`.repair.closed_form`."""
        ridge_ = check_nonnegative_finite("ridge", ridge)
        mu = check_nonnegative_finite("prox_mu", prox_mu)
        if mu > 0 and anchor is None:
            raise ValueError(f"prox_mu={prox_mu!r} needs an anchor")
        anchor_ = self._check_weights(anchor, "anchor") if anchor is not None else None
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
            "statistics": {key: value.tolist() for key, value in self.statistics.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """Inverse of :meth:`to_dict` (validates format and shapes)."""
        if data.get("format") != RELEASE_FORMAT:
            raise ValueError(f"not a {RELEASE_FORMAT} dict; got format {data.get('format')!r}")
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
        )
        dim = release.dimension
        gram_shape = stats.get("gram", np.empty(0)).shape
        cross_shape = stats.get("cross", np.empty(0)).shape
        if gram_shape != (dim, dim) or cross_shape != release.cross_shape:
            raise ValueError(f"statistics shapes do not match D={dim}: gram {gram_shape}, cross {cross_shape}")
        return release
