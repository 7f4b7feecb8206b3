"""Samplers: exact distributions, calibration, seeding, and an empirical e^ε check."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning
from flwr_ppcdl.privacy.noise import (
    DiscreteGridLaplace,
    bernoulli_exp_neg,
    discrete_laplace,
    discrete_laplace_variance,
    generator_randbelow,
    os_randbelow,
)


def _regression_data(n: int = 60, d: int = 8, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)


def _released_vector(release) -> np.ndarray:  # type: ignore[no-untyped-def]
    gram = release.statistics["gram"]
    return np.concatenate(
        [gram[np.triu_indices(gram.shape[0])], release.statistics["cross"].ravel()]
    )


def _exact_vector(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with pytest.warns(PrivacyLeakWarning):
        fm = FunctionalMechanism(task="regression", epsilon=math.inf)
    return _released_vector(fm.release(x, y))


def test_bernoulli_exp_neg_frequencies() -> None:
    randbelow = generator_randbelow(np.random.default_rng(0))
    for gamma in (Fraction(1, 3), Fraction(5, 2)):
        draws = 20000
        hits = sum(bernoulli_exp_neg(gamma, randbelow) for _ in range(draws))
        p = math.exp(-float(gamma))
        assert abs(hits / draws - p) < 4 * math.sqrt(p * (1 - p) / draws)


def test_discrete_laplace_matches_its_pmf() -> None:
    scale = Fraction(3, 2)
    randbelow = generator_randbelow(np.random.default_rng(1))
    draws = np.array([discrete_laplace(scale, randbelow) for _ in range(30000)])
    q = math.exp(-1 / float(scale))
    for z in range(-4, 5):
        p = (1 - q) / (1 + q) * q ** abs(z)
        freq = float(np.mean(draws == z))
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / draws.size), z
    assert np.var(draws) == pytest.approx(discrete_laplace_variance(scale), rel=0.1)


def test_randbelow_is_exact_for_big_integers() -> None:
    randbelow = generator_randbelow(np.random.default_rng(2))
    n = 3 * 2**98 + 7
    values = [randbelow(n) for _ in range(4000)]
    assert all(0 <= v < n for v in values)
    assert np.mean([v >= n // 2 for v in values]) == pytest.approx(0.5, abs=0.05)
    assert 0 <= os_randbelow(n) < n


def test_discrete_output_lies_on_the_public_grid() -> None:
    mech = DiscreteGridLaplace(
        l1_bound=7.0, epsilon=0.5, size=50, randbelow=generator_randbelow(np.random.default_rng(4))
    )
    out = mech.perturb(np.linspace(-3, 3, 50))
    assert mech.grid == 2.0 ** (math.floor(math.log2(14.0)) - 30)
    steps = out / mech.grid
    assert np.array_equal(steps, np.round(steps))  # exact integers times a power of two
    assert mech.scale >= 7.0 / 0.5  # never less noise than Δ/ε


@pytest.mark.parametrize("sampler", ["discrete", "opendp", "numpy"])
def test_noise_variance_matches_laplace(sampler: str) -> None:
    x, y = _regression_data()
    exact = _exact_vector(x, y)
    seed = None if sampler == "opendp" else 11
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        fm = FunctionalMechanism(task="regression", epsilon=2.0, sampler=sampler, insecure_noise_seed=seed)  # type: ignore[arg-type]
        releases = [fm.release(x, y) for _ in range(160)]
    noise = np.concatenate([_released_vector(r) - exact for r in releases])  # 160 * 54 draws
    delta = fm.sensitivity(8)
    assert releases[0].noise_scale == pytest.approx(delta / 2.0, rel=1e-3)
    assert np.var(noise) == pytest.approx(2 * (delta / 2.0) ** 2, rel=0.1)
    assert abs(np.mean(noise)) < 4 * math.sqrt(2) * delta / 2.0 / math.sqrt(noise.size)


@pytest.mark.parametrize("sampler", ["discrete", "numpy"])
def test_same_seed_same_release_different_seed_differs(sampler: str) -> None:
    x, y = _regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)

        def release(seed: int | np.random.Generator) -> np.ndarray:
            fm = FunctionalMechanism(task="regression", epsilon=1.0, sampler=sampler, insecure_noise_seed=seed)  # type: ignore[arg-type]
            return _released_vector(fm.release(x, y))

        assert np.array_equal(release(5), release(5))
        assert np.array_equal(release(5), release(np.random.default_rng(5)))
        assert not np.array_equal(release(5), release(6))


def test_unseeded_releases_differ() -> None:
    x, y = _regression_data()
    fm = FunctionalMechanism(task="regression", epsilon=1.0)  # OS CSPRNG
    assert not np.array_equal(
        _released_vector(fm.release(x, y)), _released_vector(fm.release(x, y))
    )


def test_opendp_cannot_be_seeded_and_says_so() -> None:
    with pytest.warns(UserWarning, match="cannot be seeded"):
        FunctionalMechanism(task="regression", epsilon=1.0, sampler="opendp", insecure_noise_seed=3)


def test_opendp_reports_the_epsilon_its_map_spends() -> None:
    x, y = _regression_data()
    release = FunctionalMechanism(task="regression", epsilon=0.7, sampler="opendp").release(x, y)
    assert 0.69 < release.epsilon <= 0.7


def test_numpy_sampler_warns_it_is_not_hardened() -> None:
    x, y = _regression_data()
    fm = FunctionalMechanism(task="regression", epsilon=1.0, sampler="numpy", insecure_noise_seed=0)
    with pytest.warns(PrivacyLeakWarning, match="not hardened"):
        fm.release(x, y)


def test_empirical_privacy_ratio_of_one_coordinate() -> None:
    """Neighbouring datasets (one record's target flipped), many seeded discrete releases.

    The bias coordinate of b moves by 2 of Δ = 10 (d = 1), so its own log-ratio bound is
    ε·2/Δ = 1 at ε = 5; the histogram log-ratios must stay below it (and so below ε), and must
    reach a good part of it (the test has power: a mis-scaled sampler would fail one side).
    """
    x = np.array([[1.0], [0.5], [-0.3], [0.2]])
    y = np.array([1.0, 0.4, -0.2, 0.0])
    y_neighbour = y.copy()
    y_neighbour[0] = -1.0
    epsilon, draws = 5.0, 3000
    fm_a = FunctionalMechanism(task="regression", epsilon=epsilon, insecure_noise_seed=100)
    fm_b = FunctionalMechanism(task="regression", epsilon=epsilon, insecure_noise_seed=200)
    delta = fm_a.sensitivity(1)
    a = np.array([fm_a.release(x, y).statistics["cross"][1] for _ in range(draws)])
    b = np.array([fm_b.release(x, y_neighbour).statistics["cross"][1] for _ in range(draws)])
    coordinate_epsilon = epsilon * 2.0 / delta
    edges = np.arange(-8.0, 8.01, 1.0)
    count_a, _ = np.histogram(a, edges)
    count_b, _ = np.histogram(b, edges)
    usable = (count_a >= 60) & (count_b >= 60)
    assert usable.sum() >= 6
    log_ratio = np.abs(np.log(count_a[usable] / count_b[usable]))
    tolerance = 3.5 * np.sqrt(1 / count_a[usable] + 1 / count_b[usable])
    assert np.all(log_ratio <= coordinate_epsilon + tolerance)
    assert np.all(log_ratio <= epsilon)
    assert log_ratio.max() >= 0.6 * coordinate_epsilon
