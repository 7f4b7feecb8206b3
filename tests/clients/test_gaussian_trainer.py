"""Participants with the Gaussian functional mechanism: what they spend and report, and their checks."""

from __future__ import annotations

import pytest
from torch import nn

from flwr_ppcdl.clients import FunctionalMechanismTrainer, TrainerConfig, load_state, save_state
from flwr_ppcdl.privacy import BudgetExceededError
from tests.clients.helpers import CountingLoader, accuracy, digits, digits_model

DELTA = 1e-5


def _config(**overrides: object) -> TrainerConfig:
    base: dict[str, object] = {
        "task": "classification", "num_classes": 10, "epsilon": 1.0, "insecure_noise_seed": 0, "noise": "gaussian", "delta": DELTA,
    }
    base.update(overrides)
    return TrainerConfig(**base)  # type: ignore[arg-type]


def _rounds(model: nn.Module, data: object, config: TrainerConfig, rounds: int, store: dict) -> list[dict]:
    history = []
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(rounds):
        trainer = FunctionalMechanismTrainer(model, data, config, load_state(store))
        history.append(trainer.fit(global_state))
        save_state(store, trainer.state)
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
    return history


def test_one_gaussian_release_is_spent_once_and_reported_with_its_delta() -> None:
    x, y, _, _ = digits()
    loader = CountingLoader(x, y)
    store: dict = {}
    history = _rounds(digits_model(), loader, _config(), rounds=5, store=store)
    assert loader.iterations == 1
    assert len({h["fm-epsilon"] for h in history}) == 1
    assert all(1.0 - 1e-9 < h["fm-epsilon"] <= 1.0 and h["fm-delta"] == DELTA for h in history)
    state = load_state(store)
    (entry,) = state.ledger["entries"]
    assert entry["delta"] == DELTA and entry["rho"] > 0
    assert state.release["noise"] == "gaussian" and state.release["delta"] == DELTA


def test_laplace_participants_report_delta_zero() -> None:
    x, y, _, _ = digits()
    trainer = FunctionalMechanismTrainer(digits_model(), (x, y), _config(noise="laplace", delta=None))
    metrics = trainer.fit()
    assert metrics["fm-epsilon"] == 1.0 and metrics["fm-delta"] == 0.0


def test_the_gaussian_release_is_more_useful_than_laplace_at_the_same_epsilon() -> None:
    """16 features, 1,400 records, ε = 1: the L1 noise is ~6x the Gaussian sd (a property, not a timing)."""
    x, y, x_test, y_test = digits()
    scores = {}
    for noise, delta in (("laplace", None), ("gaussian", DELTA)):
        model = digits_model()
        FunctionalMechanismTrainer(model, (x, y), _config(noise=noise, delta=delta, solver="closed-form")).fit()
        scores[noise] = accuracy(model, x_test, y_test)
    assert scores["gaussian"] > scores["laplace"]


def test_lda_decoder_through_the_trainer() -> None:
    x, y, x_test, y_test = digits()
    model = digits_model()
    FunctionalMechanismTrainer(model, (x, y), _config(solver="closed-form", decoder="lda", epsilon=4.0)).fit()
    assert accuracy(model, x_test, y_test) > 0.5


def test_a_persisted_laplace_release_is_not_reused_under_a_gaussian_configuration() -> None:
    x, y, _, _ = digits()
    store: dict = {}
    _rounds(digits_model(), (x, y), _config(noise="laplace", delta=None), rounds=1, store=store)
    with pytest.raises(ValueError, match="noise"):
        FunctionalMechanismTrainer(digits_model(), (x, y), _config(), load_state(store))


def test_the_budget_check_before_reading_uses_the_composed_total() -> None:
    x, y, _, _ = digits()
    loader = CountingLoader(x, y)
    trainer = FunctionalMechanismTrainer(digits_model(), loader, _config(epsilon=2.0, max_epsilon=1.0))
    with pytest.raises(BudgetExceededError, match="records were not read"):
        trainer.fit()
    assert loader.iterations == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": 2.0}, "2.0"),
        ({"sampler": "opendp"}, "'opendp'"),
        ({"noise": "laplace"}, "1e-05"),
        ({"noise": "uniform"}, "'uniform'"),
        ({"decoder": "lda"}, "closed-form"),
        ({"decoder": "lda", "solver": "closed-form", "ridge": 0.5}, "ridge"),
        ({"decoder": "knn"}, "'knn'"),
    ],
)
def test_bad_noise_settings_are_refused_naming_the_value(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _config(**overrides)
