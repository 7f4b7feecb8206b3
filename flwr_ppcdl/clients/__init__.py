"""Participant side: functional-mechanism clients for both Flower API generations.

* :class:`FunctionalMechanismClient` - a ``NumPyClient`` for legacy projects (:mod:`.numpy_client`).
* :func:`make_client_app` - a Message-API ``ClientApp`` factory (:mod:`.message_client`).
* :class:`FunctionalMechanismTrainer` - the plain-torch core both are built on (:mod:`.trainer`),
  with its configuration (:mod:`.config`), persisted state (:mod:`.state`), model contract
  (:mod:`.model`), the only two readers of records (:mod:`.records`) and what an error reply may
  say (:mod:`.errors`).
* :class:`PrivacyPolicy` - the participant's own limit on what a run may spend (:mod:`.policy`);
  :class:`StateFile` - its integrity-checked, grow-only state file (:mod:`.state_file`).
"""

from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.clients.errors import ParticipantError, PublicError, public_error
from flwr_ppcdl.clients.message_client import ClientSetup, make_client_app
from flwr_ppcdl.clients.model import BodyChangedError, split_model
from flwr_ppcdl.clients.numpy_client import FunctionalMechanismClient
from flwr_ppcdl.clients.policy import DEPLOYMENT_DEFAULT, PolicyViolation, PrivacyPolicy
from flwr_ppcdl.clients.records import noisy_local_evaluation, release_from_records
from flwr_ppcdl.clients.state import STATE_KEY, StateError, TrainerState, load_state, save_state
from flwr_ppcdl.clients.state_file import StateFile, StateFileError
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer

__all__ = [
    "DEPLOYMENT_DEFAULT",
    "STATE_KEY",
    "BodyChangedError",
    "ClientSetup",
    "FunctionalMechanismClient",
    "FunctionalMechanismTrainer",
    "ParticipantError",
    "PolicyViolation",
    "PrivacyPolicy",
    "PublicError",
    "StateError",
    "StateFile",
    "StateFileError",
    "TrainerConfig",
    "TrainerState",
    "load_state",
    "make_client_app",
    "noisy_local_evaluation",
    "public_error",
    "release_from_records",
    "save_state",
    "split_model",
]
