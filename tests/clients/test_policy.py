"""The participant's privacy policy (issue #23, item 1): what a node agreed to spend, from its own
node config, enforced before anything is read or released.

The reproductions go through the public path: the App's ClientApp called from a frame of Flower's
SuperNode runner module (exactly how ``on_deployment_runtime`` recognises a SuperNode), over the
in-process grid with the real ServerApp logic; the server sees error replies and stops.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import flwr_ppcdl.app.client_app as client_app
from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import RunFailed, run_server
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.clients import (
    DEPLOYMENT_DEFAULT,
    ClientSetup,
    FunctionalMechanismClient,
    FunctionalMechanismTrainer,
    ParticipantError,
    PolicyViolation,
    PrivacyPolicy,
    PublicError,
    StateFile,
    TrainerConfig,
    load_state,
    make_client_app,
)

from .helpers import digits_model

BASE: dict[str, Any] = {
    "dataset": "digits", "task": "classification", "unreliable-kind": "random-labels",
    "num-partitions": 2, "num-rounds": 1, "plot": False, "strategy": "fedavg",
}


def _as_supernode(app: Any) -> Any:
    """``app`` called from a frame of Flower's SuperNode runner module, as the deployment runtime does."""
    runner: dict[str, Any] = {"__name__": client_app.DEPLOYMENT_RUNNER, "app": app}
    exec("def run(message, context):\n    return app(message, context)", runner)  # noqa: S102 - a named frame
    return runner["run"]


def _node_config(tmp_path: Path, **policy: Any) -> Any:
    def config(index: int, node_id: int) -> dict[str, Any]:
        return {wire.NODE_PARTITION_ID: index, wire.NODE_NUM_PARTITIONS: 2,
                wire.NODE_STATE_PATH: str(tmp_path / f"node-{index}" / "state.json"), **policy}

    return config


def _deployed_run(tmp_path: Path, policy: dict[str, Any], **run: Any) -> tuple[str | None, InProcessGrid]:
    """Run the App with SuperNode-run participants; the server's failure reason (None: it finished)."""
    run_config = {**BASE, "result-dir": str(tmp_path / "result"), **run}
    grid = InProcessGrid(_as_supernode(client_app.app), num_nodes=2, run_config=run_config,
                         node_config=_node_config(tmp_path, **policy))
    try:
        run_server(grid, RunSettings.from_config(run_config))
    except RunFailed as failed:
        return str(failed), grid
    return None, grid


# -- the reproductions, on the deployment runtime ------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "policy", "says"),
    [
        ({"epsilon": float("inf")}, {}, "epsilon=inf per release is above max-epsilon=1"),
        ({"epsilon": 1e9}, {}, "epsilon=1000000000.0 per release is above max-epsilon=1"),
        ({"delta": 0.99}, {}, "delta=0.99 is above max-delta=1e-05"),
        ({"sampler": "numpy"}, {}, "sampler='numpy' is not one of allowed-samplers=discrete,opendp"),
        ({"epsilon": 8.0}, {wire.NODE_MAX_EPSILON: 1.0}, "epsilon=8.0 per release is above max-epsilon=1"),
        ({"noise": "laplace"}, {wire.NODE_ALLOWED_NOISE: "gaussian"}, "noise='laplace' is not one of allowed-noise=gaussian"),
        ({"delta": 0.01}, {wire.NODE_MAX_DELTA: 0.5}, "delta=0.01 is not below 1/n"),  # digits: ~700 records a node
    ],
)
def test_a_run_config_beyond_the_policy_is_refused_before_anything_is_read(
    tmp_path: Path, run: dict[str, Any], policy: dict[str, Any], says: str
) -> None:
    reason, grid = _deployed_run(tmp_path, policy, **run)
    assert reason is not None and reason.count("PolicyViolation") == 2, reason  # both participants said why
    assert reason.count(says) == 2 and "nothing was read or released" in reason, reason
    for index, context in enumerate(grid.contexts.values()):
        assert load_state(context).records_read == 0 and load_state(context).release is None
        state = StateFile(tmp_path / f"node-{index}" / "state.json").load()
        assert state is None or (state.release is None and state.records_read == 0)


def test_a_policy_in_the_node_config_allows_what_it_states(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """max-epsilon=8 lets a run at epsilon = 8 go through; the participant logs what it spent under it."""
    with caplog.at_level(logging.INFO, logger="flwr"):
        reason, grid = _deployed_run(tmp_path, {wire.NODE_MAX_EPSILON: 8.0}, epsilon=8.0)
    assert reason is None
    for context in grid.contexts.values():
        state = load_state(context)
        assert state.records_read == 1 and state.release is not None
    logged = [r.getMessage() for r in caplog.records if "[ppcdl] privacy: this participant has spent" in r.getMessage()]
    assert len(logged) == 2 and all("max-epsilon=8" in line and "(node config)" in line for line in logged), logged
    assert all("epsilon=8" in line or "epsilon=7.99" in line for line in logged), logged


def test_without_a_policy_a_supernode_takes_the_documented_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        reason, _ = _deployed_run(tmp_path, {})  # the App's defaults: epsilon 1, Gaussian, delta 1e-5
    assert reason is None
    assert any("the deployment default" in r.getMessage() and "max-epsilon=1 " in r.getMessage() for r in caplog.records)
    refused, _ = _deployed_run(tmp_path / "b", {}, epsilon=2.0)
    assert refused is not None and "epsilon=2.0 per release is above max-epsilon=1" in refused


def test_simulations_need_no_policy(tmp_path: Path) -> None:
    run_config = {**BASE, "result-dir": str(tmp_path / "r"), "epsilon": float("inf"), "sampler": "numpy"}
    grid = InProcessGrid(client_app.app, num_nodes=2, run_config=run_config)  # not a SuperNode frame
    with pytest.warns(UserWarning):
        run_server(grid, RunSettings.from_config(run_config))
    assert all(load_state(c).records_read == 1 for c in grid.contexts.values())


# -- the pure object ----------------------------------------------------------------------------------


def test_the_policy_is_read_from_the_node_config() -> None:
    assert PrivacyPolicy.from_node_config({wire.NODE_PARTITION_ID: 0}) is None
    assert PrivacyPolicy.from_node_config({}, default=DEPLOYMENT_DEFAULT) is DEPLOYMENT_DEFAULT
    policy = PrivacyPolicy.from_node_config({
        wire.NODE_MAX_EPSILON: "2.5", wire.NODE_MAX_DELTA: 1e-6, wire.NODE_ALLOWED_SAMPLERS: "discrete, numpy",
    })
    assert policy == PrivacyPolicy(2.5, 1e-6, ("laplace", "gaussian"), ("discrete", "numpy"), "node config")
    assert policy.describe() == ("max-epsilon=2.5 max-delta=1e-06 allowed-noise=laplace,gaussian "
                                 "allowed-samplers=discrete,numpy (node config)")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({wire.NODE_MAX_EPSILON: "inf"}, "max-epsilon must be finite"),
        ({wire.NODE_MAX_EPSILON: "lots"}, "max-epsilon='lots' must be a number"),
        ({wire.NODE_MAX_EPSILON: 0}, "max-epsilon must be > 0"),
        ({wire.NODE_MAX_DELTA: 1.5}, "max-delta=1.5 must be a number in"),
        ({wire.NODE_ALLOWED_SAMPLERS: "fast"}, "allowed-samplers='fast' must name"),
        ({wire.NODE_ALLOWED_NOISE: ""}, "allowed-noise='' must name"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_key(config: dict[str, Any], match: str) -> None:
    with pytest.raises(PublicError, match=match):
        PrivacyPolicy.from_node_config(config)


def _config(**overrides: Any) -> TrainerConfig:
    base: dict[str, Any] = {"task": "classification", "num_classes": 10, "epsilon": 1.0, "noise": "gaussian", "delta": 1e-5}
    return TrainerConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"epsilon": float("inf")}, "epsilon=inf per release"),
        ({"insecure_noise_seed": 3}, "insecure_noise_seed=3 makes the noise predictable"),
        ({"max_epsilon": 2.0, "local_evaluation": True}, "a budget of max_epsilon=2.0 is above max-epsilon=1"),
        ({"noise": "laplace", "delta": None, "sampler": "numpy"}, "sampler='numpy'"),
    ],
)
def test_the_check_names_every_violation(overrides: dict[str, Any], says: str) -> None:
    assert PrivacyPolicy().violations(_config()) == []
    with pytest.raises(PolicyViolation, match=says):
        PrivacyPolicy().check(_config(**overrides))


def test_delta_must_be_below_one_over_n() -> None:
    policy = PrivacyPolicy(max_delta=0.1)
    assert policy.violations(_config(delta=0.01), num_examples=99) == []
    assert "not below 1/n" in policy.violations(_config(delta=0.01), num_examples=100)[0]


# -- the library's client factories take one too ------------------------------------------------------


def _records(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.normal(size=(n, 64)), dtype=torch.float32), torch.as_tensor(rng.integers(0, 10, n))


def test_the_trainer_keeps_every_charge_within_the_policy() -> None:
    trainer = FunctionalMechanismTrainer(digits_model(), _records(), _config(), policy=PrivacyPolicy(max_epsilon=1.0))
    assert trainer.ledger.max_epsilon == 1.0
    with pytest.raises(PolicyViolation, match="not below 1/n for this participant's n=50"):
        FunctionalMechanismTrainer(digits_model(), _records(), _config(delta=0.05), policy=PrivacyPolicy(max_delta=0.1))


def test_the_message_client_factory_refuses_with_an_error_reply() -> None:
    from flwr.app import ArrayRecord, Message, RecordDict

    app = make_client_app(lambda ctx: ClientSetup(digits_model(), _records(), _config(epsilon=5.0)), policy=PrivacyPolicy())
    grid = InProcessGrid(app, num_nodes=1)
    [reply] = grid.send_and_receive([Message(RecordDict({"arrays": ArrayRecord(digits_model().state_dict())}), 1001, "train")])
    assert reply.has_error() and "PolicyViolation" in reply.error.reason and "epsilon=5.0" in reply.error.reason
    assert load_state(grid.contexts[1001]).records_read == 0


def test_the_numpy_client_refuses_before_reading() -> None:
    with pytest.raises(ParticipantError, match="epsilon=5.0 per release is above max-epsilon=1"):
        FunctionalMechanismClient(digits_model(), _records(), context={}, policy=PrivacyPolicy(),
                                  task="classification", num_classes=10, epsilon=5.0)
