"""Composition of pure-ε and ρ-zCDP releases, against dp-accounting and hand examples."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from flwr_ppcdl.privacy.accounting import Composition, Guarantee, compose, zcdp_epsilon
from flwr_ppcdl.privacy.calibration import (
    zcdp_noise_multiplier,
)
from flwr_ppcdl.privacy.gaussian import (
    DiscreteGridGaussian,
    NumpyGaussian,
)
from flwr_ppcdl.privacy.noise import generator_randbelow


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def gaussian_release(epsilon: float = 1.0, delta: float = 1e-5) -> DiscreteGridGaussian:
    return DiscreteGridGaussian(
        l2_bound=2.8644,
        epsilon=epsilon,
        delta=delta,
        size=10,
        randbelow=generator_randbelow(np.random.default_rng(0)),
    )


def test_zcdp_event_and_gaussian_event_agree() -> None:
    for z in (0.7, 3.0, 4.05, 20.0):
        assert zcdp_epsilon(1 / (2 * z * z), 1e-5) == pytest.approx(
            rdp_epsilon(dp_accounting.GaussianDpEvent(z), 1e-5), rel=1e-12
        )


def test_zcdp_conversion_beats_the_classical_one() -> None:
    # Bun-Steinke: ρ-zCDP => (ρ + 2 sqrt(ρ log(1/δ)), δ); the accountant's conversion is tighter.
    for rho in (0.001, 0.03, 0.5, 4.0):
        classical = rho + 2 * math.sqrt(rho * math.log(1e5))
        assert zcdp_epsilon(rho, 1e-5) < classical
        assert zcdp_epsilon(rho, 1e-5) > 0.8 * classical - 0.5  # same order, not vacuous
    assert zcdp_epsilon(0.0, 1e-5) == 0.0


def test_two_pure_releases_stay_pure_and_add() -> None:
    total = compose([Guarantee.pure(0.5), Guarantee.pure(0.7)], delta=1e-5)
    assert total == Composition(epsilon=1.2, delta=0.0, route="basic", rho=0.5**2 / 2 + 0.7**2 / 2)


def test_one_gaussian_release_reports_exactly_its_calibration() -> None:
    sampler = gaussian_release()
    total = compose([sampler.guarantee()], delta=1e-5)
    assert (total.epsilon, total.delta) == (sampler.epsilon_spent, sampler.delta_spent)
    assert total.epsilon <= 1.0
    assert total.rho == sampler.rho


def test_one_analytic_release_keeps_its_exact_epsilon() -> None:
    with pytest.warns(Warning):
        sampler = NumpyGaussian(
            l2_bound=2.8644, epsilon=1.0, delta=1e-5, size=3, rng=np.random.default_rng(0)
        )
    total = compose([sampler.guarantee()], delta=1e-5)
    # Its ρ converts to more than 1 at 1e-5 (zCDP is looser), so basic composition decides.
    assert zcdp_epsilon(sampler.rho, 1e-5) > 1.0
    assert (total.epsilon, total.delta, total.route) == (1.0, 1e-5, "basic")


def test_many_gaussian_releases_compose_as_the_accountant_says() -> None:
    z = zcdp_noise_multiplier(1.0, 1e-5)
    guarantees = [Guarantee.zcdp(1 / (2 * z * z), 1e-5)] * 10
    total = compose(guarantees, delta=1e-5)
    expected = rdp_epsilon(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 10), 1e-5
    )
    assert total.route == "zcdp"
    assert total.epsilon == pytest.approx(expected, rel=1e-9)
    assert total.delta == 1e-5
    assert total.epsilon < 10 * 1.0  # far below basic composition (≈ 5.6 vs 10)
    # Basic composition would also need δ = 1e-4 > target.
    assert compose(guarantees, delta=1e-4).epsilon <= total.epsilon


@pytest.mark.parametrize(("eps", "copies", "route"), [(0.5, 3, "basic"), (0.2, 10, "zcdp")])
def test_pure_and_gaussian_mix_is_sound_against_a_tighter_accountant(
    eps: float, copies: int, route: str
) -> None:
    """Laplace counts as ε²/2-zCDP: the total is never below what PLD says of the actual pairs."""
    z = zcdp_noise_multiplier(eps, 1e-7)
    entries = [Guarantee.pure(eps), Guarantee.zcdp(1 / (2 * z * z), 1e-7)] * copies
    total = compose(entries, delta=1e-5)
    assert total.route == route
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.ComposedDpEvent(
                [dp_accounting.LaplaceDpEvent(1 / eps), dp_accounting.GaussianDpEvent(z)]
            ),
            copies,
        )
    )
    assert total.epsilon >= pld.get_epsilon(1e-5)
    # and it used the better of its two routes
    basic = math.fsum(e.epsilon for e in entries)
    zcdp = zcdp_epsilon(math.fsum(e.as_rho() for e in entries), 1e-5)
    assert total.epsilon == min(basic, zcdp)


def test_basic_route_needs_the_deltas_to_fit() -> None:
    release = Guarantee.zcdp(0.01, 1e-5)
    assert compose([release], delta=1e-5).route == "basic"
    tighter = compose([release], delta=1e-6)  # δ_i = 1e-5 > target: only zCDP can answer
    assert tighter.route == "zcdp"
    assert tighter.delta == 1e-6
    assert tighter.epsilon == zcdp_epsilon(0.01, 1e-6)


def test_split_budget_meets_the_total() -> None:
    """Two Gaussian releases at ρ/2 each total the (ε, δ) of one release at ρ."""
    rho = 1 / (2 * zcdp_noise_multiplier(1.0, 1e-5) ** 2)
    halves = compose([Guarantee.zcdp(rho / 2, 1e-5)] * 2, delta=1e-5)
    assert halves.route == "zcdp"
    assert halves.epsilon == pytest.approx(1.0, abs=1e-6)
    assert halves.epsilon <= 1.0


def test_no_noise_and_empty() -> None:
    assert compose([], delta=1e-5).epsilon == 0.0
    assert compose([Guarantee.pure(math.inf), Guarantee.pure(1.0)], delta=1e-5).epsilon == math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "approx", "epsilon": 1.0}, "kind"),
        ({"kind": "pure", "epsilon": -1.0}, "-1.0"),
        ({"kind": "pure", "epsilon": 1.0, "delta": 1e-5}, "delta"),
        ({"kind": "zcdp", "epsilon": 1.0, "delta": 1e-5}, "rho"),
        ({"kind": "zcdp", "epsilon": 1.0, "delta": 0.0, "rho": 0.1}, "delta.*0.0"),
        ({"kind": "zcdp", "epsilon": 1.0, "delta": 1e-5, "rho": math.nan}, "rho.*nan"),
    ],
)
def test_bad_guarantees_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Guarantee(**kwargs)


def test_bad_target_delta_is_rejected() -> None:
    with pytest.raises(ValueError, match="delta.*0"):
        compose([Guarantee.pure(1.0)], delta=0.0)
    with pytest.raises(TypeError, match="Guarantee"):
        compose([1.0], delta=1e-5)  # type: ignore[list-item]
