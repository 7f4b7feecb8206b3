"""The ClientApp of the Flower App (``flwr run .``): one functional-mechanism participant per node.

Each node learns which participant it is from Flower's node config (``partition-id``,
``num-partitions``; set by the simulation runtime, or by ``flower-supernode --node-config``) and
loads only that partition.

On Flower's deployment runtime (a SuperNode) the participant protects itself from the run config,
which the submitter controls: it refuses ``insecure-noise-seed`` (predictable noise) and refuses
to run without a ``state-path`` (a restarted SuperNode would release again while reporting only
the new release's ε).
"""

from __future__ import annotations

import inspect
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
    PublicError,
    TrainerConfig,
    TrainerState,
    load_state,
    make_client_app,
    save_state,
)

log = logging.getLogger("flwr")

DEPLOYMENT_RUNNER = "flwr.supernode.runtime.run_clientapp"
"""The module through which Flower 1.42's SuperNode runs every ClientApp (``flwr-clientapp``,
isolation ``subprocess`` or ``process``); simulations and the in-process grid never use it."""


def on_deployment_runtime() -> bool:
    """Whether this ClientApp is being run by a SuperNode (Flower's deployment runtime)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__") == DEPLOYMENT_RUNNER:
            return True
        frame = frame.f_back
    return False


def refuse_unsafe_deployment(settings: RunSettings, node_config: dict[str, object]) -> None:
    """On the deployment runtime, refuse what would make the reported ε or the noise untrue.

    Raises
    ------
    PublicError
        ``insecure-noise-seed`` is set (the noise would be predictable from the run config), or
        the node config has no ``state-path`` (a restart would release again unreported).
    """
    if settings.reproducible_noise:
        raise PublicError(
            f"insecure-noise-seed={settings.insecure_noise_seed} is refused on the deployment runtime: "
            "it makes this participant's noise predictable from the run config (NOT private)"
        )
    if not node_config.get(wire.NODE_STATE_PATH):
        raise PublicError(
            f"the deployment runtime needs {wire.NODE_STATE_PATH!r} in the node config: without a "
            "persistent state a restarted SuperNode would release again and report only the new "
            "release's epsilon"
        )


def participant_setup(context: Context) -> ClientSetup:
    """Build this node's participant from the run config and its node config."""
    settings = RunSettings.from_config(dict(context.run_config))
    node = context.node_config
    if on_deployment_runtime():
        refuse_unsafe_deployment(settings, dict(node))
    if wire.NODE_PARTITION_ID not in node:
        raise KeyError(
            f"node config lacks {wire.NODE_PARTITION_ID!r} (start the SuperNode with --node-config "
            f"\"{wire.NODE_PARTITION_ID}=N {wire.NODE_NUM_PARTITIONS}=M\")"
        )
    partition_id = int(node[wire.NODE_PARTITION_ID])
    num_partitions = int(node.get(wire.NODE_NUM_PARTITIONS, settings.num_partitions))
    settings = settings.with_partitions(num_partitions)  # num-partitions = 0: the federation's size
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
        tmp.touch()
        tmp.chmod(0o600)  # the participant's own ledger: readable by its owner only
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
