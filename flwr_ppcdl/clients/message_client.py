"""Message-API flavour: a `ClientApp` factory built on the same trainer core."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from torch import nn

from flwr_ppcdl import wire
from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.clients.errors import log as participant_log
from flwr_ppcdl.clients.errors import log_locally, public_error
from flwr_ppcdl.clients.policy import PrivacyPolicy
from flwr_ppcdl.clients.state import load_state, save_state
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer, local_count

log = logging.getLogger("flwr.ppcdl.participant")  # the participant's own log (clients/errors.py)


@dataclass
class ClientSetup:
    """What one participant brings: its model, its local records, the public configuration and,
    optionally, its own :class:`~flwr_ppcdl.clients.policy.PrivacyPolicy` (checked before any record
    is read; it overrides the one given to :func:`make_client_app`)."""

    model: nn.Module
    data: Any
    config: TrainerConfig
    device: str = "cpu"
    partition_id: int | None = None
    policy: PrivacyPolicy | None = None


def _trainer(setup: ClientSetup, context: Context, policy: PrivacyPolicy | None) -> FunctionalMechanismTrainer:
    return FunctionalMechanismTrainer(
        setup.model, setup.data, setup.config, load_state(context), setup.device, policy=setup.policy or policy
    )


def log_spending(trainer: FunctionalMechanismTrainer) -> None:
    """State in the participant's own log what it has spent, and under which policy."""
    policy = trainer.policy
    participant_log.log(
        logging.INFO if policy is not None else logging.DEBUG,  # a simulated participant has no log of its own
        "[ppcdl] privacy: this participant has spent epsilon=%.6g, delta=%.3g in total (record level, %d "
        "ledger entries, records read %d time(s)); policy: %s",
        trainer.epsilon_spent, trainer.delta_spent, len(trainer.ledger.entries), trainer.state.records_read,
        policy.describe() if policy is not None else "none (no policy given)",
    )


def _reply(msg: Message, trainer: FunctionalMechanismTrainer, metrics: dict[str, Any], setup: ClientSetup) -> Message:
    if setup.partition_id is not None:
        metrics[wire.PARTITION_ID] = int(setup.partition_id)
    records: dict[str, Any] = {wire.METRICS: MetricRecord({k: v for k, v in metrics.items()})}
    is_train = msg.metadata.message_type == MessageType.TRAIN
    if is_train:  # an evaluation reply carries metrics only, as Flower's own ClientApps do
        records[wire.ARRAYS] = ArrayRecord(trainer.model.state_dict())
    shared = trainer.shared_release_json() if is_train else None
    if shared is not None:
        records[wire.FM_RELEASE] = ConfigRecord({wire.RELEASE_JSON: shared})
    return Message(content=RecordDict(records), reply_to=msg)


def evaluate_without_records(trainer: FunctionalMechanismTrainer, global_state: Mapping[str, Any]) -> dict[str, float]:
    """Answer an evaluation request when local evaluation is off: no record is read, no ε spent.

    Flower's FedAvg asks every client to evaluate by default (``fraction_evaluate=1.0``); a
    drop-in client must not turn that default into errors, nor query its private records for it.
    The reply holds ``num-examples`` (the release's public ``n``; before the first release, the
    size of the local data set, else 1), ``fm-epsilon``, ``fm-delta`` and, once there is a release,
    ``fm-objective``: the release's noisy objective at the global head (post-processing of what
    was already released, per example). It is not a test loss: evaluate on the server for that.
    """
    trainer.load_global(global_state)
    release = trainer.release
    metrics: dict[str, float] = {
        wire.NUM_EXAMPLES: float(release.num_examples if release is not None else local_count(trainer.data)),
        wire.FM_EPSILON: trainer.epsilon_spent,
        wire.FM_DELTA: trainer.delta_spent,
    }
    if release is not None:
        metrics[wire.FM_OBJECTIVE] = float(release.objective_value(trainer.head_to_normalised()))
    log.info(
        "[ppcdl] evaluate: local evaluation is off (it would query private records); replying with %s "
        "(no record read, no epsilon spent). Evaluate on the server (evaluate_fn) for test metrics.",
        "the release's noisy objective at the global model" if release is not None else "no metric (no release yet)",
    )
    return metrics


def error_reply(msg: Message, exc: Exception, action: str) -> Message:
    """Log ``exc`` in full here; reply with a reason that names no record's value or position."""
    log_locally(exc, action)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=public_error(exc)), reply_to=msg)


def _global_arrays(msg: Message) -> ArrayRecord:
    arrays = msg.content.array_records.get(wire.ARRAYS)
    if arrays is None:
        raise KeyError(f"the server's message has no ArrayRecord {wire.ARRAYS!r} (is it a Message-API strategy?)")
    return arrays


def make_client_app(setup_fn: Callable[[Context], ClientSetup], *, policy: PrivacyPolicy | None = None) -> ClientApp:
    """Build a Message-API `ClientApp` whose participants train on a functional-mechanism release.

    ``setup_fn(context)`` returns the participant's :class:`ClientSetup` (model, data, config).
    The release and the privacy ledger persist in ``context.state`` across rounds, so the run
    spends each participant's epsilon once. Train replies carry ``arrays`` (the whole model, body
    unchanged) and ``metrics`` (``num-examples``, ``fm-epsilon``, ``fm-delta``, ``fm-objective``, optionally
    ``partition-id``). Evaluate requests get a charged, noisy local evaluation with
    ``local_evaluation`` on; otherwise :func:`evaluate_without_records` answers them (no record
    read, no ε spent; evaluate on the server for test metrics).

    ``policy`` (or a setup's own) is the participant's :class:`~flwr_ppcdl.clients.policy.PrivacyPolicy`:
    a configuration beyond it is refused before any record is read (an error reply), and every
    round's log states what the participant has spent and under which policy.

    A failure becomes an error reply whose reason names the problem but never a record's value or
    position (:func:`~flwr_ppcdl.clients.errors.public_error`); the full error goes to the
    participant's own log. The reply is returned, not raised, so the runtime keeps the updated
    ``context.state`` (the ledger) even for a failed round.
    """
    app = ClientApp()

    def handle(msg: Message, context: Context, action: str) -> Message:
        try:
            setup = setup_fn(context)
            trainer = _trainer(setup, context, policy)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sanitised error reply
            return error_reply(msg, exc, action)
        try:
            state = _global_arrays(msg).to_torch_state_dict()
            if action == "train":
                metrics = trainer.fit(state)
            elif setup.config.local_evaluation:
                metrics = trainer.evaluate(state)
            else:
                metrics = evaluate_without_records(trainer, state)
        except Exception as exc:  # noqa: BLE001
            return error_reply(msg, exc, action)
        finally:
            save_state(context, trainer.state)  # the ledger survives a failing round
            if trainer.policy is not None:
                log_spending(trainer)
        return _reply(msg, trainer, metrics, setup)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle(msg, context, "train")

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle(msg, context, "evaluate")

    return app
