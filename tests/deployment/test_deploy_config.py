"""The deployment runtime's safeguards, without starting any process: predictable noise is refused
before anything starts, every SuperNode gets a state-path, and node keys are what Flower reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from flwr_ppcdl import wire
from flwr_ppcdl.app.deploy import (
    LocalDeployment,
    main,
    make_node_keys,
    refuse_insecure_run,
    run_settings,
)
from flwr_ppcdl.app.deploy_setup import run_status_of, started_run_id
from flwr_ppcdl.clients import PrivacyPolicy

RUN = "num-partitions=3 dataset='digits' task='classification' unreliable-kind='random-labels'"


def test_a_run_config_with_predictable_noise_is_refused() -> None:
    refuse_insecure_run(run_settings(RUN))  # the default: OS CSPRNG noise
    with pytest.raises(ValueError, match="insecure-noise-seed=0 is refused by the deployment runtime"):
        refuse_insecure_run(run_settings(f"{RUN} insecure-noise-seed=0"))


def test_the_command_refuses_before_starting_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--nodes", "3", "--workdir", str(tmp_path), "--run-config", f"{RUN} insecure-noise-seed=7"])
    assert code == 2
    assert "insecure-noise-seed=7 is refused" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.log")) and not (tmp_path / "certs").exists()


def test_every_supernode_gets_its_own_state_path(tmp_path: Path) -> None:
    deployment = LocalDeployment(nodes=3, workdir=tmp_path, insecure=True)
    paths = set()
    for pid in range(3):
        config = deployment.node_config(pid)
        assert f"{wire.NODE_PARTITION_ID}={pid}" in config
        [path] = [part.split("=", 1)[1].strip("'") for part in config.split() if part.startswith(wire.NODE_STATE_PATH)]
        assert Path(path).parent.name == f"node-{pid}"
        paths.add(path)
    assert len(paths) == 3
    assert not deployment.node_auth  # Flower requires TLS for node authentication
    assert LocalDeployment(nodes=1, workdir=tmp_path / "tls").node_auth


def test_node_keys_are_p384_openssh_keys_flower_accepts(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    private, public = make_node_keys(tmp_path / "a")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert private.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert load_ssh_public_key(public.read_bytes()) == key.public_key()
    assert try_load_public_key(public)  # what `flwr supernode register` reads
    other, _ = make_node_keys(tmp_path / "b")
    assert other.read_bytes() != private.read_bytes()  # a fresh key pair per node


def test_every_supernode_states_the_policy_and_keeps_its_state_private(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    deployment = LocalDeployment(nodes=2, workdir=tmp_path, insecure=True, node_policy="max-epsilon=1 allowed-noise='gaussian'")
    node_config = parse_config_args([deployment.node_config(1)])  # as flower-supernode parses --node-config
    policy = PrivacyPolicy.from_node_config(node_config)
    assert policy is not None and (policy.max_epsilon, policy.allowed_noise) == (1.0, ("gaussian",))
    assert deployment.state_dir(1).stat().st_mode & 0o777 == 0o700


def test_the_run_id_and_status_are_read_from_flowers_output() -> None:
    assert started_run_id("... Successfully started run 3007992747469304890\n") == 3007992747469304890
    assert started_run_id("nothing started") is None
    assert started_run_id("Successfully started run 1\n...\nSuccessfully started run 2\n") == 2  # the log is appended to
    listing = '{"success": true, "runs": [{"run-id": 5, "status": "finished:failed", "elapsed": "00:00:12"}]}'
    assert run_status_of(listing) == "finished:failed"
    assert run_status_of('{"success": false}') is None and run_status_of("not json") is None
