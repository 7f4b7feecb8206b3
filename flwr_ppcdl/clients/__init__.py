"""Participant side: functional-mechanism clients for both Flower API generations.

* :class:`FunctionalMechanismClient` - a ``NumPyClient`` for legacy projects.
* :func:`make_client_app` - a Message-API ``ClientApp`` factory.
* :class:`FunctionalMechanismTrainer` - the plain-torch core both are built on.
"""

from flwr_ppcdl.clients.client_app import ClientSetup, make_client_app
from flwr_ppcdl.clients.numpy_client import FunctionalMechanismClient
from flwr_ppcdl.clients.trainer import (
    BodyChangedError,
    FunctionalMechanismTrainer,
    TrainerConfig,
    TrainerState,
    load_state,
    noisy_local_evaluation,
    release_from_records,
    save_state,
    split_model,
)

__all__ = [
    "BodyChangedError",
    "ClientSetup",
    "FunctionalMechanismClient",
    "FunctionalMechanismTrainer",
    "TrainerConfig",
    "TrainerState",
    "load_state",
    "make_client_app",
    "noisy_local_evaluation",
    "release_from_records",
    "save_state",
    "split_model",
]
