"""FunctionalMechanism: bounding, exact solves at ε = ∞, repair, objectives, serialisation, inputs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flwr_ppcdl.privacy import (
    BudgetExceededError,
    FunctionalMechanism,
    PrivacyLeakWarning,
    PrivacyLedger,
    RecordError,
    Release,
    clip_l2,
)

INF = float("inf")


def _noise_free(**kwargs: object) -> FunctionalMechanism:
    with pytest.warns(PrivacyLeakWarning, match="WITHOUT noise"):
        return FunctionalMechanism(epsilon=INF, **kwargs)  # type: ignore[arg-type]


def _classification_data(n: int = 300, d: int = 5, k: int = 4, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 2.0
    labels = np.argmax(x @ rng.normal(size=(d, k)) + rng.normal(size=(n, k)), axis=1)
    return x, labels


def _regression_data(n: int = 300, d: int = 5, seed: int = 1):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)


# ----------------------------------------------------------------------------- bounding


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 12)),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=64),
    )
)
def test_clip_l2_rows_have_norm_at_most_one(x: np.ndarray) -> None:
    from fractions import Fraction

    h = clip_l2(x)
    for row_in, row in zip(x, h, strict=True):
        assert sum(Fraction(float(v)) ** 2 for v in row) <= 1  # exact, no rounding in the check
        if np.max(np.abs(row_in)) < 0.5 and np.linalg.norm(row_in) < 0.999:
            assert np.array_equal(row_in, row)  # inside the ball: untouched


def test_clip_l2_keeps_direction_and_handles_a_single_record() -> None:
    v = np.array([3.0, 4.0])
    out = clip_l2(v)
    assert out.shape == (2,)
    assert out == pytest.approx([0.6, 0.8], rel=1e-10)
    assert np.linalg.norm(clip_l2(v, max_norm=10.0)) == 5.0


def test_bound_features_and_targets_use_public_constants_only() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    fm = FunctionalMechanism(task="regression", epsilon=1.0, feature_bound=2.0, target_bound=5.0)
    h = fm.bound_features(x)
    assert h.shape == (3, 3)
    assert np.all(h[:, -1] == 1.0)
    assert np.linalg.norm(h[0, :2]) <= 1.0 and np.linalg.norm(h[0, :2]) > 1 - 1e-9
    assert h[1, :2] == pytest.approx([0.15, 0.2])  # inside the ball: only divided by c
    assert np.array_equal(fm.bound_targets(np.array([-7.0, 2.5, 9.0])), [-1.0, 0.5, 1.0])
    # Bounding one record does not depend on the others (no data-dependent scaling).
    assert np.array_equal(fm.bound_features(x[1:2]), h[1:2])


# ----------------------------------------------------------------------------- ε = ∞ solves


def test_noise_free_regression_equals_least_squares() -> None:
    x, y = _regression_data()
    fm = _noise_free(task="regression", feature_bound=2.5, target_bound=3.0)
    release = fm.release(x, y)
    assert release.noise_scale == 0.0 and math.isinf(release.epsilon)
    h, t = fm.bound_features(x), fm.bound_targets(y)
    expected = np.linalg.lstsq(h, t, rcond=None)[0]
    w = release.solve()
    assert np.linalg.norm(w - expected) <= 1e-10 * np.linalg.norm(expected)


@pytest.mark.parametrize("k", [2, 4])
def test_noise_free_softmax_equals_k_times_least_squares(k: int) -> None:
    x, labels = _classification_data(k=k)
    fm = _noise_free(task="classification", num_classes=k, feature_bound=3.0)
    w = fm.release(x, labels).solve()
    h = fm.bound_features(x)
    centred = np.eye(k)[labels] - 1.0 / k
    expected = k * np.linalg.lstsq(h, centred, rcond=None)[0].T
    assert w.shape == (k, 6)
    assert np.linalg.norm(w - expected) <= 1e-10 * np.linalg.norm(expected)
    assert np.allclose(w.sum(axis=0), 0.0, atol=1e-12)  # class-centred


def test_binary_softmax_is_taylor_logistic_regression() -> None:
    x, labels = _classification_data(k=2)
    fm = _noise_free(task="classification", num_classes=2, feature_bound=3.0)
    w = fm.release(x, labels).solve()
    h = fm.bound_features(x)
    # argmin Σ (1/2 - y) hᵀω + (hᵀω)²/8  =>  ω = 4 (HᵀH)^{-1} Hᵀ(y - 1/2)
    omega = 4 * np.linalg.solve(h.T @ h, h.T @ (labels - 0.5))
    assert w[1] - w[0] == pytest.approx(omega, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- release contents


def test_release_keeps_only_noisy_statistics() -> None:
    x, y = _regression_data()
    exact = _noise_free(task="regression").release(x, y)
    release = FunctionalMechanism(task="regression", epsilon=1.0, insecure_noise_seed=0).release(x, y)
    assert set(release.statistics) == {"gram", "cross"}
    gram = release.statistics["gram"]
    assert np.array_equal(gram, gram.T)
    assert not np.any(gram == exact.statistics["gram"])
    arrays_held = [v for v in vars(release).values() if isinstance(v, np.ndarray)]
    assert arrays_held == []  # every array lives in .statistics
    assert release.num_examples == 300 and release.num_features == 5 and release.dimension == 6


def test_release_reads_each_input_exactly_once() -> None:
    x, labels = _classification_data()

    class CountingArray:
        def __init__(self, data: np.ndarray) -> None:
            self.data, self.reads = data, 0

        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            self.reads += 1
            return self.data

    features, targets = CountingArray(x), CountingArray(labels)
    FunctionalMechanism(task="classification", num_classes=4, epsilon=1.0, insecure_noise_seed=0).release(
        features, targets
    )
    assert (features.reads, targets.reads) == (1, 1)


# ----------------------------------------------------------------------------- repair and objectives


@pytest.mark.parametrize("keep", ["half-rho", "positive"])
def test_repaired_objective_is_psd_even_with_heavy_noise(keep: str) -> None:
    x, labels = _classification_data(n=40)
    fm = FunctionalMechanism(
        task="classification",
        num_classes=4,
        epsilon=0.1,
        insecure_noise_seed=3,
        repair_keep=keep,  # type: ignore[arg-type]
    )
    release = fm.release(x, labels)
    assert np.linalg.eigvalsh(release.statistics["gram"]).min() < 0  # raw noisy Gram is indefinite
    rep = release.repaired()
    assert rep.eigvals.min() > (rep.rho / 2 if keep == "half-rho" else 0.0)
    assert rep.rho == pytest.approx(2 * math.sqrt(2) * release.noise_scale * math.sqrt(6))
    assert np.linalg.eigvalsh(rep.gram).min() >= -1e-9 * rep.eigvals.max()
    assert np.allclose(rep.cross.sum(axis=0), 0.0, atol=1e-9)  # re-centred
    assert np.allclose(rep.cross @ rep.eigvecs @ rep.eigvecs.T, rep.cross)  # projected
    # Bounded below: nothing beats the closed form, whatever direction we try.
    w = release.solve()
    best = release.objective_value(w)
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert release.objective_value(w + rng.normal(size=w.shape) * 10) >= best - 1e-9
    assert release.repaired() is rep  # cached


def _train_torch(
    release: Release, ridge: float, prox_mu: float, anchor: np.ndarray | None
) -> np.ndarray:
    objective = release.torch_objective(prox_mu=prox_mu, ridge=ridge)
    shape = release.statistics["cross"].shape
    weights = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    anchor_t = None if anchor is None else torch.as_tensor(anchor)
    optimiser = torch.optim.LBFGS(
        [weights],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective(weights, anchor_t)
        loss.backward()
        return loss

    for _ in range(3):
        optimiser.step(closure)
    return weights.detach().numpy()


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize(("ridge", "prox_mu"), [(0.0, 0.0), (5.0, 0.0), (0.0, 20.0), (3.0, 10.0)])
def test_torch_training_without_data_reaches_the_closed_form(
    task: str, ridge: float, prox_mu: float
) -> None:
    if task == "classification":
        x, targets = _classification_data()
        fm = FunctionalMechanism(
            task="classification", num_classes=4, epsilon=5.0, insecure_noise_seed=1, feature_bound=3.0
        )
    else:
        x, targets = _regression_data()
        fm = FunctionalMechanism(
            task="regression", epsilon=5.0, insecure_noise_seed=1, feature_bound=3.0, target_bound=4.0
        )
    release = fm.release(x, targets)
    shape = release.statistics["cross"].shape
    anchor = np.random.default_rng(7).normal(size=shape) if prox_mu > 0 else None
    closed = release.solve(ridge=ridge, prox_mu=prox_mu, anchor=anchor)
    trained = _train_torch(release, ridge, prox_mu, anchor)
    if task == "classification" and ridge + prox_mu == 0:
        trained = trained - trained.mean(axis=0)  # softmax-invariant direction is free
    assert np.abs(trained - closed).max() <= 1e-6 * max(1.0, np.abs(closed).max())


def test_objective_value_matches_torch() -> None:
    for task in ("classification", "regression"):
        if task == "classification":
            x, t = _classification_data()
            fm = FunctionalMechanism(task="classification", num_classes=4, epsilon=1.0, insecure_noise_seed=2)
        else:
            x, t = _regression_data()
            fm = FunctionalMechanism(task="regression", epsilon=1.0, insecure_noise_seed=2)
        release = fm.release(x, t)
        w = np.random.default_rng(3).normal(size=release.statistics["cross"].shape)
        torch_value = release.torch_objective(ridge=0.5)(torch.as_tensor(w)).item()
        assert release.objective_value(w, ridge=0.5) == pytest.approx(torch_value, rel=1e-12)


def test_prox_needs_an_anchor() -> None:
    x, y = _regression_data()
    release = FunctionalMechanism(task="regression", epsilon=1.0, insecure_noise_seed=0).release(x, y)
    with pytest.raises(ValueError, match="anchor"):
        release.solve(prox_mu=1.0)
    with pytest.raises(ValueError, match="anchor"):
        release.torch_objective(prox_mu=1.0)(torch.zeros(6, dtype=torch.float64))


# ----------------------------------------------------------------------------- serialisation, ledger


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_release_dict_round_trip_is_exact_through_json(task: str) -> None:
    if task == "classification":
        x, t = _classification_data()
        fm = FunctionalMechanism(task="classification", num_classes=4, epsilon=0.5, insecure_noise_seed=9)
    else:
        x, t = _regression_data()
        fm = FunctionalMechanism(task="regression", epsilon=0.5, insecure_noise_seed=9, target_bound=2.0)
    release = fm.release(x, t)
    data = json.loads(json.dumps(release.to_dict()))
    back = Release.from_dict(data)
    for key in ("gram", "cross"):
        assert np.array_equal(back.statistics[key], release.statistics[key])
    assert back.to_dict() == release.to_dict()
    assert np.array_equal(back.solve(ridge=0.1), release.solve(ridge=0.1))


def test_release_charges_the_ledger_before_noise() -> None:
    x, y = _regression_data()
    ledger = PrivacyLedger(max_epsilon=1.5)
    fm = FunctionalMechanism(task="regression", epsilon=1.0, insecure_noise_seed=0, ledger=ledger)
    fm.release(x, y)
    assert ledger.total_epsilon == 1.0
    entry = ledger.entries[0]
    assert entry.neighbouring == "replace-one" and "regression" in entry.mechanism
    with pytest.raises(BudgetExceededError, match="1.5"):
        fm.release(x, y)
    assert ledger.total_epsilon == 1.0 and len(ledger.entries) == 1
    # A bad input is rejected before anything is charged.
    with pytest.raises(ValueError):
        FunctionalMechanism(task="regression", epsilon=0.1, ledger=ledger).release(x[:3], y)
    assert len(ledger.entries) == 1


def test_noise_free_release_is_charged_as_infinite() -> None:
    x, y = _regression_data()
    ledger = PrivacyLedger()
    _noise_free(task="regression", ledger=ledger).release(x, y)
    assert math.isinf(ledger.total_epsilon)


# ----------------------------------------------------------------------------- bad configuration


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0.0}, ValueError, "0.0"),
        ({"epsilon": -1.0}, ValueError, "-1.0"),
        ({"epsilon": float("nan")}, ValueError, "nan"),
        ({"epsilon": "1"}, TypeError, "'1'"),
        ({"epsilon": None}, TypeError, "None"),
        ({"epsilon": True}, TypeError, "True"),
        ({"epsilon": 1.0, "feature_bound": 0.0}, ValueError, "feature_bound.*0.0"),
        ({"epsilon": 1.0, "feature_bound": INF}, ValueError, "feature_bound.*inf"),
        ({"epsilon": 1.0, "target_bound": -2.0}, ValueError, "target_bound.*-2.0"),
        ({"epsilon": 1.0, "neighbouring": "swap"}, ValueError, "'swap'"),
        ({"epsilon": 1.0, "sampler": "torch"}, ValueError, "'torch'"),
        ({"epsilon": 1.0, "insecure_noise_seed": 1.5}, TypeError, "1.5"),
        ({"epsilon": 1.0, "num_classes": 1}, ValueError, "num_classes.*1"),
        ({"epsilon": 1.0, "num_classes": None}, TypeError, "None"),
        ({"epsilon": 1.0, "task": "ranking"}, ValueError, "'ranking'"),
        ({"epsilon": 1.0, "task": "regression", "num_classes": 3}, ValueError, "3"),
    ],
)
def test_bad_configuration_names_the_value(kwargs: dict, error: type, match: str) -> None:
    config = {"task": "classification", "num_classes": 3, **kwargs}
    with pytest.raises(error, match=match):
        FunctionalMechanism(**config)


def _bad_record_cases() -> list:
    good_x = np.zeros((4, 2))
    nan_x = good_x.copy()
    nan_x[2, 1] = np.nan
    inf_x = good_x.copy()
    inf_x[1, 0] = np.inf
    return [
        (
            "classification",
            good_x,
            np.array([0, 1, 2, 12]),
            ValueError,
            r"\[0, 3\); got 12 at index 3",
        ),
        ("classification", good_x, np.array([0, -1, 2, 1]), ValueError, "got -1 at index 1"),
        ("classification", good_x, np.array([0, 1.5, 2, 1]), ValueError, "got 1.5 at index 1"),
        ("classification", good_x, np.array(["a", "b", "c", "d"]), TypeError, "labels.*<U1"),
        ("classification", nan_x, np.array([0, 1, 2, 1]), ValueError, "nan at row 2, column 1"),
        ("classification", inf_x, np.array([0, 1, 2, 1]), ValueError, "inf at row 1, column 0"),
        ("classification", good_x, np.array([0, 1, 2]), ValueError, "3 entries but features has 4"),
        (
            "classification",
            np.zeros((0, 2)),
            np.array([], dtype=int),
            ValueError,
            r"empty.*\(0, 2\)",
        ),
        ("classification", np.zeros(4), np.array([0, 1, 2, 1]), ValueError, r"2-D.*\(4,\)"),
        ("classification", np.array([["a", "b"]]), np.array([0]), TypeError, "<U1"),
        ("regression", good_x, np.array([0.0, np.nan, 1.0, 2.0]), ValueError, "nan at index 1"),
        (
            "regression",
            good_x,
            np.array([[0.0], [1.0], [1.0], [2.0]]),
            ValueError,
            r"1-D.*\(4, 1\)",
        ),
    ]


@pytest.mark.parametrize(("task", "x", "y", "error", "match"), _bad_record_cases())
def test_bad_records_name_the_value(
    task: str, x: np.ndarray, y: np.ndarray, error: type, match: str
) -> None:
    kwargs = {"num_classes": 3} if task == "classification" else {}
    fm = FunctionalMechanism(task=task, epsilon=1.0, insecure_noise_seed=0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        fm.release(x, y)


def test_infinite_epsilon_warns_and_adds_no_noise() -> None:
    x, y = _regression_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fm = FunctionalMechanism(task="regression", epsilon=INF)
    assert any(issubclass(w.category, PrivacyLeakWarning) for w in caught)
    assert issubclass(PrivacyLeakWarning, UserWarning)
    release = fm.release(x, y)
    h, t = fm.bound_features(x), fm.bound_targets(y)
    assert np.allclose(release.statistics["gram"], h.T @ h, rtol=1e-14)
    assert np.allclose(release.statistics["cross"], h.T @ t, rtol=1e-14)


@pytest.mark.parametrize(
    ("task", "x", "y", "value", "position"),
    [
        ("classification", np.zeros((30, 2)), np.r_[np.zeros(17, int), 77, np.zeros(12, int)], "77", "17"),
        ("classification", np.zeros((30, 2)), np.r_[np.zeros(23), 0.25, np.zeros(6)], "0.25", "23"),
        ("classification", np.where(np.arange(60).reshape(30, 2) == 41, np.nan, 0.0), np.zeros(30, int), "nan", "20"),
        ("regression", np.zeros((30, 2)), np.r_[np.zeros(19), -np.inf, np.zeros(10)], "inf", "19"),
    ],
)
def test_record_errors_keep_values_and_positions_out_of_their_public_text(
    task: str, x: np.ndarray, y: np.ndarray, value: str, position: str
) -> None:
    """``str(error)`` is for the participant's log (value and position); ``error.public`` may
    cross the wire and names the broken rule only."""
    kwargs = {"num_classes": 5} if task == "classification" else {}
    fm = FunctionalMechanism(task=task, epsilon=1.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(RecordError) as caught:
        fm.release(x, y)
    assert value in str(caught.value) and position in str(caught.value)
    public = caught.value.public
    assert value not in public.lower() and position not in public
    assert "index" not in public and "row" not in public
