"""The ClientApp of the Flower App (``flwr run .``): one functional-mechanism participant per node.

Each node learns which participant it is from Flower's node config (``partition-id``,
``num-partitions``; set by the simulation runtime, or by ``flower-supernode --node-config``) and
loads only that partition.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_ppcdl import wire
from flwr_ppcdl.app.experiment import load_participant, make_model, trainer_config
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.clients import (
    STATE_KEY,
    ClientSetup,
    TrainerConfig,
    TrainerState,
    load_state,
    make_client_app,
    save_state,
)

log = logging.getLogger("flwr")


def participant_setup(context: Context) -> ClientSetup:
    """Build this node's participant from the run config and its node config."""
    settings = RunSettings.from_config(dict(context.run_config))
    node = context.node_config
    if wire.NODE_PARTITION_ID not in node:
        raise KeyError(
            f"node config lacks {wire.NODE_PARTITION_ID!r} (start the SuperNode with --node-config "
            f"\"{wire.NODE_PARTITION_ID}=N {wire.NODE_NUM_PARTITIONS}=M\")"
        )
    partition_id = int(node[wire.NODE_PARTITION_ID])
    num_partitions = int(node.get(wire.NODE_NUM_PARTITIONS, settings.num_partitions))
    if num_partitions != settings.num_partitions:
        raise ValueError(
            f"this node belongs to a federation of {num_partitions} partitions but the run config "
            f"says num-partitions={settings.num_partitions}; make them agree"
        )
    participant = load_participant(settings, partition_id)
    config = TrainerConfig(**trainer_config(settings, partition_id))
    return ClientSetup(
        model=make_model(settings),
        data=(participant.inputs, participant.targets),
        config=config,
        partition_id=partition_id,
    )


_participant = make_client_app(participant_setup)
app = ClientApp()


def _state_path(context: Context) -> Path | None:
    value = context.node_config.get(wire.NODE_STATE_PATH)
    return Path(str(value)).expanduser() if value else None


def _restore(context: Context) -> None:
    """A (re)started SuperNode reloads its release and ledger instead of releasing again."""
    path = _state_path(context)
    if path is not None and STATE_KEY not in context.state and path.exists():
        state = TrainerState.from_json(path.read_text())
        save_state(context, state)
        log.info("[ppcdl] restored the release and ledger from %s (records read %d time(s) so far)", path, state.records_read)


def _persist(context: Context) -> None:
    path = _state_path(context)
    if path is not None and STATE_KEY in context.state:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(load_state(context).to_json())
        tmp.replace(path)  # atomic: a node killed mid-write keeps the previous file


def _serve(msg: Message, context: Context) -> Message:
    _restore(context)
    try:
        return _participant(msg, context)
    finally:
        _persist(context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """The participant's train handler, with its state mirrored to ``state-path`` if given.

    Context.state lives in the SuperNode's memory; with ``state-path`` in the node config the
    release and the ledger (JSON, no records) also go to that file after every round, and a
    restarted SuperNode reloads them: it reuses its release and reports the epsilon it already
    spent instead of releasing (and spending) again.
    """
    return _serve(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """As ``train``, for (charged, opt-in) local evaluation requests."""
    return _serve(msg, context)
