"""`FunctionalMechanismTrainer`: release once, then train the head on the noisy objective (plain torch).

The participant's records are read only by :mod:`flwr_ppcdl.clients.records`. Everything the
trainer does after the release (:meth:`FunctionalMechanismTrainer.fit`) is post-processing: it
minimises the noisy objective starting from the global parameters, any number of steps and rounds,
at no further privacy cost.

Units. The functional mechanism works on bounded features ``h = clip_l2(phi(x) / c)`` with a bias
coordinate appended, and (regression) on targets ``y / B`` clipped to ``[-1, 1]``; the model's head
``nn.Linear`` acts on ``phi(x)`` directly (:mod:`flwr_ppcdl.privacy.units` converts both ways).
Inference matches training exactly when the body output already satisfies ``||phi(x)|| <= c`` - end
the body with :class:`flwr_ppcdl.models.L2Clip` or :class:`flwr_ppcdl.models.L2Normalize`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from flwr_ppcdl import wire
from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.clients.errors import PublicError, PublicValueError
from flwr_ppcdl.clients.model import (
    BodyChangedError,
    body_fingerprint,
    body_matches,
    check_head,
    split_model,
    warn_if_body_unbounded,
)
from flwr_ppcdl.clients.policy import PrivacyPolicy
from flwr_ppcdl.clients.records import noisy_local_evaluation, release_from_records
from flwr_ppcdl.clients.state import TrainerState
from flwr_ppcdl.privacy import (
    BudgetExceededError,
    FunctionalMechanism,
    PrivacyLedger,
    Release,
    linear_head_parameters,
    normalised_from_head,
)

log = logging.getLogger("flwr.ppcdl.participant")  # the participant's own log (clients/errors.py)


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
    policy
        The participant's own :class:`~flwr_ppcdl.clients.policy.PrivacyPolicy`: ``config`` is
        checked against it here, before anything is read, and the ledger's budget is at most its
        ``max_epsilon`` for every later charge (releases and evaluations). ``None``: no policy.

    A persisted ``state`` whose ledger does not account for its release is refused
    (:class:`~flwr_ppcdl.clients.state.StateError`), never read as "nothing spent".
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainerConfig,
        state: TrainerState | None = None,
        device: str | torch.device = "cpu",
        policy: PrivacyPolicy | None = None,
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig; got {type(config).__name__}")
        if policy is not None:
            policy.check(config, local_count(data))
        self.policy = policy
        self.config = config
        self.model = model
        self.body, self.head = split_model(model)
        check_head(self.head, config.task, config.num_classes)
        for param in self.body.parameters():
            param.requires_grad_(False)
        self.data = data
        self.state = state if state is not None else TrainerState()
        self.state.check()
        self.device = torch.device(device)
        self.ledger = (
            PrivacyLedger.from_dict(self.state.ledger)
            if self.state.ledger is not None
            else PrivacyLedger(max_epsilon=config.budget, delta=config.ledger_delta)
        )
        if policy is not None and not (self.ledger.max_epsilon is not None and self.ledger.max_epsilon <= policy.max_epsilon):
            self.ledger.max_epsilon = policy.max_epsilon  # every later charge stays within the policy
        self._release: Release | None = (
            Release.from_dict(self.state.release) if self.state.release is not None else None
        )
        self._check_release_matches_config()
        if self._release is not None and not self._release.restore_repaired(self.state.repaired):
            self.state.repaired = None  # stale or missing: recomputed (and saved) on first use
        warn_if_body_unbounded(self.body)

    # -- public ----------------------------------------------------------------------------------

    @property
    def release(self) -> Release | None:
        """The participant's release (``None`` before the first training round)."""
        return self._release

    def shared_release_json(self) -> str | None:
        """The release as JSON when ``share_statistics`` is on (post-processing; nothing raw)."""
        if not self.config.share_statistics or self._release is None:
            return None
        return wire.encode_release(self._release)

    @property
    def epsilon_spent(self) -> float:
        """Epsilon spent by this participant so far (its ledger's composed total)."""
        return float(self.ledger.total_epsilon)

    @property
    def delta_spent(self) -> float:
        """Delta of that total: 0 while every release is pure (Laplace), else the ledger's delta."""
        return float(self.ledger.total_delta)

    def ensure_release(self) -> Release:
        """Return the release, creating it on first use or after a body change (per the policy)."""
        if self._release is not None and self.state.body_fingerprint is not None:
            if body_matches(self.body, self.state.body_reference):
                return self._release
            if self.config.body_change == "refuse":
                raise BodyChangedError(
                    "the server sent a feature extractor (body) that differs from the one this "
                    "participant's release was computed with; refusing to reuse stale statistics "
                    "(set body_change='re-release' to release again and charge the ledger)"
                )
            log.warning(
                "body changed: re-releasing and charging epsilon=%s (delta=%s) to the ledger",
                self.config.epsilon, self.config.ledger_delta or 0.0,
            )
        mechanism = self.config.mechanism(self.ledger)
        self._check_affordable(mechanism)  # before the records are read at all
        release = release_from_records(self.body, self.data, mechanism, self.device)
        self._release = release
        fingerprint, reference = body_fingerprint(self.body)
        self.state.release = release.to_dict()
        self.state.repaired = None
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
                decoder=self.config.decoder,
            )
            weights_t = torch.as_tensor(weights, dtype=torch.float64)
        else:
            weights_t = self._iterate(release, anchor)
        self.normalised_to_head(weights_t.detach().cpu().numpy())
        objective = float(release.objective_value(weights_t.detach().cpu().numpy()))
        if self.state.repaired is None:  # keep the eigen-repair with the release (post-processing)
            self.state.repaired = release.repaired_to_dict()
        return {
            wire.NUM_EXAMPLES: float(release.num_examples),
            wire.FM_EPSILON: self.epsilon_spent,
            wire.FM_DELTA: self.delta_spent,
            wire.FM_OBJECTIVE: objective,
        }

    def evaluate(self, global_state: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Charged local evaluation (only when ``config.local_evaluation`` is on)."""
        if not self.config.local_evaluation:
            raise PublicError(
                "local evaluation is off: it is a new query on private records; enable "
                "local_evaluation (charged eval_epsilon per call) or evaluate on the server"
            )
        if global_state is not None:
            self.load_global(global_state)
        seed = self.config.insecure_noise_seed
        if seed is not None:  # reproducible (NOT private) noise, a different stream per charge
            seed += 7919 * (len(self.ledger.entries) + 1)
        metrics = noisy_local_evaluation(
            self.model, self.data, self.config, self.ledger, np.random.default_rng(seed), self.device
        )
        self.state.ledger = self.ledger.to_dict()
        metrics[wire.FM_EPSILON] = self.epsilon_spent
        metrics[wire.FM_DELTA] = self.delta_spent
        metrics[wire.NUM_EXAMPLES] = float(self._num_examples_public())
        return metrics

    def load_global(self, global_state: Mapping[str, Any]) -> None:
        """Load the server's parameters (state-dict names -> arrays) into the model."""
        own = self.model.state_dict()
        missing = [k for k in own if k not in global_state]
        if missing:  # the server's parameters and the public model: nothing private in these errors
            raise PublicValueError(f"global parameters lack {missing[:5]} (expected the model's state_dict keys)")
        converted: dict[str, torch.Tensor] = {}
        for key, reference in own.items():
            value = torch.as_tensor(np.asarray(global_state[key]))
            if tuple(value.shape) != tuple(reference.shape):
                raise PublicValueError(
                    f"global parameter {key!r} has shape {tuple(value.shape)}, expected {tuple(reference.shape)}"
                )
            converted[key] = value.to(reference.dtype)
        self.model.load_state_dict(converted)

    # -- head <-> normalised weights ---------------------------------------------------------------

    def head_to_normalised(self) -> np.ndarray:
        """The head's parameters as normalised FM weights (``(K, D)`` or ``(D,)``)."""
        bias = self.head.bias.detach().cpu().to(torch.float64).numpy() if self.head.bias is not None else None
        return normalised_from_head(
            self.head.weight.detach().cpu().to(torch.float64).numpy(),
            bias,
            task=self.config.task,
            feature_bound=self.config.feature_bound,
            target_bound=self.config.target_bound,
        )

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
            "noise": cfg.noise,
            "delta": float(cfg.delta or 0.0) if cfg.noise == "gaussian" and math.isfinite(cfg.epsilon) else 0.0,
        }
        found = {key: getattr(release, key) for key in expected}
        if math.isclose(float(release.epsilon), float(cfg.epsilon), rel_tol=1e-3):
            found["epsilon"] = expected["epsilon"]  # OpenDP's calibrated map can sit just below
        if found != expected:
            diff = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
            raise PublicValueError(
                "the persisted release was made under another configuration (found, configured): "
                f"{diff}; use a fresh state (or state-path) for a new configuration"
            )

    def _check_affordable(self, mechanism: FunctionalMechanism) -> None:
        budget = self.ledger.max_epsilon
        planned = mechanism.planned_guarantee()
        total = self.ledger.projected(planned.epsilon, delta=planned.delta, rho=planned.rho)
        if budget is not None and total.epsilon > budget:
            raise BudgetExceededError(
                f"a release of epsilon={planned.epsilon!r} (delta={planned.delta!r}) would bring this "
                f"participant's total to epsilon={total.epsilon!r} (delta={total.delta!r}), above "
                f"max_epsilon={budget!r}; the records were not read"
            )

    def _num_examples_public(self) -> int:
        if self._release is not None:
            return int(self._release.num_examples)
        return 0

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


def local_count(data: Any) -> int:
    """How many local records there are, without reading them (1 when it cannot be told)."""
    try:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return max(int(len(data[0])), 1)
        dataset = getattr(data, "dataset", None)
        if dataset is not None:
            return max(int(len(dataset)), 1)
    except TypeError:
        pass
    return 1
