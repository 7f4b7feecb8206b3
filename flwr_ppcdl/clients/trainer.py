"""Plain-torch trainer core shared by both Flower client flavours.

The participant's whole interaction with its private records happens in two named functions:

* :func:`release_from_records` - runs the frozen body once over the local records (``eval()`` mode,
  no gradients), hands the features to :meth:`FunctionalMechanism.release` and keeps only the noisy
  release. This is the *only* training-time reader of records; it runs once per participant for the
  whole federated run (and again only when the body changes and the configuration says to re-release,
  which is charged to the ledger).
* :func:`noisy_local_evaluation` - optional, off by default; a separate, charged query (Laplace-noised
  counts).

Everything else (:meth:`FunctionalMechanismTrainer.fit`) is post-processing of the release: it
minimises the noisy objective starting from the global parameters, any number of steps and rounds, at
no further privacy cost.

Units. The functional mechanism works on bounded features ``h = clip_l2(phi(x) / c)`` with a bias
coordinate appended, and (regression) on targets ``y / B`` clipped to ``[-1, 1]``. The model's head
``nn.Linear`` acts on ``phi(x)`` directly, so the head parameters and the normalised weights ``W``
are related by ``head.weight = scale * W[:, :d] / c`` and ``head.bias = scale * W[:, d]`` (``scale`` is
1 for classification and ``B`` for regression). Inference then matches training exactly when the body
output already satisfies ``||phi(x)|| <= c`` - end the body with :class:`flwr_ppcdl.models.L2Clip` or
:class:`flwr_ppcdl.models.L2Normalize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from flwr_ppcdl.privacy import (
    BudgetExceededError,
    FunctionalMechanism,
    PrivacyLedger,
    Release,
)
from flwr_ppcdl.privacy import linear_head_parameters

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
BodyChangePolicy = Literal["refuse", "re-release"]

__all__ = [
    "BodyChangedError",
    "FunctionalMechanismTrainer",
    "TrainerConfig",
    "TrainerState",
    "noisy_local_evaluation",
    "release_from_records",
    "split_model",
]


class BodyChangedError(RuntimeError):
    """The server sent a body that differs from the one the release was computed with."""


# --------------------------------------------------------------------------------------------------
# Configuration and persisted state
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerConfig:
    """Everything a participant needs to know to release and train; all of it public.

    Parameters
    ----------
    task
        ``"classification"`` (K-class softmax, second-order Taylor surrogate) or ``"regression"``
        (squared loss, exact).
    epsilon
        Pure epsilon of the one release (record level, this participant). ``float("inf")``
        disables noise (warns).
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
    sampler, neighbouring, seed
        Passed to :class:`~flwr_ppcdl.privacy.FunctionalMechanism`.
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
    local_steps: int = 20
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
    neighbouring: str = "replace-one"
    seed: int | None = None
    share_statistics: bool = False

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression'; got {self.task!r}")
        _check_epsilon("epsilon", self.epsilon)
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
        if self.body_change not in ("refuse", "re-release"):
            raise ValueError(f"body_change must be 'refuse' or 're-release'; got {self.body_change!r}")
        if self.max_epsilon is not None:
            _check_epsilon("max_epsilon", self.max_epsilon)
        if self.local_evaluation:
            _check_epsilon("eval_epsilon", self.eval_epsilon)
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
            "seed": self.seed,
            "ledger": ledger,
        }
        if self.task == "classification":
            kwargs["num_classes"] = self.num_classes
        else:
            kwargs["target_bound"] = self.target_bound
        return FunctionalMechanism(**kwargs)


def _check_epsilon(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 (float('inf') disables noise); got {value!r}")


@dataclass
class TrainerState:
    """What a participant keeps between rounds: the release, the ledger, the body's fingerprint.

    Nothing here is a raw statistic or a record; it round-trips through JSON so it can live in
    Flower's ``Context.state``.
    """

    release: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None
    body_fingerprint: str | None = None
    body_reference: list[list[float]] | None = None
    records_read: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"trainer state must be a JSON object; got {type(raw).__name__}")
        return cls(**raw)


STATE_KEY = "flwr-ppcdl"


def load_state(store: Any) -> TrainerState:
    """Read the trainer state from a Flower ``Context`` (its ``state``) or a plain mutable mapping."""
    mapping = _state_mapping(store)
    record = mapping.get(STATE_KEY)
    if record is None:
        return TrainerState()
    text = record["json"] if isinstance(record, Mapping) else record
    return TrainerState.from_json(str(text))


def save_state(store: Any, state: TrainerState) -> None:
    """Persist the trainer state into a Flower ``Context`` or a plain mutable mapping."""
    mapping = _state_mapping(store)
    text = state.to_json()
    if _is_flower_recorddict(mapping):
        from flwr.app import ConfigRecord

        mapping[STATE_KEY] = ConfigRecord({"json": text})
    else:
        mapping[STATE_KEY] = text


def _state_mapping(store: Any) -> MutableMapping[str, Any]:
    state = getattr(store, "state", store)
    if not isinstance(state, MutableMapping):
        raise TypeError(
            "state store must be a flwr.app.Context or a mutable mapping (dict); "
            f"got {type(store).__name__}"
        )
    return state


def _is_flower_recorddict(mapping: Any) -> bool:
    return type(mapping).__name__ == "RecordDict"


# --------------------------------------------------------------------------------------------------
# Model contract
# --------------------------------------------------------------------------------------------------


def split_model(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Split a model into (frozen body, linear head).

    Accepted shapes: an ``nn.Sequential`` whose last module is an ``nn.Linear``, or a module with a
    ``body`` attribute and an ``nn.Linear`` ``head`` attribute (applied as ``head(body(x))``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(model, nn.Sequential):
        if len(model) == 0 or not isinstance(model[-1], nn.Linear):
            last = type(model[-1]).__name__ if len(model) else "nothing"
            raise TypeError(
                "model must end with an nn.Linear head (everything before it is the frozen body); "
                f"its last module is {last}"
            )
        body: nn.Module = model[:-1] if len(model) > 1 else nn.Identity()
        return body, model[-1]
    head = getattr(model, "head", None)
    body_attr = getattr(model, "body", None)
    if isinstance(head, nn.Linear) and isinstance(body_attr, nn.Module):
        return body_attr, head
    raise TypeError(
        "model must be an nn.Sequential ending with nn.Linear, or have `body` (nn.Module) and "
        f"`head` (nn.Linear) attributes; got {type(model).__name__} "
        f"with head={type(head).__name__}"
    )


def _body_arrays(body: nn.Module) -> list[tuple[str, np.ndarray]]:
    """The body's parameters and buffers, by name, as flat float64 arrays."""
    return [
        (name, tensor.detach().cpu().to(torch.float64).numpy().ravel())
        for name, tensor in sorted(body.state_dict().items())
    ]


def body_fingerprint(body: nn.Module) -> tuple[str, list[list[float]]]:
    """A hash of the body's parameters and buffers, and the values themselves (public)."""
    digest = hashlib.sha256()
    values: list[list[float]] = []
    for name, array in _body_arrays(body):
        digest.update(name.encode())
        digest.update(array.tobytes())
        values.append(array.tolist())
    return digest.hexdigest(), values


def _body_matches(body: nn.Module, reference: list[list[float]] | None) -> bool:
    """Whether the body equals the reference up to aggregation round-off (float32 averaging)."""
    if reference is None:
        return False
    current = [array for _, array in _body_arrays(body)]
    if len(current) != len(reference):
        return False
    for now, ref in zip(current, reference, strict=True):
        ref_array = np.asarray(ref, dtype=np.float64)
        if now.shape != ref_array.shape or not np.allclose(now, ref_array, rtol=1e-5, atol=1e-7):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# The record readers
# --------------------------------------------------------------------------------------------------


def _as_batches(data: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(data, tuple) and len(data) == 2:
        return [data]
    return data


@torch.no_grad()
def release_from_records(
    body: nn.Module,
    data: Any,
    mechanism: FunctionalMechanism,
    device: str | torch.device = "cpu",
) -> Release:
    """Read the local records once and release the functional mechanism's noisy statistics.

    The body runs in ``eval()`` mode without gradients (no BatchNorm batch statistics, no dropout:
    each record's features depend on that record alone). The features and labels exist only inside
    this function; what leaves it is the :class:`Release` (noisy statistics; the mechanism charges
    its ledger before drawing noise).

    Parameters
    ----------
    body
        The frozen feature extractor (independent of the private data).
    data
        ``(features_or_inputs, labels)`` arrays/tensors, or an iterable of such batches
        (e.g. a ``DataLoader``); iterated exactly once.
    mechanism
        The configured :class:`FunctionalMechanism`.
    """
    was_training = body.training
    body.eval()
    try:
        feature_parts: list[np.ndarray] = []
        label_parts: list[np.ndarray] = []
        for batch in _as_batches(data):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    "each batch of the local data must be a pair (inputs, labels); "
                    f"got {type(batch).__name__}"
                )
            inputs, labels = batch
            inputs_t = torch.as_tensor(inputs).to(device)
            feats = body(inputs_t.float() if not inputs_t.is_floating_point() else inputs_t)
            feature_parts.append(feats.detach().cpu().to(torch.float64).reshape(len(feats), -1).numpy())
            label_parts.append(torch.as_tensor(labels).cpu().numpy())
        if not feature_parts:
            raise ValueError("the local data is empty: nothing to release")
        features = np.concatenate(feature_parts)
        labels_all = np.concatenate(label_parts)
        del feature_parts, label_parts
        release = mechanism.release(features, labels_all)
        del features, labels_all
        return release
    finally:
        body.train(was_training)


@torch.no_grad()
def noisy_local_evaluation(
    model: nn.Module,
    data: Any,
    config: TrainerConfig,
    ledger: PrivacyLedger,
    rng: np.random.Generator,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Evaluate the model on local records - a new query on private data, charged to the ledger.

    Classification releases the number of correct predictions plus ``Lap(1/eps)`` (replacing one
    record changes the count by at most 1). Regression releases the sum of squared errors with each
    record's error clipped to ``(2B)^2`` plus ``Lap((2B)^2/eps)``. ``n`` is public (replace-one).
    The Laplace draw here is numpy's (not hardened); it protects a scalar already rounded to the
    released precision.
    """
    eps = config.eval_epsilon
    ledger.charge(
        eps,
        mechanism="laplace",
        released="local evaluation (noisy count)" if config.task == "classification" else "local evaluation (noisy clipped SSE)",
        neighbouring=config.neighbouring,
    )
    model.eval()
    n = 0
    total = 0.0
    cap = (2 * config.target_bound) ** 2
    for inputs, labels in _as_batches(data):
        inputs_t = torch.as_tensor(inputs).to(device)
        out = model(inputs_t.float() if not inputs_t.is_floating_point() else inputs_t)
        labels_t = torch.as_tensor(labels).to(device)
        n += len(labels_t)
        if config.task == "classification":
            total += float((out.argmax(dim=1) == labels_t).sum())
        else:
            err = (out.reshape(-1).double() - labels_t.double().clamp(-config.target_bound, config.target_bound)) ** 2
            total += float(err.clamp(max=cap).sum())
    sensitivity = 1.0 if config.task == "classification" else cap
    noisy = total + float(rng.laplace(0.0, sensitivity / eps))
    if config.task == "classification":
        return {"noisy-accuracy": noisy / max(n, 1), "eval-epsilon": eps}
    return {"noisy-mse": noisy / max(n, 1), "eval-epsilon": eps}


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class FunctionalMechanismTrainer:
    """Release once, then train the head on the noisy objective (plain torch, no Flower).

    Parameters
    ----------
    model
        ``nn.Sequential`` ending with ``nn.Linear`` (or ``body``/``head`` attributes).
    data
        Local records: ``(inputs, labels)`` or an iterable of batches. Read only by
        :func:`release_from_records` (once) and, if enabled, :func:`noisy_local_evaluation`.
    config
        :class:`TrainerConfig`.
    state
        The persisted :class:`TrainerState` (from ``Context.state``); a fresh one on round 1.
    device
        Torch device for the body's forward pass and the local steps.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainerConfig,
        state: TrainerState | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig; got {type(config).__name__}")
        self.config = config
        self.model = model
        self.body, self.head = split_model(model)
        self._check_head()
        for param in self.body.parameters():
            param.requires_grad_(False)
        self.data = data
        self.state = state if state is not None else TrainerState()
        self.device = torch.device(device)
        self.ledger = (
            PrivacyLedger.from_dict(self.state.ledger)
            if self.state.ledger is not None
            else PrivacyLedger(max_epsilon=config.budget)
        )
        self._release: Release | None = (
            Release.from_dict(self.state.release) if self.state.release is not None else None
        )
        self._check_release_matches_config()
        self._warn_if_body_unbounded()

    # -- public ----------------------------------------------------------------------------------

    @property
    def release(self) -> Release | None:
        """The participant's release (``None`` before the first training round)."""
        return self._release

    def shared_release_json(self) -> str | None:
        """The release as JSON when ``share_statistics`` is on (post-processing; nothing raw)."""
        if not self.config.share_statistics or self._release is None:
            return None
        return json.dumps(self._release.to_dict())

    @property
    def epsilon_spent(self) -> float:
        """Pure epsilon spent by this participant so far (basic composition over its ledger)."""
        return float(self.ledger.total_epsilon)

    def ensure_release(self) -> Release:
        """Return the release, creating it on first use or after a body change (per the policy)."""
        if self._release is not None and self.state.body_fingerprint is not None:
            if _body_matches(self.body, self.state.body_reference):
                return self._release
            if self.config.body_change == "refuse":
                raise BodyChangedError(
                    "the server sent a feature extractor (body) that differs from the one this "
                    "participant's release was computed with; refusing to reuse stale statistics "
                    "(set body_change='re-release' to release again and charge the ledger)"
                )
            log.warning("body changed: re-releasing and charging %s to the ledger", self.config.epsilon)
        self._check_affordable(self.config.epsilon)  # before the records are read at all
        mechanism = self.config.mechanism(self.ledger)
        release = release_from_records(self.body, self.data, mechanism, self.device)
        self._release = release
        fingerprint, reference = body_fingerprint(self.body)
        self.state.release = release.to_dict()
        self.state.body_fingerprint = fingerprint
        self.state.body_reference = reference
        self.state.ledger = self.ledger.to_dict()
        self.state.records_read += 1
        return release

    def fit(self, global_state: Mapping[str, Any] | None = None) -> dict[str, float]:
        """One round: load the global parameters, minimise the noisy objective, update the head.

        Returns the metrics of the reply (``num-examples``, ``fm-epsilon``, ``fm-objective``...).
        """
        if global_state is not None:
            self.load_global(global_state)
        release = self.ensure_release()
        anchor = self.head_to_normalised()
        if self.config.solver == "closed-form":
            weights = release.solve(
                ridge=self.config.ridge,
                prox_mu=self.config.proximal_mu,
                anchor=anchor if self.config.proximal_mu > 0 else None,
            )
            weights_t = torch.as_tensor(weights, dtype=torch.float64)
        else:
            weights_t = self._iterate(release, anchor)
        self.normalised_to_head(weights_t.detach().cpu().numpy())
        objective = float(release.objective_value(weights_t.detach().cpu().numpy()))
        return {
            "num-examples": float(release.num_examples),
            "fm-epsilon": self.epsilon_spent,
            "fm-objective": objective,
        }

    def evaluate(self, global_state: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Charged local evaluation (only when ``config.local_evaluation`` is on)."""
        if not self.config.local_evaluation:
            raise RuntimeError(
                "local evaluation is off: it is a new query on private records; enable "
                "local_evaluation (charged eval_epsilon per call) or evaluate on the server"
            )
        if global_state is not None:
            self.load_global(global_state)
        seed = None if self.config.seed is None else self.config.seed + 7919 * (len(self.ledger.entries) + 1)
        metrics = noisy_local_evaluation(
            self.model, self.data, self.config, self.ledger, np.random.default_rng(seed), self.device
        )
        self.state.ledger = self.ledger.to_dict()
        metrics["fm-epsilon"] = self.epsilon_spent
        metrics["num-examples"] = float(self._num_examples_public())
        return metrics

    def load_global(self, global_state: Mapping[str, Any]) -> None:
        """Load the server's parameters (state-dict names -> arrays) into the model."""
        own = self.model.state_dict()
        missing = [k for k in own if k not in global_state]
        if missing:
            raise KeyError(f"global parameters lack {missing[:5]} (expected the model's state_dict keys)")
        converted: dict[str, torch.Tensor] = {}
        for key, reference in own.items():
            value = torch.as_tensor(np.asarray(global_state[key]))
            if tuple(value.shape) != tuple(reference.shape):
                raise ValueError(
                    f"global parameter {key!r} has shape {tuple(value.shape)}, expected {tuple(reference.shape)}"
                )
            converted[key] = value.to(reference.dtype)
        self.model.load_state_dict(converted)

    # -- head <-> normalised weights ---------------------------------------------------------------

    def head_to_normalised(self) -> np.ndarray:
        """The head's parameters as normalised FM weights (``(K, D)`` or ``(D,)``)."""
        c = self.config.feature_bound
        scale = self.config.output_scale
        weight = self.head.weight.detach().cpu().to(torch.float64).numpy() * c / scale
        bias = (
            self.head.bias.detach().cpu().to(torch.float64).numpy() / scale
            if self.head.bias is not None
            else np.zeros(weight.shape[0])
        )
        full = np.concatenate([weight, bias[:, None]], axis=1)
        if self.config.task == "regression":
            return full[0]
        return full - full.mean(axis=0, keepdims=True)  # softmax is shift invariant: centre

    @torch.no_grad()
    def normalised_to_head(self, weights: np.ndarray) -> None:
        """Write normalised FM weights into the head's parameters (needs the release's bounds)."""
        if self._release is None:
            raise RuntimeError("no release yet: call ensure_release() first")
        weight, bias = linear_head_parameters(weights, self._release)
        self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
        if self.head.bias is not None:
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))

    # -- internals ---------------------------------------------------------------------------------

    def _check_release_matches_config(self) -> None:
        """A persisted release made under another public configuration must not be reused."""
        release, cfg = self._release, self.config
        if release is None:
            return
        expected = {
            "task": cfg.task,
            "num_classes": cfg.num_classes if cfg.task == "classification" else None,
            "epsilon": float(cfg.epsilon),
            "feature_bound": float(cfg.feature_bound),
            "target_bound": float(cfg.target_bound) if cfg.task == "regression" else None,
            "neighbouring": cfg.neighbouring,
        }
        found = {key: getattr(release, key) for key in expected}
        if math.isclose(float(release.epsilon), float(cfg.epsilon), rel_tol=1e-3):
            found["epsilon"] = expected["epsilon"]  # OpenDP's calibrated map can sit just below
        if found != expected:
            diff = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
            raise ValueError(
                "the persisted release was made under another configuration (found, configured): "
                f"{diff}; use a fresh state (or state-path) for a new configuration"
            )

    def _check_affordable(self, epsilon: float) -> None:
        budget = self.ledger.max_epsilon
        total = self.ledger.total_epsilon + epsilon
        if budget is not None and total > budget:
            raise BudgetExceededError(
                f"a release of epsilon={epsilon!r} would bring this participant's total to {total!r}, "
                f"above max_epsilon={budget!r}; the records were not read"
            )

    def _num_examples_public(self) -> int:
        if self._release is not None:
            return int(self._release.num_examples)
        return 0

    def _check_head(self) -> None:
        expected = 1 if self.config.task == "regression" else self.config.num_classes
        if self.head.out_features != expected:
            raise ValueError(
                f"the head (last nn.Linear) must have {expected} outputs for this {self.config.task} "
                f"task; got {self.head.out_features}"
            )

    def _iterate(self, release: Release, anchor: np.ndarray) -> torch.Tensor:
        cfg = self.config
        objective = release.torch_objective(prox_mu=cfg.proximal_mu, ridge=cfg.ridge)
        anchor_t = torch.as_tensor(anchor, dtype=torch.float64, device=self.device)
        weights = anchor_t.clone().requires_grad_(True)
        if cfg.optimizer == "gd":
            lr = 1.0 / self._smoothness(release)
            optim: torch.optim.Optimizer = torch.optim.SGD([weights], lr=lr)
        elif cfg.optimizer == "sgd":
            optim = torch.optim.SGD([weights], lr=cfg.learning_rate)
        else:
            optim = torch.optim.Adam([weights], lr=cfg.learning_rate)
        for _ in range(cfg.local_steps):
            optim.zero_grad()
            loss = objective(weights, anchor_t if cfg.proximal_mu > 0 else None)
            loss.backward()
            optim.step()
        return weights.detach()

    def _smoothness(self, release: Release) -> float:
        """Largest curvature of the (per-example) repaired objective: a public function of the release."""
        repaired = release.repaired()
        top = float(np.max(repaired.eigvals)) if len(repaired.eigvals) else 0.0
        n = max(float(release.num_examples), 1.0)
        if self.config.task == "classification":
            curvature = top / (n * float(self.config.num_classes or 1))
        else:
            curvature = 2.0 * top / n
        return curvature + self.config.proximal_mu + self.config.ridge + 1e-12

    def _warn_if_body_unbounded(self) -> None:
        modules = list(self.body.modules())
        last = modules[-1] if modules else None
        if type(last).__name__ not in ("L2Clip", "L2Normalize", "Identity") and last is not None:
            warnings.warn(
                "the body does not end with flwr_ppcdl.models.L2Clip/L2Normalize: the functional "
                "mechanism still clips features when it releases (the guarantee holds), but the "
                "model's own forward pass does not, so inference can differ from training",
                UserWarning,
                stacklevel=3,
            )
