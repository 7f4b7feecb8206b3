"""`FunctionalMechanismClient`: the legacy-API (`NumPyClient`) flavour of the private client."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.client import NumPyClient
from torch import nn

from flwr_ppcdl import wire
from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.clients.errors import (
    ParticipantError,
    PublicError,
    PublicValueError,
    log_locally,
    public_error,
)
from flwr_ppcdl.clients.message_client import evaluate_without_records
from flwr_ppcdl.clients.policy import PrivacyPolicy
from flwr_ppcdl.clients.state import load_state, save_state
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer


class FunctionalMechanismClient(NumPyClient):
    """A `NumPyClient` that trains a PyTorch model's linear head on a functional-mechanism release.

    Swap it in for an ordinary `NumPyClient` to get record-level differential privacy for the whole
    federated run (pure epsilon-DP with ``noise="laplace"``, (epsilon, delta)-DP with
    ``noise="gaussian", delta=...``): the client reads its records once (first `fit`), releases noisy statistics, and
    every later round only re-optimises the noisy objective. Flower builds a new client object each
    round, so the release and the privacy ledger live in ``context.state``; pass the `Context` your
    ``client_fn`` receives (a plain dict works outside Flower).

    Parameters
    ----------
    model
        ``nn.Sequential`` ending with ``nn.Linear`` (the head); everything before is the frozen body.
    data
        ``(inputs, labels)`` arrays/tensors or an iterable of batches (a ``DataLoader``).
    context
        Flower ``Context`` (or a dict) where the release and ledger persist between rounds.
    device
        Torch device.
    partition_id
        Reported in the metrics for bookkeeping only (never a security claim).
    policy
        The participant's own :class:`~flwr_ppcdl.clients.policy.PrivacyPolicy`: a configuration
        beyond it is refused here (:class:`ParticipantError` naming the violation), before any record
        is read; later charges stay within its ``max_epsilon``.
    **config
        Keyword arguments of :class:`~flwr_ppcdl.clients.trainer.TrainerConfig`: ``task``,
        ``epsilon``, ``num_classes``, ``feature_bound``, ``target_bound``, ``local_steps``,
        ``learning_rate``, ``optimizer``, ``solver``, ``proximal_mu``, ``ridge``, ``body_change``,
        ``max_epsilon``, ``local_evaluation``, ``eval_epsilon``, ``sampler``, ``noise``, ``delta``,
        ``decoder``, ``neighbouring``,
        ``insecure_noise_seed`` (reproducible, NOT private noise: tests only).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        context: Any,
        device: str = "cpu",
        partition_id: int | None = None,
        policy: PrivacyPolicy | None = None,
        **config: Any,
    ) -> None:
        self.config = TrainerConfig(**config)
        self.context = context
        self.partition_id = partition_id
        try:
            self.trainer = FunctionalMechanismTrainer(model, data, self.config, load_state(context), device, policy=policy)
        except PublicError as exc:  # a policy refusal: nothing was read; Flower reports the message
            log_locally(exc, "setup")
            raise ParticipantError(public_error(exc)) from None
        self._keys = list(model.state_dict().keys())

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        """All model parameters and buffers, in ``state_dict`` order."""
        return [v.detach().cpu().numpy() for v in self.trainer.model.state_dict().values()]

    def _global_state(self, parameters: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(parameters) != len(self._keys):  # about the server's message and the public model
            raise PublicValueError(
                f"received {len(parameters)} arrays, the model has {len(self._keys)} "
                f"({', '.join(self._keys[:4])}...)"
            )
        return dict(zip(self._keys, parameters, strict=True))

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train the head on the noisy objective from the global parameters.

        A failure is logged here in full and re-raised as :class:`ParticipantError`, whose message
        (what Flower puts in the error reply) names no record's value or position.
        """
        try:
            metrics = self.trainer.fit(self._global_state(parameters))
        except Exception as exc:  # noqa: BLE001 - sanitised before it can reach the wire
            log_locally(exc, "fit")
            raise ParticipantError(public_error(exc)) from None
        finally:
            save_state(self.context, self.trainer.state)  # the ledger survives a failing round
        if self.partition_id is not None:
            metrics[wire.PARTITION_ID] = int(self.partition_id)
        reply: dict[str, Any] = dict(metrics)
        shared = self.trainer.shared_release_json()
        if shared is not None:
            reply[wire.FM_RELEASE] = shared  # legacy metrics allow strings
        return self.get_parameters({}), int(metrics[wire.NUM_EXAMPLES]), reply

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """Charged, noisy local evaluation with ``local_evaluation=True``; otherwise an answer that
        reads no record and spends nothing (:func:`~flwr_ppcdl.clients.message_client.evaluate_without_records`:
        the loss is the release's noisy objective at the global model, 0.0 before any release).

        Flower's FedAvg asks every client to evaluate by default; this never turns that into an error.
        """
        if not self.config.local_evaluation:
            metrics = evaluate_without_records(self.trainer, self._global_state(parameters))
            return metrics.get(wire.FM_OBJECTIVE, 0.0), int(metrics[wire.NUM_EXAMPLES]), metrics
        try:
            metrics = self.trainer.evaluate(self._global_state(parameters))
        except Exception as exc:  # noqa: BLE001
            log_locally(exc, "evaluate")
            raise ParticipantError(public_error(exc)) from None
        finally:
            save_state(self.context, self.trainer.state)
        loss = metrics.get("noisy-mse", 1.0 - metrics.get("noisy-accuracy", 0.0))
        return float(loss), int(metrics[wire.NUM_EXAMPLES]), metrics
