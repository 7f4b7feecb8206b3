"""The ClientApp of the Flower App (``flwr run .``): one functional-mechanism participant per node.

Each node learns which participant it is from Flower's node config (``partition-id``,
``num-partitions``; set by the simulation runtime, or by ``flower-supernode --node-config``) and
loads only that partition.

The run config comes from whoever submits the run; the participant protects itself from it with
its own privacy policy (:class:`~flwr_ppcdl.clients.PrivacyPolicy`, read from the node config:
``max-epsilon``, ``max-delta``, ``allowed-noise``, ``allowed-samplers``), checked before its records
are even loaded. On Flower's deployment runtime (a SuperNode) a node config without a policy means
:data:`~flwr_ppcdl.clients.DEPLOYMENT_DEFAULT` (ε <= 1, δ <= 1e-5, hardened samplers), and the
participant also refuses ``insecure-noise-seed`` and refuses to run without a ``state-path`` (its
release and ledger, integrity-checked: :class:`~flwr_ppcdl.clients.StateFile`). Simulations and the
in-process runner apply a policy only when their node config states one.
"""

from __future__ import annotations

import inspect
import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_ppcdl import wire
from flwr_ppcdl.app.experiment import load_participant, make_model, trainer_config
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.clients import (
    DEPLOYMENT_DEFAULT,
    STATE_KEY,
    ClientSetup,
    PrivacyPolicy,
    PublicError,
    StateFile,
    TrainerConfig,
    load_state,
    make_client_app,
    save_state,
)
from flwr_ppcdl.clients.message_client import error_reply

log = logging.getLogger("flwr.ppcdl.participant")  # the participant's own log (clients/errors.py)

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


def node_policy(context: Context) -> PrivacyPolicy | None:
    """The node's privacy policy: its node config's, else the deployment default on a SuperNode."""
    default = DEPLOYMENT_DEFAULT if on_deployment_runtime() else None
    return PrivacyPolicy.from_node_config(dict(context.node_config), default=default)


def participant_setup(context: Context) -> ClientSetup:
    """Build this node's participant from the run config and its node config; a run config beyond
    the node's privacy policy is refused before the partition is loaded."""
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
    config = TrainerConfig(**trainer_config(settings, partition_id))
    policy = node_policy(context)
    if policy is not None:
        policy.check(config)  # before the records are loaded (the trainer checks delta < 1/n too)
    participant = load_participant(settings, partition_id)
    return ClientSetup(
        model=make_model(settings),
        data=(participant.inputs, participant.targets),
        config=config,
        partition_id=partition_id,
        policy=policy,
    )


_participant = make_client_app(participant_setup)
app = ClientApp()


def _serve(msg: Message, context: Context, action: str) -> Message:
    """Serve ``msg`` with the state mirrored to ``state-path``: restored first (a restarted SuperNode),
    saved before the reply leaves; a state that cannot be trusted or saved becomes an error reply."""
    try:
        store = StateFile.from_node_config(context.node_config)
        if store is not None and STATE_KEY not in context.state:
            restored = store.load()
            if restored is not None:
                save_state(context, restored)
                log.info("[ppcdl] restored the release and ledger from %s (records read %d time(s) so far)",
                         store.path, restored.records_read)
    except Exception as exc:  # noqa: BLE001 - sanitised: nothing of the file reaches the reply
        return error_reply(msg, exc, action)
    reply = _participant(msg, context)
    if store is not None and STATE_KEY in context.state:
        try:  # every release the server can see is in the file before the reply leaves
            store.save(load_state(context))
        except Exception as exc:  # noqa: BLE001
            return error_reply(msg, exc, action)
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """The participant's train handler, with its state mirrored to ``state-path`` if given.

    Context.state lives in the SuperNode's memory; with ``state-path`` in the node config the
    release and the ledger (JSON, no records) also go to that file after every round, and a
    restarted SuperNode reloads them: it reuses its release and reports the epsilon it already
    spent instead of releasing (and spending) again (:class:`~flwr_ppcdl.clients.StateFile`).
    """
    return _serve(msg, context, "train")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """As ``train``, for (charged, opt-in) local evaluation requests."""
    return _serve(msg, context, "evaluate")
