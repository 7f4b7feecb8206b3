"""Message-API flavour: a `ClientApp` factory built on the same trainer core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from torch import nn

from flwr_ppcdl import wire
from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.clients.errors import log_locally, public_error
from flwr_ppcdl.clients.state import load_state, save_state
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer


@dataclass
class ClientSetup:
    """What one participant brings: its model, its local records and the public configuration."""

    model: nn.Module
    data: Any
    config: TrainerConfig
    device: str = "cpu"
    partition_id: int | None = None


def _trainer(setup: ClientSetup, context: Context) -> FunctionalMechanismTrainer:
    return FunctionalMechanismTrainer(
        setup.model, setup.data, setup.config, load_state(context), setup.device
    )


def _reply(msg: Message, trainer: FunctionalMechanismTrainer, metrics: dict[str, Any], setup: ClientSetup) -> Message:
    if setup.partition_id is not None:
        metrics[wire.PARTITION_ID] = int(setup.partition_id)
    records: dict[str, Any] = {
        wire.ARRAYS: ArrayRecord(trainer.model.state_dict()),
        wire.METRICS: MetricRecord({k: v for k, v in metrics.items()}),
    }
    shared = trainer.shared_release_json()
    if shared is not None:
        records[wire.FM_RELEASE] = ConfigRecord({wire.RELEASE_JSON: shared})
    return Message(content=RecordDict(records), reply_to=msg)


def _error_reply(msg: Message, exc: Exception, action: str) -> Message:
    """Log ``exc`` in full here; reply with a reason that names no record's value or position."""
    log_locally(exc, action)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=public_error(exc)), reply_to=msg)


def _global_arrays(msg: Message) -> ArrayRecord:
    arrays = msg.content.array_records.get(wire.ARRAYS)
    if arrays is None:
        raise KeyError(f"the server's message has no ArrayRecord {wire.ARRAYS!r} (is it a Message-API strategy?)")
    return arrays


def make_client_app(setup_fn: Callable[[Context], ClientSetup]) -> ClientApp:
    """Build a Message-API `ClientApp` whose participants train on a functional-mechanism release.

    ``setup_fn(context)`` returns the participant's :class:`ClientSetup` (model, data, config).
    The release and the privacy ledger persist in ``context.state`` across rounds, so the run
    spends each participant's epsilon once. Train replies carry ``arrays`` (the whole model, body
    unchanged) and ``metrics`` (``num-examples``, ``fm-epsilon``, ``fm-objective``, optionally
    ``partition-id``). Evaluate requests are served only with ``local_evaluation`` on (charged);
    otherwise they fail with a message saying so (use server-side evaluation).

    A failure becomes an error reply whose reason names the problem but never a record's value or
    position (:func:`~flwr_ppcdl.clients.errors.public_error`); the full error goes to the
    participant's own log. The reply is returned, not raised, so the runtime keeps the updated
    ``context.state`` (the ledger) even for a failed round.
    """
    app = ClientApp()

    def handle(msg: Message, context: Context, action: str) -> Message:
        try:
            setup = setup_fn(context)
            trainer = _trainer(setup, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sanitised error reply
            return _error_reply(msg, exc, action)
        step = trainer.fit if action == "train" else trainer.evaluate
        try:
            metrics = step(_global_arrays(msg).to_torch_state_dict())
        except Exception as exc:  # noqa: BLE001
            return _error_reply(msg, exc, action)
        finally:
            save_state(context, trainer.state)  # the ledger survives a failing round
        return _reply(msg, trainer, metrics, setup)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle(msg, context, "train")

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle(msg, context, "evaluate")

    return app
