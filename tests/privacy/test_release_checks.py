"""Checks of shared releases: honest ones pass (over many draws, on the data that makes every bound
tight), the stated false-refusal probability holds, and forged statistics or lying metadata are refused.

Honest releases use the hardened samplers with ``insecure_noise_seed`` (reproducible tests only).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from flwr_ppcdl import wire
from flwr_ppcdl.privacy import FunctionalMechanism, Release
from flwr_ppcdl.privacy.release_checks import ReleaseExpectation, check_release
from flwr_ppcdl.privacy.release_law import entry_noise, expected_calibration

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # seeded (NOT private) test noise

D_FEATURES, K, DELTA = 6, 3, 1e-5


def _tight_records(kind: str, n: int, rng: np.random.Generator, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Honest data that puts the checks at their limits: ``"identical"`` records (rank-one Gram
    matrix, Cauchy-Schwarz with equality, the diagonal summing to n, one class, |y| = 1),
    ``"collinear"`` features (two equal columns), or records on the unit sphere."""
    if kind == "identical":
        u = rng.normal(size=D_FEATURES)
        x = np.tile(u / np.linalg.norm(u), (n, 1))
        y = np.zeros(n, dtype=int) if task == "classification" else np.ones(n)
        return x, y
    x = rng.normal(size=(n, D_FEATURES))
    if kind == "collinear":
        x[:, 1] = x[:, 0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, K, size=n) if task == "classification" else np.clip(x @ np.linspace(-1, 1, D_FEATURES) * 2, -1, 1)
    return x, y


def _mechanism(task: str, noise: str, epsilon: float, seed: int | None, sampler: str = "discrete") -> FunctionalMechanism:
    return FunctionalMechanism(
        task=task, num_classes=K if task == "classification" else None, epsilon=epsilon,  # type: ignore[arg-type]
        noise=noise, delta=DELTA if noise == "gaussian" else None, sampler=sampler, insecure_noise_seed=seed,  # type: ignore[arg-type]
    )


def _expectation(task: str, noise: str, epsilon: float, sampler: str = "discrete") -> ReleaseExpectation:
    return ReleaseExpectation(
        task=task, num_features=D_FEATURES, epsilon=epsilon, num_classes=K if task == "classification" else None,
        target_bound=1.0 if task == "regression" else None, noise=noise, delta=DELTA if noise == "gaussian" else 0.0,
        sampler=sampler,
    )


def _honest(task: str, noise: str, epsilon: float, seed: int, kind: str = "sphere", n: int = 400) -> Release:
    rng = np.random.default_rng(seed)
    return _mechanism(task, noise, epsilon, seed).release(*_tight_records(kind, n, rng, task))


# -- honest releases are never refused ------------------------------------------------------------


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
@pytest.mark.parametrize("epsilon", [1.0, 10.0])
def test_honest_releases_are_never_refused(task: str, noise: str, epsilon: float) -> None:
    """60 hardened releases per cell, a third of them of identical records (every bound tight), pass
    the full check against the run's expectation, after a round trip through the wire."""
    expected = _expectation(task, noise, epsilon)
    for seed in range(60):
        kind = ("identical", "collinear", "sphere")[seed % 3]
        release = _honest(task, noise, epsilon, seed, kind, n=50 + 37 * seed)
        check_release(wire.decode_release(wire.encode_release(release)), expected)


@pytest.mark.parametrize("sampler", ["opendp", "numpy"])
def test_the_other_samplers_carry_their_exact_calibration(sampler: str) -> None:
    noise = "laplace" if sampler == "opendp" else "gaussian"
    seed = None if sampler == "opendp" else 1  # OpenDP cannot be seeded
    x, y = _tight_records("sphere", 300, np.random.default_rng(1), "regression")
    release = _mechanism("regression", noise, 1.0, seed, sampler).release(x, y)
    check_release(release, _expectation("regression", noise, 1.0, sampler))
    with pytest.raises(ValueError, match=f"sampler='{sampler}'"):  # another sampler than the run's
        check_release(release, _expectation("regression", noise, 1.0, "discrete"))


def test_an_exact_release_passes_only_in_a_run_without_noise() -> None:
    x, y = _tight_records("identical", 100, np.random.default_rng(0), "regression")
    exact = _mechanism("regression", "laplace", math.inf, None).release(x, y)
    check_release(exact, _expectation("regression", "laplace", math.inf))
    with pytest.raises(ValueError, match="epsilon=inf"):
        check_release(exact, _expectation("regression", "laplace", 1.0))


# -- the stated false-refusal probability -----------------------------------------------------------


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_the_noise_bounds_hold_with_their_stated_probability(noise: str) -> None:
    """Residuals of real releases (noisy minus exact): the per-entry bound at failure 0.5 is exceeded
    in at most half of the releases -- and, for Laplace, whose tail the bound states exactly, in at
    least a quarter (it is not vacuous); the spectral bound at 0.5 is never exceeded in 150 draws."""
    x, y = _tight_records("sphere", 500, np.random.default_rng(7), "classification")
    exact = _mechanism("classification", noise, math.inf, None).release(x, y)
    over_entry = over_spectral = 0
    draws = 150
    for seed in range(draws):
        release = _mechanism("classification", noise, 1.0, 1000 + seed).release(x, y)
        law = entry_noise(release)
        errors = {k: release.statistics[k] - exact.statistics[k] for k in ("gram", "cross")}
        largest = max(float(np.abs(np.triu(errors["gram"])).max()), float(np.abs(errors["cross"]).max()))
        over_entry += largest > law.entry_bound(0.5)
        over_spectral += float(np.linalg.norm(errors["gram"], 2)) > law.spectral_bound(0.5)
    assert over_entry <= 0.5 * draws + 3 * math.sqrt(0.25 * draws), over_entry
    if noise == "laplace":  # exact tail e^{-u/b}: P(max > bound) = 1 - (1 - 0.5/m)^m ~ 0.39
        assert over_entry >= 0.25 * draws, over_entry
    assert over_spectral == 0


def test_honest_releases_are_refused_at_most_as_often_as_stated() -> None:
    """At a stated false-refusal probability of 0.5 the full check refuses honest releases of the
    tightest data (identical records) in at most half of 200 draws."""
    expected = _expectation("regression", "laplace", 1.0)
    refused = 0
    for seed in range(200):
        release = _honest("regression", "laplace", 1.0, seed, "identical", n=300)
        try:
            check_release(release, expected, false_refusal=0.5)
        except ValueError:
            refused += 1
    assert refused <= 100 + 3 * math.sqrt(50), refused


# -- forged statistics ------------------------------------------------------------------------------


def _with_gram(release: Release, gram: np.ndarray) -> Release:
    return Release(**{**release.__dict__, "statistics": {"gram": gram, "cross": release.statistics["cross"]}})


@pytest.mark.parametrize(("noise", "epsilon"), [("gaussian", 1.0), ("gaussian", 10.0), ("laplace", 1.0), ("laplace", 10.0)])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_an_off_diagonal_gram_entry_of_minus_n_is_refused(task: str, noise: str, epsilon: float) -> None:
    """The issue's forgery: honest cross term (target moments / class sums), one off-diagonal Gram
    entry set to -n. Cauchy-Schwarz (|G_ij| <= sqrt(G_ii G_jj) <= n/2 for two features) refuses it."""
    n = 20_000
    release = _honest(task, noise, epsilon, seed=3, n=n)
    check_release(release, _expectation(task, noise, epsilon))
    gram = release.statistics["gram"].copy()
    gram[0, 1] = gram[1, 0] = -float(n)
    with pytest.raises(ValueError, match="Cauchy-Schwarz|positive semi-definite"):
        check_release(_with_gram(release, gram), _expectation(task, noise, epsilon))


def test_a_gram_matrix_that_is_not_psd_is_refused_even_when_every_entry_is_plausible() -> None:
    """Feature block ``(n/d) [(1 + r) I - r 11ᵀ]`` with r = 0.5: every entry within its bounds, every
    2x2 minor fine (Cauchy-Schwarz holds), the diagonal sums to n -- but its smallest eigenvalue is
    (n/d)(1 - r(d - 1)) = -n/4: no records have such a Gram matrix."""
    n, d, r = 20_000, D_FEATURES, 0.5
    release = _honest("regression", "gaussian", 1.0, seed=4, n=n)
    gram = release.statistics["gram"].copy()
    gram[:d, :d] = (n / d) * ((1 + r) * np.eye(d) - r * np.ones((d, d)))
    forged = _with_gram(release, gram)
    with pytest.raises(ValueError, match="positive semi-definite"):  # the last statistics check: the others passed
        check_release(forged, _expectation("regression", "gaussian", 1.0))


# -- lying metadata ---------------------------------------------------------------------------------


def _tampered(release: Release, **fields: Any) -> Release:
    data = release.to_dict()
    data.update(fields)
    return wire.decode_release(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: {"sampler": "numpy"}, "sampler='numpy'"),  # claims the run's law with a not-hardened sampler
        (lambda r: {"noise_scale": r.noise_scale * 1.009, "noise_sd": r.noise_sd * 1.009}, "noise_scale"),
        (lambda r: {"noise_scale": r.noise_scale * (1 - 1e-6), "noise_sd": r.noise_sd * (1 - 1e-6)}, "noise_scale"),
        (lambda r: {"epsilon": 0.9995}, "epsilon=0.9995"),
        (lambda r: {"epsilon": 1.0 + 1e-6}, "epsilon"),
        (lambda r: {"delta": 2e-5}, "delta"),
        (lambda r: {"noise_sd": r.noise_sd * 0.5}, "noise_sd"),
        (lambda r: {"sensitivity": r.sensitivity * 1.01}, "sensitivity"),
        (lambda r: {"repair_keep": "positive"}, "repair_keep"),
    ],
)
def test_lying_metadata_is_refused(change: Any, match: str) -> None:
    release = _honest("classification", "gaussian", 1.0, seed=5)
    expected = _expectation("classification", "gaussian", 1.0)
    check_release(release, expected)
    with pytest.raises(ValueError, match=match):
        check_release(_tampered(release, **change(release)), expected)


def test_the_expected_calibration_is_the_one_the_mechanism_draws_with() -> None:
    release = _honest("regression", "gaussian", 1.0, seed=6)
    m = release.dimension * (release.dimension + 1) // 2 + release.dimension
    want = expected_calibration("gaussian", "discrete", 1.0, DELTA, release.sensitivity, release.num_examples, m)
    assert (release.noise_scale, release.epsilon, release.delta) == (want.scale, want.epsilon, want.delta)
    assert release.epsilon < 1.0  # the accountant's epsilon, a hair below the configured one
