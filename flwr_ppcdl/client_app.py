"""The ClientApp of the Flower App (``flwr run .``): one functional-mechanism participant per node.

Each node learns which participant it is from Flower's node config (``partition-id``,
``num-partitions``; set by the simulation runtime, or by ``flower-supernode --node-config``) and
loads only that partition.
"""

from __future__ import annotations

from flwr.app import Context

from flwr_ppcdl.clients import ClientSetup, TrainerConfig, make_client_app
from flwr_ppcdl.task import RunSettings, load_participant, make_model, trainer_config


def participant_setup(context: Context) -> ClientSetup:
    """Build this node's participant from the run config and its node config."""
    settings = RunSettings.from_config(dict(context.run_config))
    node = context.node_config
    if "partition-id" not in node:
        raise KeyError("node config lacks 'partition-id' (start the SuperNode with --node-config \"partition-id=N num-partitions=M\")")
    partition_id = int(node["partition-id"])
    num_partitions = int(node.get("num-partitions", settings.num_partitions))
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


app = make_client_app(participant_setup)
