"""Message-API flavour: a `ClientApp` factory built on the same trainer core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from flwr_ppcdl import wire
from flwr_ppcdl.clients.config import TrainerConfig
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
    unchanged) and ``metrics`` (``num-examples``, ``fm-epsilon``, ``fm-delta``, ``fm-objective``, optionally
    ``partition-id``). Evaluate requests are served only with ``local_evaluation`` on (charged);
    otherwise they fail with a message saying so (use server-side evaluation).
    """
    app = ClientApp()

    def handle(msg: Message, context: Context, action: str) -> Message:
        setup = setup_fn(context)
        trainer = _trainer(setup, context)
        step = trainer.fit if action == "train" else trainer.evaluate
        try:
            metrics = step(_global_arrays(msg).to_torch_state_dict())
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
