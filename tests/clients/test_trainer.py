"""The trainer core without Flower: release once, train on the noisy objective, never re-read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flwr_ppcdl.clients import (
    BodyChangedError,
    FunctionalMechanismClient,
    FunctionalMechanismTrainer,
    ParticipantError,
    TrainerConfig,
    TrainerState,
    load_state,
    save_state,
)
from flwr_ppcdl.privacy import BudgetExceededError, PrivacyLeakWarning
from tests.clients.helpers import (
    CountingLoader,
    UnitNorm,
    accuracy,
    digits,
    digits_model,
    regression_data,
)


def _config(**overrides: object) -> TrainerConfig:
    # pure epsilon-DP (exact ledger totals) and 20 local steps: what these properties are stated for
    base: dict[str, object] = {"task": "classification", "num_classes": 10, "epsilon": 1.0, "insecure_noise_seed": 0,
                               "noise": "laplace", "local_steps": 20}
    base.update(overrides)
    return TrainerConfig(**base)  # type: ignore[arg-type]


def _run_rounds(model: nn.Module, data: object, config: TrainerConfig, rounds: int, store: dict) -> list[dict]:
    """Simulate Flower: a new trainer object every round, state carried in `store`."""
    history = []
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(rounds):
        trainer = FunctionalMechanismTrainer(model, data, config, load_state(store))
        history.append(trainer.fit(global_state))
        save_state(store, trainer.state)
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
    return history


def test_records_are_read_exactly_once_over_20_rounds_and_epsilon_is_spent_once() -> None:
    x, y, _, _ = digits()
    loader = CountingLoader(x, y)
    store: dict = {}
    history = _run_rounds(digits_model(), loader, _config(epsilon=1.0), rounds=20, store=store)
    assert loader.iterations == 1
    assert loader.batches_read == math.ceil(len(y) / loader.batch_size)
    assert [h["fm-epsilon"] for h in history] == [1.0] * 20
    state = load_state(store)
    assert state.records_read == 1
    assert len(state.ledger["entries"]) == 1  # one release in the ledger


def test_iterative_local_steps_reach_the_closed_form_minimiser() -> None:
    x, y, _, _ = digits()
    model_it = digits_model(0)
    model_cf = digits_model(0)
    cfg_it = _config(epsilon=5.0, local_steps=3000, optimizer="gd")
    cfg_cf = _config(epsilon=5.0, solver="closed-form")
    trainer_it = FunctionalMechanismTrainer(model_it, (x, y), cfg_it)
    trainer_cf = FunctionalMechanismTrainer(model_cf, (x, y), cfg_cf)
    trainer_it.fit()
    trainer_cf.fit()
    w_it = trainer_it.head_to_normalised()
    w_cf = trainer_cf.head_to_normalised()
    assert trainer_it.release is not None and trainer_cf.release is not None
    # same seed, same data -> same release
    np.testing.assert_array_equal(trainer_it.release.statistics["gram"], trainer_cf.release.statistics["gram"])
    f_it = trainer_it.release.objective_value(w_it)
    f_cf = trainer_cf.release.objective_value(w_cf)
    assert f_it - f_cf <= 1e-6 * abs(f_cf)
    # the objective is flat outside the kept eigenspace, where local steps keep the (random)
    # initial head and the closed form is minimum-norm: compare the identifiable part
    q = trainer_cf.release.repaired().eigvecs
    np.testing.assert_allclose(w_it @ q @ q.T, w_cf @ q @ q.T, atol=1e-4 * np.abs(w_cf).max())


def test_without_noise_training_equals_ordinary_training_on_the_taylor_objective() -> None:
    """epsilon = inf: the head trained through the trainer equals direct torch training of the
    head on the second-order Taylor softmax loss of the same (bounded, bias-appended) features."""
    x, y, _, _ = digits()
    with pytest.warns(PrivacyLeakWarning):
        trainer = FunctionalMechanismTrainer(digits_model(), (x, y), _config(epsilon=float("inf"), solver="closed-form"))
        trainer.fit()
    w_fm = torch.as_tensor(trainer.head_to_normalised())
    h = digits_model()[:-1](x.double())
    h = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    k = 10
    t = torch.nn.functional.one_hot(y, k).double() - 1.0 / k
    w = torch.zeros(k, h.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = h @ w.T
        z = z - z.mean(1, keepdim=True)
        loss = (-(t * z).sum(1) + 0.5 * (z * z).sum(1) / k).mean()  # log K - <t,z> + z^T H z / 2
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    w_direct = (w - w.mean(0, keepdim=True)).detach()
    assert torch.allclose(w_fm, w_direct, atol=1e-3, rtol=1e-3)  # head stored in float32


def test_regression_without_noise_equals_least_squares() -> None:
    x, y = regression_data()
    model = nn.Sequential(nn.Identity(), nn.Linear(x.shape[1], 1))
    with pytest.warns(PrivacyLeakWarning):
        trainer = FunctionalMechanismTrainer(
            model, (x, y), TrainerConfig(task="regression", epsilon=float("inf"), solver="closed-form")
        )
        trainer.fit()
    design = np.c_[x.double().numpy(), np.ones(len(x))]
    beta, *_ = np.linalg.lstsq(design, y.double().numpy(), rcond=None)
    np.testing.assert_allclose(trainer.head_to_normalised(), beta, atol=1e-8)
    with torch.no_grad():
        pred = model(x).reshape(-1).double().numpy()
    np.testing.assert_allclose(pred, design @ beta, atol=1e-5)


def test_private_training_beats_chance_on_digits() -> None:
    x, y, xt, yt = digits()
    model = digits_model()
    FunctionalMechanismTrainer(model, (x, y), _config(epsilon=10.0, solver="closed-form")).fit()
    assert accuracy(model, xt, yt) > 0.5


def test_body_change_is_refused_by_default() -> None:
    x, y, _, _ = digits()
    model = nn.Sequential(nn.Linear(64, 16, bias=False), UnitNorm(), nn.Linear(16, 10))
    store: dict = {}
    loader = CountingLoader(x, y)
    trainer = FunctionalMechanismTrainer(model, loader, _config())
    trainer.fit()
    save_state(store, trainer.state)
    changed = {k: v.clone() for k, v in model.state_dict().items()}
    changed["0.weight"] = changed["0.weight"] + 0.1
    trainer2 = FunctionalMechanismTrainer(model, loader, _config(), load_state(store))
    with pytest.raises(BodyChangedError, match="differs"):
        trainer2.fit(changed)
    assert loader.iterations == 1
    assert trainer2.epsilon_spent == 1.0


def test_body_change_re_releases_and_charges_when_configured() -> None:
    x, y, _, _ = digits()
    model = nn.Sequential(nn.Linear(64, 16, bias=False), UnitNorm(), nn.Linear(16, 10))
    loader = CountingLoader(x, y)
    cfg = _config(body_change="re-release", max_epsilon=2.0)
    trainer = FunctionalMechanismTrainer(model, loader, cfg)
    trainer.fit()
    changed = {k: v.clone() for k, v in model.state_dict().items()}
    changed["0.weight"] = changed["0.weight"] * 1.5
    trainer2 = FunctionalMechanismTrainer(model, loader, cfg, trainer.state)
    metrics = trainer2.fit(changed)
    assert loader.iterations == 2
    assert metrics["fm-epsilon"] == 2.0
    # a third body exceeds the budget: refused, nothing spent, records not read again
    changed["0.weight"] = changed["0.weight"] * 1.5
    trainer3 = FunctionalMechanismTrainer(model, loader, cfg, trainer2.state)
    with pytest.raises(BudgetExceededError):
        trainer3.fit(changed)
    assert trainer3.epsilon_spent == 2.0
    assert loader.iterations == 2


def test_unchanged_body_after_float32_averaging_is_not_a_change() -> None:
    x, y, _, _ = digits()
    model = nn.Sequential(nn.Linear(64, 16, bias=False), UnitNorm(), nn.Linear(16, 10))
    loader = CountingLoader(x, y)
    trainer = FunctionalMechanismTrainer(model, loader, _config())
    trainer.fit()
    averaged = {k: (0.3 * v.float() + 0.7 * v.float()) for k, v in model.state_dict().items()}
    FunctionalMechanismTrainer(model, loader, _config(), trainer.state).fit(averaged)
    assert loader.iterations == 1


def test_body_runs_in_eval_mode_during_release() -> None:
    seen: list[bool] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training)
            return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)

    x, y, _, _ = digits()
    model = nn.Sequential(nn.Dropout(0.5), Spy(), nn.Linear(64, 10))  # 64 raw pixels
    model.train()
    with pytest.warns(UserWarning, match="L2Clip"):
        trainer = FunctionalMechanismTrainer(model, CountingLoader(x, y), _config(solver="closed-form"))
    trainer.fit()
    assert seen and not any(seen)
    assert model.training  # the caller's mode is restored


def test_local_evaluation_is_off_by_default_and_charged_when_on() -> None:
    x, y, _, _ = digits()
    trainer = FunctionalMechanismTrainer(digits_model(), (x, y), _config())
    trainer.fit()
    with pytest.raises(RuntimeError, match="local evaluation is off"):
        trainer.evaluate()
    cfg = _config(local_evaluation=True, eval_epsilon=0.5, max_epsilon=2.0)
    trainer = FunctionalMechanismTrainer(digits_model(), (x, y), cfg)
    trainer.fit()
    metrics = trainer.evaluate()
    assert metrics["fm-epsilon"] == 1.5
    assert 0.0 <= metrics["noisy-accuracy"] + 0.1 and metrics["noisy-accuracy"] < 1.1
    trainer.evaluate()
    with pytest.raises(BudgetExceededError):
        trainer.evaluate()
    assert trainer.epsilon_spent == 2.0


def test_state_round_trips_through_json() -> None:
    x, y, _, _ = digits()
    trainer = FunctionalMechanismTrainer(digits_model(), (x, y), _config())
    trainer.fit()
    again = TrainerState.from_json(trainer.state.to_json())
    assert again == trainer.state


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"epsilon": 0.0}, ValueError, "epsilon must be > 0.*0.0"),
        ({"epsilon": -1.0}, ValueError, "-1.0"),
        ({"epsilon": float("nan")}, ValueError, "nan"),
        ({"epsilon": "1"}, TypeError, "'1'"),
        ({"num_classes": 1}, ValueError, "num_classes.*1"),
        ({"feature_bound": 0.0}, ValueError, "feature_bound.*0.0"),
        ({"task": "ranking"}, ValueError, "ranking"),
        ({"body_change": "ignore"}, ValueError, "ignore"),
        ({"local_evaluation": True}, ValueError, "max_epsilon"),
    ],
)
def test_bad_configuration_is_rejected_naming_the_value(overrides: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _config(**overrides)


def test_model_contract_is_checked_at_construction() -> None:
    x, y, _, _ = digits()
    with pytest.raises(TypeError, match="ReLU"):
        FunctionalMechanismTrainer(nn.Sequential(nn.Linear(64, 10), nn.ReLU()), (x, y), _config())
    with pytest.raises(ValueError, match="10 outputs.*got 3"):
        FunctionalMechanismTrainer(nn.Sequential(UnitNorm(), nn.Linear(64, 3)), (x, y), _config())
    with pytest.raises(TypeError, match="Module"):
        FunctionalMechanismTrainer("not a model", (x, y), _config())  # type: ignore[arg-type]


def test_bad_records_fail_before_any_noise_is_spent() -> None:
    x, y, _, _ = digits()
    bad_labels = y.clone()
    bad_labels[3] = 12
    trainer = FunctionalMechanismTrainer(digits_model(), (x, bad_labels), _config())
    with pytest.raises(ValueError, match="12"):
        trainer.fit()
    assert trainer.epsilon_spent == 0.0
    bad_x = x.clone()
    bad_x[5, 0] = float("nan")
    trainer = FunctionalMechanismTrainer(digits_model(), (bad_x, y), _config())
    with pytest.raises(ValueError, match="(?i)nan"):
        trainer.fit()
    assert trainer.epsilon_spent == 0.0


def test_numpy_client_persists_release_in_a_context_across_objects() -> None:
    from flwr.app import Context, RecordDict

    x, y, _, _ = digits()
    loader = CountingLoader(x, y)
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    model = digits_model()
    params = [v.numpy() for v in model.state_dict().values()]
    for _ in range(5):
        client = FunctionalMechanismClient(model, loader, context=context, task="classification", num_classes=10, epsilon=1.0, insecure_noise_seed=1, partition_id=3)
        params, n, metrics = client.fit(params, {})
    assert loader.iterations == 1
    assert n == len(y)
    assert metrics["fm-epsilon"] == pytest.approx(1.0, rel=1e-9) and metrics["partition-id"] == 3
    with pytest.raises(ParticipantError, match="PublicValueError: received 1 arrays"):  # public: it crosses the wire
        client.fit(params[:1], {})


def test_a_persisted_release_under_another_configuration_is_refused() -> None:
    x, y, _, _ = digits()
    trainer = FunctionalMechanismTrainer(digits_model(), (x, y), _config(epsilon=1.0))
    trainer.fit()
    with pytest.raises(ValueError, match="epsilon"):
        FunctionalMechanismTrainer(digits_model(), (x, y), _config(epsilon=2.0), trainer.state)
