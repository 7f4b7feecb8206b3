"""Gaussian samplers: exact discrete Gaussian, grid calibration, seeding, empirical (ε, δ) check."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from flwr_ppcdl.privacy import PrivacyLeakWarning
from flwr_ppcdl.privacy.accounting import zcdp_epsilon
from flwr_ppcdl.privacy.calibration import (
    analytic_gaussian_delta,
    gaussian_l2_bound,
    sigma_analytic,
    sigma_zcdp,
    zcdp_noise_multiplier,
)
from flwr_ppcdl.privacy.gaussian import (
    DiscreteGridGaussian,
    NumpyGaussian,
    discrete_gaussian,
    discrete_gaussian_variance,
)
from flwr_ppcdl.privacy.noise import GRID_BITS, generator_randbelow
from flwr_ppcdl.privacy.sensitivity import sensitivity_softmax_l2


def rb(seed: int):  # type: ignore[no-untyped-def]
    return generator_randbelow(np.random.default_rng(seed))


def grid_sampler(
    seed: int,
    *,
    l2_bound: float = 2.8644,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    size: int = 50,
) -> DiscreteGridGaussian:
    return DiscreteGridGaussian(
        l2_bound=l2_bound, epsilon=epsilon, delta=delta, size=size, randbelow=rb(seed)
    )


# --------------------------------------------------------------------------- exact discrete Gaussian


def test_discrete_gaussian_matches_its_pmf() -> None:
    sigma_squared = Fraction(9, 4)
    randbelow = rb(1)
    draws = np.array([discrete_gaussian(sigma_squared, randbelow) for _ in range(20000)])
    support = np.arange(-40, 41)
    pmf = np.exp(-(support**2) / (2 * 2.25))
    pmf /= pmf.sum()
    for z in range(-4, 5):
        p = pmf[z + 40]
        freq = float(np.mean(draws == z))
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / draws.size), z


@pytest.mark.parametrize("sigma_squared", [Fraction(1, 4), Fraction(1), Fraction(10)])
def test_discrete_gaussian_variance_and_mean(sigma_squared: Fraction) -> None:
    randbelow = rb(2)
    n = 20000
    draws = np.array([discrete_gaussian(sigma_squared, randbelow) for _ in range(n)], dtype=float)
    exact = discrete_gaussian_variance(math.sqrt(sigma_squared))
    assert np.var(draws) == pytest.approx(exact, rel=0.05)
    assert abs(np.mean(draws)) < 4 * math.sqrt(exact / n)
    if sigma_squared == Fraction(1, 4):  # the discrete variance is visibly below σ² here
        assert exact < 0.9 * float(sigma_squared)
        assert np.var(draws) < 0.95 * float(sigma_squared)


def test_discrete_gaussian_variance_formula() -> None:
    assert discrete_gaussian_variance(0.5) == pytest.approx(0.21501, abs=1e-5)
    assert discrete_gaussian_variance(1.0) < 1.0
    assert discrete_gaussian_variance(1.0) == pytest.approx(1.0, rel=1e-6)
    assert discrete_gaussian_variance(10.0) == pytest.approx(100.0, rel=1e-12)


def test_discrete_gaussian_rejects_bad_variance() -> None:
    with pytest.raises(ValueError, match="sigma_squared"):
        discrete_gaussian(Fraction(0), rb(0))


# --------------------------------------------------------------------------- grid sampler: calibration


def test_calibration_accounts_for_the_grid_slack() -> None:
    """S ≥ z·(l2_bound + ceil(√m)·g)/g exactly, and σ grows with m as √m·g predicts."""
    l2_bound, m = 2.8644, 1775
    sampler = grid_sampler(0, l2_bound=l2_bound, size=m)
    z = zcdp_noise_multiplier(1.0, 1e-5)
    g = Fraction(sampler.grid)
    assert sampler.grid == 2.0 ** (math.floor(math.log2(z * l2_bound)) - GRID_BITS)
    assert math.isqrt(m - 1) + 1 == 43  # ceil(sqrt(1775))
    needed = Fraction(z) * (Fraction(l2_bound) + 43 * g) / g
    assert sampler.integer_l2_bound == (Fraction(l2_bound) + 43 * g) / g
    assert sampler.integer_sigma >= needed
    assert sampler.integer_sigma - needed <= Fraction(1, 2**20)  # rounded up by at most 2**-20
    # Without the slack term S would be smaller: the slack is really in there.
    without = Fraction(z) * Fraction(l2_bound) / g
    assert sampler.integer_sigma - without >= Fraction(z) * 43 - Fraction(1, 2**20)
    # A huge vector (m = 2**40, √m = 2**20) needs 2**20 more grid steps of sensitivity.
    big = DiscreteGridGaussian(
        l2_bound=l2_bound, epsilon=1.0, delta=1e-5, size=2**40, randbelow=rb(0)
    )
    small = grid_sampler(0, l2_bound=l2_bound, size=1)
    assert big.scale - small.scale == pytest.approx(z * (2**20 - 1) * sampler.grid, rel=1e-6)
    # ρ is what the integer sensitivity and S give, and it is within the (ε, δ) target.
    assert sampler.rho >= float(sampler.integer_l2_bound**2 / (2 * sampler.integer_sigma**2))
    assert sampler.rho <= 1 / (2 * z * z)
    assert sampler.epsilon_spent == zcdp_epsilon(sampler.rho, 1e-5)
    assert 1.0 - 1e-6 < sampler.epsilon_spent <= 1.0
    assert sampler.delta_spent == 1e-5


def test_scale_is_the_zcdp_sigma_plus_a_hair() -> None:
    sampler = grid_sampler(0, size=1775)
    nominal = sigma_zcdp(1.0, 1e-5, 2.8644)
    z = zcdp_noise_multiplier(1.0, 1e-5)
    # the grid slack z·ceil(√m)·g (≈ 1.1e-7 relative here) plus the 2**-20-step rounding of S
    assert sampler.scale - nominal == pytest.approx(z * 43 * sampler.grid, rel=1e-6)
    assert sampler.scale == float(sampler.integer_sigma) * sampler.grid


def test_calibration_uses_the_l2_bound_with_summation_slack() -> None:
    """The helper the caller should use is strictly larger than Δ₂ and changes σ accordingly."""
    delta2 = sensitivity_softmax_l2(49, 10)
    bound = gaussian_l2_bound(delta2, 6000, 1775)
    with_slack = grid_sampler(0, l2_bound=bound, size=1775)
    without = grid_sampler(0, l2_bound=delta2, size=1775)
    assert with_slack.integer_sigma > without.integer_sigma


# --------------------------------------------------------------------------- grid sampler: output


def test_output_lies_on_the_public_grid() -> None:
    sampler = grid_sampler(4, size=200)
    values = np.linspace(-3000, 3000, 200)
    out = sampler.perturb(values)
    steps = out / sampler.grid
    assert np.array_equal(steps, np.round(steps))  # exact integers times a power of two
    assert not np.array_equal(out, values)


def test_noise_variance_and_mean_match_the_scale() -> None:
    sampler = grid_sampler(5, size=2000)
    values = np.random.default_rng(0).normal(size=2000) * 100
    noise = np.concatenate([sampler.perturb(values) - values for _ in range(5)])
    assert np.var(noise) == pytest.approx(sampler.scale**2, rel=0.06)
    assert abs(np.mean(noise)) < 4 * sampler.scale / math.sqrt(noise.size)
    # The scale is ≈ 11.59 (zCDP), not the analytic 10.69: a 17 % variance difference, visible.
    assert np.var(noise) > sigma_analytic(1.0, 1e-5, 2.8644) ** 2 * 1.08


def test_same_seed_same_output_different_seed_differs() -> None:
    values = np.linspace(-1, 1, 50)
    assert np.array_equal(grid_sampler(7).perturb(values), grid_sampler(7).perturb(values))
    assert not np.array_equal(grid_sampler(7).perturb(values), grid_sampler(8).perturb(values))
    sampler = grid_sampler(7)  # successive calls draw fresh noise
    assert not np.array_equal(sampler.perturb(values), sampler.perturb(values))


def test_every_random_decision_comes_from_randbelow() -> None:
    """Same randbelow stream -> same output, whatever numpy's and Python's global RNGs hold."""
    import random

    calls: list[int] = []
    inner = rb(3)

    def counting(n: int) -> int:
        calls.append(n)
        return inner(n)

    def release(randbelow, state: int) -> np.ndarray:  # type: ignore[no-untyped-def]
        np.random.seed(state)  # noqa: NPY002 -- the legacy global state must not matter
        random.seed(state)
        sampler = DiscreteGridGaussian(
            l2_bound=1.0, epsilon=1.0, delta=1e-5, size=20, randbelow=randbelow
        )
        return sampler.perturb(np.zeros(20))

    first = release(counting, 0)
    assert np.array_equal(release(rb(3), 12345), first)
    assert len(calls) >= 20 * 5  # several exact uniform / Bernoulli decisions per coordinate


def test_rejects_wrong_size_and_non_finite_values() -> None:
    sampler = grid_sampler(0, size=3)
    with pytest.raises(ValueError, match="expected 3 values; got 4"):
        sampler.perturb(np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        sampler.perturb(np.array([0.0, np.nan, 1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l2_bound": 0.0}, "l2_bound"),
        ({"l2_bound": math.inf}, "l2_bound"),
        ({"epsilon": -1.0}, "epsilon.*-1.0"),
        ({"epsilon": math.nan}, "epsilon.*nan"),
        ({"delta": 0.0}, "delta.*0.0"),
        ({"delta": 1.0}, "delta.*1.0"),
        ({"size": 0}, "size"),
    ],
)
def test_bad_calibration_inputs_are_rejected(kwargs: dict, match: str) -> None:
    base: dict[str, Any] = {"l2_bound": 1.0, "epsilon": 1.0, "delta": 1e-5, "size": 3}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DiscreteGridGaussian(randbelow=rb(0), **base)
    with pytest.raises(ValueError, match=match):
        NumpyGaussian(rng=np.random.default_rng(0), **base)


# --------------------------------------------------------------------------- empirical (ε, δ) check


def _hockey_stick(a: np.ndarray, b: np.ndarray, epsilon: float) -> tuple[float, float]:
    """max over half-lines S = {x > t} of P̂_a(S) - e^ε P̂_b(S), with its standard error.

    For a Gaussian shift the worst set of the (ε, δ) definition is such a half-line, so this
    estimates δ(ε) of the released coordinate.
    """
    best, best_se = -1.0, 0.0
    for t in np.quantile(np.concatenate([a, b]), np.linspace(0.5, 0.995, 60)):
        pa, pb = float(np.mean(a > t)), float(np.mean(b > t))
        value = pa - math.exp(epsilon) * pb
        if value > best:
            se = math.sqrt(pa * (1 - pa) / a.size + math.exp(2 * epsilon) * pb * (1 - pb) / b.size)
            best, best_se = value, se
    return best, best_se


def test_empirical_privacy_of_one_coordinate() -> None:
    """Neighbouring inputs 0 and Δ on one coordinate (Δ = l2_bound), ε = 1, δ = 0.05.

    Each of the m coordinates of a release is an independent draw of the same 1-D mechanism, so a
    long vector gives many samples. Checks: (1) histogram log-ratios stay within ε wherever the
    Gaussian privacy loss |x - Δ/2|Δ/σ² is below ε (the ratio may exceed e^ε only on the tail,
    whose probability is what δ pays for); (2) the estimated δ(ε) over half-lines is ≤ δ and
    matches the analytic δ(ε) of a Gaussian with the sampler's σ (the test has power: the same
    statistic for a sampler 1.5x too narrow, simulated by a 1.5Δ shift, is far above δ).
    """
    epsilon, delta, m = 1.0, 0.05, 4000
    fm_a = DiscreteGridGaussian(
        l2_bound=1.0, epsilon=epsilon, delta=delta, size=m, randbelow=rb(100)
    )
    fm_b = DiscreteGridGaussian(
        l2_bound=1.0, epsilon=epsilon, delta=delta, size=m, randbelow=rb(200)
    )
    sigma = fm_a.scale
    a = np.concatenate([fm_a.perturb(np.full(m, 1.0)) for _ in range(2)])
    b = np.concatenate([fm_b.perturb(np.zeros(m)) for _ in range(2)])

    edges = np.arange(-4.0, 5.01, 0.5) * sigma
    count_a, _ = np.histogram(a, edges)
    count_b, _ = np.histogram(b, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    loss_bound = (np.abs(centres - 0.5) + 0.25 * sigma) / sigma**2  # max loss within the bin
    usable = (count_a >= 80) & (count_b >= 80) & (loss_bound <= epsilon)
    assert usable.sum() >= 5
    log_ratio = np.abs(np.log(count_a[usable] / count_b[usable]))
    tolerance = 3.5 * np.sqrt(1 / count_a[usable] + 1 / count_b[usable])
    assert np.all(log_ratio <= epsilon + tolerance)

    estimate, se = _hockey_stick(a, b, epsilon)
    assert estimate <= delta + 3.5 * se
    theory = analytic_gaussian_delta(sigma, epsilon, 1.0)  # ≈ 0.021: zCDP is conservative
    assert abs(estimate - theory) <= 4 * se + 0.005
    too_narrow, se_narrow = _hockey_stick(a + 0.5, b, epsilon)  # shift 1.5 = σ/1.5 at Δ = 1
    assert too_narrow > delta + 3.5 * se_narrow


# --------------------------------------------------------------------------- numpy (not hardened)


def test_numpy_gaussian_warns_and_uses_the_analytic_sigma() -> None:
    with pytest.warns(PrivacyLeakWarning, match="not hardened"):
        sampler = NumpyGaussian(
            l2_bound=2.8644, epsilon=1.0, delta=1e-5, size=3000, rng=np.random.default_rng(0)
        )
    assert sampler.scale == sigma_analytic(1.0, 1e-5, 2.8644)
    assert sampler.scale == pytest.approx(10.69, abs=0.01)
    assert (sampler.epsilon_spent, sampler.delta_spent) == (1.0, 1e-5)
    assert sampler.rho == pytest.approx(1 / (2 * (sampler.scale / 2.8644) ** 2), rel=1e-12)
    values = np.zeros(3000)
    noise = np.concatenate([sampler.perturb(values) for _ in range(3)])
    assert np.var(noise) == pytest.approx(sampler.scale**2, rel=0.06)
    with pytest.raises(ValueError, match="expected 3000 values"):
        sampler.perturb(np.zeros(2))
