"""The App's participants: fresh noise from the OS CSPRNG (no public value seeds it), the insecure
reproducible mode flagged NOT PRIVATE, and ε reported = ε spent across a SuperNode restart.

Runs use the real ServerApp logic and ClientApp over the in-process grid (no Ray, a few seconds)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict

import flwr_ppcdl.app.client_app as client_app
import flwr_ppcdl.clients.trainer as trainer_module
from flwr_ppcdl import wire
from flwr_ppcdl.app.experiment import trainer_config
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import RunFailed, run_server
from flwr_ppcdl.app.settings import RunSettings, epsilon_meaning
from flwr_ppcdl.clients import PublicError, StateFile, TrainerConfig, load_state
from flwr_ppcdl.privacy import PrivacyLeakWarning

BASE: dict[str, Any] = {
    "dataset": "digits", "task": "classification", "unreliable-kind": "random-labels",
    "num-partitions": 3, "num-rounds": 2, "plot": False, "strategy": "fedavg",
}


def _run(tmp_path: Path, name: str, node_config: Any = None, client: Any = None, **extra: Any) -> tuple[dict, InProcessGrid]:
    run_config = {**BASE, "result-dir": str(tmp_path / name), **extra}
    grid = InProcessGrid(client or client_app.app, num_nodes=3, run_config=run_config, node_config=node_config)
    run_server(grid, RunSettings.from_config(run_config))
    return json.loads((tmp_path / name / "result.json").read_text()), grid


def _releases(grid: InProcessGrid) -> list[np.ndarray]:
    out = []
    for context in grid.contexts.values():
        release = load_state(context).release
        assert release is not None
        out.append(trainer_module.Release.from_dict(release).statistics["gram"])
    return out


@pytest.mark.parametrize("sampler", ["discrete", "numpy", "opendp"])
@pytest.mark.parametrize("seed", [0, 7, 123456])
def test_the_participant_setup_never_passes_a_noise_seed(seed: int, sampler: str) -> None:
    """No public value (run-config seed, partition id) reaches the noise: no seed at all."""
    noise = "laplace" if sampler == "opendp" else "gaussian"  # OpenDP samples Laplace noise only
    settings = RunSettings(seed=seed, sampler=sampler, num_partitions=4, noise=noise)
    for pid in range(4):
        config = trainer_config(settings, pid)
        assert "insecure_noise_seed" not in config and "seed" not in config
        assert TrainerConfig(**config).insecure_noise_seed is None


@pytest.mark.parametrize("extra", [{}, {"seed": 42}, {"insecure-noise-seed": 9}])
def test_the_clientapp_setup_seeds_only_under_the_insecure_key(extra: dict) -> None:
    run_config = {**BASE, **extra}
    context = Context(run_id=1, node_id=5, node_config={wire.NODE_PARTITION_ID: 1, wire.NODE_NUM_PARTITIONS: 3},
                      state=RecordDict(), run_config=run_config)
    setup = client_app.participant_setup(context)
    assert (setup.config.insecure_noise_seed is not None) == ("insecure-noise-seed" in extra)


def test_only_the_insecure_key_seeds_the_noise_and_it_is_flagged() -> None:
    settings = RunSettings(num_partitions=3, insecure_noise_seed=5)
    seeds = [trainer_config(settings, pid)["insecure_noise_seed"] for pid in range(3)]
    assert len(set(seeds)) == 3  # one stream per participant
    opendp = RunSettings(num_partitions=3, insecure_noise_seed=5, sampler="opendp", noise="laplace")
    assert trainer_config(opendp, 0).get("insecure_noise_seed") is None
    assert "NOT PRIVATE" in epsilon_meaning(settings) and "NOT PRIVATE" not in epsilon_meaning(RunSettings())
    with pytest.raises(ValueError, match="insecure-noise-seed.*-2"):
        RunSettings(insecure_noise_seed=-2)


def test_two_runs_with_the_same_run_config_draw_fresh_noise(tmp_path: Path) -> None:
    first, grid_a = _run(tmp_path, "a")
    second, grid_b = _run(tmp_path, "b")
    same = {k: v for k, v in first["settings"].items() if k != "result_dir"}
    assert same == {k: v for k, v in second["settings"].items() if k != "result_dir"}
    assert first["not_private"] == []
    for a, b in zip(_releases(grid_a), _releases(grid_b), strict=True):
        assert not np.array_equal(a, b)  # fresh noise for every participant
    assert first["final_metrics"] != second["final_metrics"] or first["rounds"] != second["rounds"]
    assert "NOT PRIVATE" not in first["epsilon_meaning"]


def test_the_insecure_key_reproduces_runs_and_says_not_private(tmp_path: Path) -> None:
    with pytest.warns(PrivacyLeakWarning, match="NOT PRIVATE"):
        first, grid_a = _run(tmp_path, "a", **{"insecure-noise-seed": 3})
        second, grid_b = _run(tmp_path, "b", **{"insecure-noise-seed": 3})
    for a, b in zip(_releases(grid_a), _releases(grid_b), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first["final_metrics"] == second["final_metrics"]
    assert first["not_private"] and all("NOT PRIVATE" in reason for reason in first["not_private"])
    assert "NOT PRIVATE" in first["epsilon_meaning"]  # the run header prints this line


# ------------------------------------------------------------------------- deployment runtime


def test_the_deployment_runtime_is_recognised_by_flowers_runner() -> None:
    import importlib
    import inspect

    # the installed Flower still runs a SuperNode's ClientApps from that module (an upgrade that
    # moves it would silently switch the ClientApp's guard off: this fails instead)
    runner_source = inspect.getsource(importlib.import_module(client_app.DEPLOYMENT_RUNNER))
    assert "client_app(message=message, context=context)" in runner_source
    assert not client_app.on_deployment_runtime()
    runner = {"__name__": client_app.DEPLOYMENT_RUNNER, "probe": client_app.on_deployment_runtime}
    exec("def run():\n    return probe()", runner)  # a frame of Flower's SuperNode runner module
    assert runner["run"]() is True


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_app, "on_deployment_runtime", lambda: True)


def _state_paths(tmp_path: Path) -> Any:
    def node_config(index: int, node_id: int) -> dict[str, Any]:
        return {
            wire.NODE_PARTITION_ID: index, wire.NODE_NUM_PARTITIONS: 3,
            wire.NODE_STATE_PATH: str(tmp_path / f"node-{index}" / "state.json"),
        }

    return node_config


def _failed_run(tmp_path: Path, node_config: Any = None, **extra: Any) -> tuple[str, InProcessGrid]:
    """Run until the server stops (every participant refused); the server's reason and the grid."""
    run_config = {**BASE, "result-dir": str(tmp_path / "r"), **extra}
    grid = InProcessGrid(client_app.app, num_nodes=3, run_config=run_config, node_config=node_config)
    with pytest.raises(RunFailed) as failed:
        run_server(grid, RunSettings.from_config(run_config))
    return str(failed.value), grid


def test_the_deployment_runtime_refuses_predictable_noise(tmp_path: Path, deployed: None) -> None:
    reason, grid = _failed_run(tmp_path, node_config=_state_paths(tmp_path), **{"num-rounds": 1, "insecure-noise-seed": 3})
    assert reason.count("insecure-noise-seed=3 is refused") == 3  # every participant said why
    for context in grid.contexts.values():
        assert load_state(context).records_read == 0  # refused before anything was read


def test_the_deployment_runtime_refuses_to_run_without_a_state_path(tmp_path: Path, deployed: None) -> None:
    settings = RunSettings.from_config(BASE)
    with pytest.raises(PublicError, match="state-path"):
        client_app.refuse_unsafe_deployment(settings, {wire.NODE_PARTITION_ID: 0})
    reason, grid = _failed_run(tmp_path, **{"num-rounds": 1})
    assert reason.count("needs 'state-path'") == 3
    assert all(load_state(c).records_read == 0 for c in grid.contexts.values())


def test_epsilon_reported_equals_epsilon_spent_across_a_restart(
    tmp_path: Path, deployed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 1's SuperNode restarts after round 1 with an empty Context.state (a new process):
    with its state-path it releases nothing new, and every participant reports what it spent."""
    releases: Counter[bytes] = Counter()
    original = trainer_module.release_from_records

    def counting(body: Any, data: Any, mechanism: Any, device: Any = "cpu") -> Any:
        releases[data[0].numpy().tobytes()] += 1  # one key per participant's records
        return original(body, data, mechanism, device)

    monkeypatch.setattr(trainer_module, "release_from_records", counting)
    trains: Counter[int] = Counter()
    restarted: dict[int, Context] = {}

    def app_with_restart(msg: Message, context: Context) -> Message:
        if msg.metadata.message_type.startswith("train"):
            trains[context.node_id] += 1
        if context.node_id == 1002 and trains[1002] > 1:  # the restarted SuperNode's fresh context
            fresh = restarted.setdefault(1002, Context(
                run_id=context.run_id, node_id=1002, node_config=context.node_config,
                state=RecordDict(), run_config=context.run_config,
            ))
            return client_app.app(msg, fresh)
        return client_app.app(msg, context)

    result, grid = _run(tmp_path, "r", node_config=_state_paths(tmp_path), client=app_with_restart, **{"num-rounds": 3})
    assert result["failures"] == 0 and [r["replies"] for r in result["rounds"]] == [3, 3, 3]
    assert load_state(restarted[1002]).records_read == 1  # restored from state-path, not re-released
    assert sorted(releases.values()) == [1, 1, 1]  # one release per participant in the whole run
    epsilon = RunSettings.from_config(BASE).epsilon
    reported = {p["partition_id"]: p["epsilon"] for p in result["participants"]}
    # = epsilon x its one release (Gaussian by default: the accountant's epsilon, at most the configured one)
    assert sorted(reported) == [0, 1, 2] and all(epsilon * (1 - 1e-9) < e <= epsilon for e in reported.values())
    for index in range(3):
        state = StateFile(tmp_path / f"node-{index}" / "state.json").load()
        assert state is not None
        total = math.fsum(e["epsilon"] for e in state.ledger["entries"])  # type: ignore[index]
        assert state.records_read == 1 and total == reported[index]


def test_the_state_file_is_private_to_its_owner(tmp_path: Path) -> None:
    _run(tmp_path, "r", node_config=_state_paths(tmp_path), **{"num-rounds": 1})
    for index in range(3):
        path = tmp_path / f"node-{index}" / "state.json"
        assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0
        state = StateFile(path).load()
        assert state is not None and state.records_read == 1
