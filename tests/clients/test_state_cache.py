"""The participant's state keeps the eigen-repair with the release, compactly: Flower builds a new
trainer every round, and none of them after the first redoes the eigendecomposition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import flwr_ppcdl.privacy.release as release_module
from flwr_ppcdl.clients import (
    FunctionalMechanismTrainer,
    TrainerConfig,
    TrainerState,
    load_state,
    save_state,
)
from flwr_ppcdl.privacy import Release
from flwr_ppcdl.privacy.release import RELEASE_FORMAT_LISTS, decode_array, encode_array


def _data(n: int = 400, d: int = 40, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return torch.tensor(x / np.linalg.norm(x, axis=1, keepdims=True)), torch.tensor(rng.integers(0, k, n))


def _model(d: int = 40, k: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Identity(), nn.Linear(d, k).double())


def _config(**overrides: object) -> TrainerConfig:
    base: dict[str, object] = {"task": "classification", "num_classes": 5, "epsilon": 1.0, "local_steps": 3}
    base.update(overrides)
    return TrainerConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def repair_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the eigen-repairs (each is an eigendecomposition of the D x D Gram matrix)."""
    calls: list[int] = []
    original = release_module.repair

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(release_module, "repair", counting)
    return calls


def _rounds(config: TrainerConfig, store: dict, rounds: int) -> list[np.ndarray]:
    """Flower's pattern: a new trainer per round, the state through JSON text in between."""
    model, data = _model(), _data()
    heads = []
    for _ in range(rounds):
        trainer = FunctionalMechanismTrainer(model, data, config, load_state(store))
        trainer.fit({k: v.clone() for k, v in model.state_dict().items()})
        save_state(store, trainer.state)
        heads.append(trainer.head_to_normalised())
    return heads


def test_one_eigendecomposition_for_the_whole_run(repair_calls: list[int]) -> None:
    store: dict = {}
    _rounds(_config(), store, rounds=5)
    assert len(repair_calls) == 1
    state = load_state(store)
    assert state.records_read == 1 and state.repaired is not None


def test_the_cached_repair_gives_the_same_model_as_recomputing(repair_calls: list[int]) -> None:
    store: dict = {}
    _rounds(_config(), store, rounds=1)
    text = store["flwr-ppcdl"]
    cached = FunctionalMechanismTrainer(_model(), _data(), _config(), TrainerState.from_json(text))
    without = TrainerState.from_json(text)
    without.repaired = None
    recomputing = FunctionalMechanismTrainer(_model(), _data(), _config(), without)
    repair_calls.clear()
    metrics_cached, metrics_recomputed = cached.fit(), recomputing.fit()
    assert len(repair_calls) == 1  # only the trainer without the cache repaired
    assert metrics_cached == metrics_recomputed
    np.testing.assert_array_equal(cached.head_to_normalised(), recomputing.head_to_normalised())
    a, b = cached.release.repaired(), recomputing.release.repaired()  # type: ignore[union-attr]
    for name in ("eigvecs", "eigvals", "cross"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.rho, a.threshold) == (b.rho, b.threshold)


def test_a_repair_of_another_release_is_ignored(repair_calls: list[int]) -> None:
    store: dict = {}
    _rounds(_config(), store, rounds=1)
    other: dict = {}
    _rounds(_config(), other, rounds=1)  # another release (fresh noise)
    state = load_state(store)
    state.repaired = load_state(other).repaired
    repair_calls.clear()
    trainer = FunctionalMechanismTrainer(_model(), _data(), _config(), state)
    assert trainer.state.repaired is None  # dropped on load
    trainer.fit()
    assert len(repair_calls) == 1
    assert trainer.state.repaired is not None
    assert trainer.state.repaired["release"] == trainer.release.digest()  # type: ignore[union-attr]


def test_a_re_release_drops_the_old_repair() -> None:
    store: dict = {}
    config = _config(body_change="re-release", max_epsilon=2.0)
    _rounds(config, store, rounds=1)
    before = load_state(store).repaired
    model = nn.Sequential(nn.Linear(40, 40).double(), nn.Linear(40, 5).double())  # a different body
    trainer = FunctionalMechanismTrainer(model, _data(), config, load_state(store))
    trainer.state.body_fingerprint = "changed"
    trainer.state.body_reference = [[0.0]]
    trainer.fit()
    assert trainer.state.records_read == 2
    assert trainer.state.repaired is not None and before is not None
    assert trainer.state.repaired["release"] != before["release"]


def test_state_json_is_compact_and_exact() -> None:
    """About 10.7 bytes per stored float64 (base64), half of the nested-list encoding."""
    store: dict = {}
    _rounds(_config(), store, rounds=1)
    text = store["flwr-ppcdl"]
    state = TrainerState.from_json(text)
    release = Release.from_dict(state.release)  # type: ignore[arg-type]
    dim = release.dimension
    rank = len(decode_array(state.repaired["eigvals"]))  # type: ignore[index]
    stored_floats = dim * (dim + 1) // 2 + 5 * dim + dim * rank + rank + 5 * dim
    assert len(text) < 11.5 * stored_floats + 4000
    lists = dict(release.to_dict(), format=RELEASE_FORMAT_LISTS,
                 statistics={k: v.tolist() for k, v in release.statistics.items()})
    assert len(json.dumps(state.release)) < 0.6 * len(json.dumps(lists))
    again = Release.from_dict(lists)  # the earlier list format still loads, exactly
    for key in release.statistics:
        np.testing.assert_array_equal(again.statistics[key], release.statistics[key])


def test_array_encoding_round_trips_and_rejects_malformed_input() -> None:
    rng = np.random.default_rng(1)
    sym = rng.normal(size=(7, 7))
    sym = sym + sym.T
    for array in (sym, rng.normal(size=(3, 4)), rng.normal(size=5), np.array([np.inf, -0.0, 5e-324])):
        encoded = json.loads(json.dumps(encode_array(array)))
        back = decode_array(encoded)
        assert back.shape == array.shape
        assert np.array_equal(back, array) and np.array_equal(np.signbit(back), np.signbit(array))
    assert encode_array(sym)["upper"] and not encode_array(sym + np.triu(np.ones((7, 7)), 1))["upper"]
    bad = encode_array(rng.normal(size=(3, 4)))
    with pytest.raises(ValueError, match="needs 128 bytes; got 96"):
        decode_array(dict(bad, shape=[4, 4]))
    with pytest.raises(ValueError, match="square"):
        decode_array(dict(bad, upper=True))
    with pytest.raises(ValueError, match="'base64'"):
        decode_array({"shape": [1]})
