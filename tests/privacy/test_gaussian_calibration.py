"""σ(ε, δ, Δ₂): zCDP calibration against dp-accounting's RDP accountant, the analytic Gaussian
against its PLD accountant, and the floating-point slack in L2."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_ppcdl.privacy import summation_slack
from flwr_ppcdl.privacy.calibration import (
    analytic_gaussian_delta,
    analytic_noise_multiplier,
    gaussian_l2_bound,
    sigma_analytic,
    sigma_zcdp,
    summation_slack_l2,
    zcdp_noise_multiplier,
)
from flwr_ppcdl.privacy.sensitivity import sensitivity_softmax_l2

DELTA2 = 2.8644
EPSILONS = (0.5, 1.0, 2.0, 8.0)


def rdp_epsilon(noise_multiplier: float, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    return float(accountant.get_epsilon(delta))


def pld_epsilon(noise_multiplier: float, delta: float) -> float:
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    return float(accountant.get_epsilon(delta))


def test_reference_values() -> None:
    # Feasibility doc §3 (analytic Gaussian, δ = 1e-5, Δ₂ = 2.864): 20.14 / 10.69 / 5.71 / 1.72.
    expected = {0.5: 20.14, 1.0: 10.69, 2.0: 5.71, 8.0: 1.72}
    for eps, sigma in expected.items():
        assert sigma_analytic(eps, 1e-5, DELTA2) == pytest.approx(sigma, abs=0.006)
    # zCDP costs more noise than the exact profile, by 6-9 % here.
    for eps in EPSILONS:
        ratio = sigma_zcdp(eps, 1e-5, DELTA2) / sigma_analytic(eps, 1e-5, DELTA2)
        assert 1.05 < ratio < 1.10


@pytest.mark.parametrize("eps", EPSILONS)
def test_zcdp_sigma_is_the_smallest_the_rdp_accountant_accepts(eps: float) -> None:
    z = zcdp_noise_multiplier(eps, 1e-5)
    assert sigma_zcdp(eps, 1e-5, DELTA2) == z * DELTA2
    assert rdp_epsilon(z, 1e-5) <= eps  # GaussianDpEvent(σ/Δ₂), as in the brief
    assert rdp_epsilon(z * (1 - 1e-9), 1e-5) > eps  # and no smaller σ would do


@pytest.mark.parametrize("eps", EPSILONS)
def test_analytic_sigma_matches_the_pld_accountant(eps: float) -> None:
    z = analytic_noise_multiplier(eps, 1e-5)
    measured = pld_epsilon(z, 1e-5)
    assert measured <= eps
    assert measured >= eps * (1 - 1e-3)  # tight within 0.1 %
    assert get_epsilon_gaussian(z, 1e-5) <= eps
    # The exact profile at the calibrated σ is just below δ.
    assert 0.999 * 1e-5 <= analytic_gaussian_delta(z * DELTA2, eps, DELTA2) <= 1e-5


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(min_value=0.05, max_value=20.0),
    log10_delta=st.floats(min_value=-12.0, max_value=-1.0),
)
def test_calibrated_epsilon_never_exceeds_the_target(eps: float, log10_delta: float) -> None:
    delta = 10.0**log10_delta
    assert rdp_epsilon(zcdp_noise_multiplier(eps, delta), delta) <= eps
    z = analytic_noise_multiplier(eps, delta)
    assert get_epsilon_gaussian(z, delta) <= eps
    assert analytic_gaussian_delta(z, eps, 1.0) <= delta
    # The analytic σ is never larger than the zCDP one (the exact profile is the tightest).
    assert z <= zcdp_noise_multiplier(eps, delta)


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(min_value=0.1, max_value=10.0))
def test_analytic_calibration_holds_under_the_pld_accountant(eps: float) -> None:
    assert pld_epsilon(analytic_noise_multiplier(eps, 1e-5), 1e-5) <= eps


def test_sigma_decreases_in_epsilon_and_delta() -> None:
    epsilons = np.geomspace(0.05, 20, 12)
    deltas = np.geomspace(1e-10, 1e-2, 9)
    for calibrate in (sigma_zcdp, sigma_analytic):
        by_eps = [calibrate(float(e), 1e-5, DELTA2) for e in epsilons]
        assert all(a > b for a, b in zip(by_eps, by_eps[1:], strict=False))
        by_delta = [calibrate(1.0, float(d), DELTA2) for d in deltas]
        assert all(a > b for a, b in zip(by_delta, by_delta[1:], strict=False))
        # σ scales linearly with Δ₂
        assert calibrate(1.0, 1e-5, 2 * DELTA2) == pytest.approx(
            2 * calibrate(1.0, 1e-5, DELTA2), rel=1e-15
        )


@pytest.mark.parametrize("calibrate", [sigma_zcdp, sigma_analytic])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_epsilon_is_rejected_by_name(calibrate, bad: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"epsilon.*{bad}"):
        calibrate(bad, 1e-5, DELTA2)


@pytest.mark.parametrize("calibrate", [sigma_zcdp, sigma_analytic])
@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_bad_delta_is_rejected_by_name(calibrate, bad: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"delta.*{bad}"):
        calibrate(1.0, bad, DELTA2)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.nan, math.inf])
def test_bad_sensitivity_is_rejected_by_name(bad: float) -> None:
    with pytest.raises(ValueError, match=f"l2_sensitivity.*{bad}"):
        sigma_zcdp(1.0, 1e-5, bad)


def test_non_real_inputs_are_type_errors() -> None:
    with pytest.raises(TypeError, match="epsilon"):
        sigma_zcdp("1", 1e-5, DELTA2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="delta"):
        sigma_zcdp(1.0, True, DELTA2)  # type: ignore[arg-type]


def test_epsilon_too_small_to_sample_is_a_clear_error() -> None:
    # With δ > 0 the noise stays finite as ε -> 0 (δ alone bounds it: σ/Δ ≈ 0.4/δ) ...
    assert math.isfinite(sigma_analytic(1e-12, 1e-5, DELTA2))
    # ... but not when δ is also tiny (the zCDP conversion cannot reach ε = 1e-6 at δ = 1e-300) ...
    with pytest.raises(ValueError, match="too small to sample"):
        zcdp_noise_multiplier(1e-6, 1e-300)
    # ... or when σ = z·Δ₂ overflows.
    with pytest.raises(ValueError, match="too small to sample.*not a finite float"):
        sigma_zcdp(0.01, 1e-5, 1e307)


# --------------------------------------------------------------------------- floating-point slack


def test_l2_slack_is_the_l1_slack_over_sqrt_m() -> None:
    for n, m in ((1, 1), (6000, 1775), (60000, 323)):
        assert summation_slack_l2(n, m) == pytest.approx(
            summation_slack(n, m) / math.sqrt(m), rel=1e-12
        )
        assert summation_slack_l2(n, m) >= summation_slack(n, m) / math.sqrt(m)
    assert 3e-7 < summation_slack_l2(6000, 1775) < 4e-7


def test_gaussian_l2_bound_adds_the_slack() -> None:
    delta2 = sensitivity_softmax_l2(49, 10)
    bound = gaussian_l2_bound(delta2, 6000, 1775)
    assert bound == delta2 + summation_slack_l2(6000, 1775)
    assert bound > delta2
    with pytest.raises(ValueError, match="num_examples"):
        gaussian_l2_bound(delta2, 0, 10)
    with pytest.raises(ValueError, match="delta2"):
        gaussian_l2_bound(-1.0, 10, 10)


def test_computed_statistics_stay_within_the_slack() -> None:
    """The float64 release vector of n records differs from an exact (fsum) one by < the slack."""
    rng = np.random.default_rng(0)
    n, d = 3000, 3
    h = rng.normal(size=(n, d))
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    ht = np.hstack([h, np.ones((n, 1))])
    iu = np.triu_indices(d + 1)
    computed = (ht.T @ ht)[iu]
    exact = np.array([math.fsum(ht[:, i] * ht[:, j]) for i, j in zip(*iu, strict=True)])
    err = float(np.linalg.norm(computed - exact))
    assert err <= summation_slack_l2(n, computed.size) / 2  # one side of the pair
