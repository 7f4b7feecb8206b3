"""`TrainerConfig`: everything a participant needs to know to release and train, all of it public."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLedger, check_epsilon
from flwr_ppcdl.privacy.decoders import DECODERS
from flwr_ppcdl.privacy.mechanism import check_noise

Task = Literal["classification", "regression"]
BodyChangePolicy = Literal["refuse", "re-release"]
DEFAULT_DELTA = 1e-5
"""δ of a Gaussian release when none is given (keep it well below 1/n)."""
WEAK_LAPLACE_EPSILON = 2.0
"""At or below this ε, Laplace noise is a measured weak choice (see :class:`WeakChoiceWarning`)."""


class WeakChoiceWarning(UserWarning):
    """A configuration that is valid but measured to learn much worse than the default."""


@dataclass(frozen=True)
class TrainerConfig:
    """Everything a participant needs to know to release and train; all of it public.

    The defaults are the Flower App's (``flwr_ppcdl.app``): Gaussian noise with δ = 1e-5, 5 local
    steps of gradient descent per round, the LDA decoder for Gaussian classification solved in
    closed form. ``noise="laplace"`` at ε <= 2 warns :class:`WeakChoiceWarning` (measured on
    Fashion-MNIST at ε = 1: .58 accuracy against .70-.74 with Gaussian noise; docs/results.md).

    Parameters
    ----------
    task
        ``"classification"`` (K-class softmax, second-order Taylor surrogate) or ``"regression"``
        (squared loss, exact).
    epsilon
        Epsilon of the one release (record level, this participant): the epsilon of
        (epsilon, delta)-DP with ``noise="gaussian"`` (default), pure epsilon-DP with
        ``noise="laplace"``. ``float("inf")`` disables noise (warns).
    num_classes
        K, classification only.
    feature_bound
        Public constant ``c``: features are ``clip_l2(phi(x) / c)``.
    target_bound
        Public constant ``B``: regression targets are clipped to ``[-B, B]``.
    local_steps
        Optimiser steps on the noisy objective per round (``solver="iterative"``).
    learning_rate
        Step size for ``optimizer="adam"``/``"sgd"``. ``optimizer="gd"`` picks ``1 / L`` from the
        released statistics (post-processing) and ignores it.
    optimizer
        ``"gd"`` (gradient descent with the exact smoothness constant; default), ``"adam"``, ``"sgd"``.
    solver
        ``"iterative"`` (the paper's protocol: local steps from the global model) or ``"closed-form"``
        (the proximal minimiser, exactly).
    proximal_mu
        Weight of ``mu/2 ||W - W_global||^2`` (FedProx-style); 0 disables it.
    ridge
        Weight of ``ridge/2 ||W||^2``.
    body_change
        What to do when the server's body differs from the release's: ``"refuse"`` (error reply) or
        ``"re-release"`` (read the records again and charge the ledger).
    max_epsilon
        Budget of this participant's ledger; ``None`` means the configured ``epsilon`` (one release,
        plus ``eval_epsilon`` per evaluation when local evaluation is on) is all it may spend.
    local_evaluation
        Evaluate on local records (a new, charged query). Off by default.
    eval_epsilon
        Epsilon charged per local evaluation.
    noise, delta, sampler, neighbouring
        Passed to :class:`~flwr_ppcdl.privacy.FunctionalMechanism`: ``noise="gaussian"`` (default;
        (epsilon, delta)-DP; ``delta`` in (0, 1), well below 1/n; ``None`` means
        :data:`DEFAULT_DELTA`) or ``"laplace"`` (pure epsilon-DP; ``delta`` must stay ``None``);
        samplers per noise: gaussian ``discrete``/``numpy``, laplace ``discrete``/``opendp``/``numpy``.
    decoder
        How ``solver="closed-form"`` turns the release into weights: ``"taylor"`` (the minimiser of
        the noisy Taylor objective), ``"lda"`` (linear discriminant from the same statistics;
        classification, no ridge or proximal term) or ``"auto"`` (default: ``"lda"`` where it
        applies with Gaussian noise, else ``"taylor"``).
    insecure_noise_seed
        ``None`` (default): privacy noise from the operating system's CSPRNG. An ``int`` makes the
        release's noise (and the local evaluation's) reproducible and therefore **predictable**:
        NOT PRIVATE. Tests and research on public data only; warns ``PrivacyLeakWarning``. Never
        derive it from a public value (run config, partition or node id) in a deployment.
    share_statistics
        Also reply with the released (noisy) statistics, so that a statistics-summing server
        (:class:`~flwr_ppcdl.strategies.summed.SummedStatisticsFedAvg`) can pool them. They are
        what the parameters are computed from: sharing them costs no privacy.
    """

    task: Task
    epsilon: float
    num_classes: int | None = None
    feature_bound: float = 1.0
    target_bound: float = 1.0
    local_steps: int = 5
    learning_rate: float = 0.1
    optimizer: Literal["gd", "adam", "sgd"] = "gd"
    solver: Literal["iterative", "closed-form"] = "iterative"
    proximal_mu: float = 0.0
    ridge: float = 0.0
    body_change: BodyChangePolicy = "refuse"
    max_epsilon: float | None = None
    local_evaluation: bool = False
    eval_epsilon: float = 0.1
    sampler: str = "discrete"
    noise: str = "gaussian"
    delta: float | None = None
    decoder: str = "auto"
    neighbouring: str = "replace-one"
    insecure_noise_seed: int | None = None
    share_statistics: bool = False

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression'; got {self.task!r}")
        check_epsilon(self.epsilon)
        if self.task == "classification":
            if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 2:
                raise ValueError(f"num_classes must be an integer >= 2 for classification; got {self.num_classes!r}")
        for name in ("feature_bound", "target_bound"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number; got {value!r}")
        if not isinstance(self.local_steps, int) or self.local_steps < 0:
            raise ValueError(f"local_steps must be a non-negative integer; got {self.local_steps!r}")
        for name in ("learning_rate",):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be positive and finite; got {value!r}")
        for name in ("proximal_mu", "ridge"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be >= 0 and finite; got {value!r}")
        if self.optimizer not in ("gd", "adam", "sgd"):
            raise ValueError(f"optimizer must be 'gd', 'adam' or 'sgd'; got {self.optimizer!r}")
        if self.solver not in ("iterative", "closed-form"):
            raise ValueError(f"solver must be 'iterative' or 'closed-form'; got {self.solver!r}")
        if self.noise == "gaussian" and self.delta is None:
            object.__setattr__(self, "delta", DEFAULT_DELTA)
        check_noise(self.noise, self.sampler, self.delta)
        if self.decoder == "auto":
            lda = (self.task == "classification" and self.noise == "gaussian" and self.solver == "closed-form"
                   and not self.proximal_mu and not self.ridge)
            object.__setattr__(self, "decoder", "lda" if lda else "taylor")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {(*DECODERS, 'auto')}; got {self.decoder!r}")
        if self.noise == "laplace" and self.epsilon <= WEAK_LAPLACE_EPSILON:
            warnings.warn(
                f"noise='laplace' at epsilon={self.epsilon:g}: Laplace noise grows with the number of features "
                "(L1 sensitivity) and measured far below Gaussian noise at epsilon <= 1 (Fashion-MNIST, "
                "epsilon = 1: accuracy .58 against .70-.74). Keep noise='gaussian' (the default, "
                "(epsilon, delta)-DP) unless you need pure epsilon-DP.",
                WeakChoiceWarning,
                stacklevel=3,
            )
        if self.decoder == "lda" and (
            self.task != "classification" or self.solver != "closed-form" or self.proximal_mu or self.ridge
        ):
            raise ValueError(
                "decoder='lda' needs task='classification', solver='closed-form', proximal_mu=0 and "
                f"ridge=0; got task={self.task!r}, solver={self.solver!r}, "
                f"proximal_mu={self.proximal_mu!r}, ridge={self.ridge!r}"
            )
        if self.body_change not in ("refuse", "re-release"):
            raise ValueError(f"body_change must be 'refuse' or 're-release'; got {self.body_change!r}")
        if self.insecure_noise_seed is not None and (
            isinstance(self.insecure_noise_seed, bool)
            or not isinstance(self.insecure_noise_seed, int)
            or self.insecure_noise_seed < 0
        ):
            raise ValueError(f"insecure_noise_seed must be None or an int >= 0; got {self.insecure_noise_seed!r}")
        if self.max_epsilon is not None:
            check_epsilon(self.max_epsilon, "max_epsilon")
        if self.local_evaluation:
            check_epsilon(self.eval_epsilon, "eval_epsilon")
            if math.isinf(self.eval_epsilon):
                raise ValueError("eval_epsilon must be finite: local evaluation always spends budget")
            if self.max_epsilon is None:
                raise ValueError(
                    "local_evaluation spends eval_epsilon per evaluation on top of the release: "
                    "set max_epsilon to the total this participant may spend"
                )

    @property
    def budget(self) -> float:
        """The ledger's maximum: ``max_epsilon`` or what one release (and nothing else) costs."""
        return self.max_epsilon if self.max_epsilon is not None else self.epsilon

    @property
    def ledger_delta(self) -> float | None:
        """The δ the ledger reports totals at: ``delta`` for Gaussian noise, ``None`` (pure) for Laplace."""
        return self.delta if self.noise == "gaussian" else None

    @property
    def output_scale(self) -> float:
        """Factor from normalised weights to the head's output units (``B`` for regression)."""
        return self.target_bound if self.task == "regression" else 1.0

    def mechanism(self, ledger: PrivacyLedger | None) -> FunctionalMechanism:
        """The configured :class:`FunctionalMechanism` (charging ``ledger``)."""
        kwargs: dict[str, Any] = {
            "task": self.task,
            "epsilon": self.epsilon,
            "feature_bound": self.feature_bound,
            "neighbouring": self.neighbouring,
            "sampler": self.sampler,
            "noise": self.noise,
            "delta": self.delta,
            "insecure_noise_seed": self.insecure_noise_seed,
            "ledger": ledger,
        }
        if self.task == "classification":
            kwargs["num_classes"] = self.num_classes
        else:
            kwargs["target_bound"] = self.target_bound
        return FunctionalMechanism(**kwargs)
