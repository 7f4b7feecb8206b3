"""Shared Gaussian releases on the wire: validated against their own noise law, pooled with the sd of the sum."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from flwr_ppcdl import wire
from flwr_ppcdl.privacy import FunctionalMechanism, Release, combine_releases
from flwr_ppcdl.privacy.calibration import sigma_zcdp
from flwr_ppcdl.privacy.release_checks import ReleaseExpectation, check_release
from flwr_ppcdl.privacy.release_law import entry_noise
from flwr_ppcdl.privacy.sensitivity import sensitivity_softmax_l2

D, K, DELTA = 5, 3, 1e-5
EXPECTED = ReleaseExpectation(task="classification", num_features=D, epsilon=2.0, num_classes=K, noise="gaussian", delta=DELTA)


def _decode(text: str, expected: ReleaseExpectation = EXPECTED) -> Release:
    return check_release(wire.decode_release(text), expected)


def _release(seed: int, noise: str = "gaussian", sampler: str = "discrete") -> Release:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, D)) / 3.0
    fm = FunctionalMechanism(
        task="classification", num_classes=K, epsilon=2.0, noise=noise,  # type: ignore[arg-type]
        delta=DELTA if noise == "gaussian" else None, sampler=sampler, insecure_noise_seed=seed,  # type: ignore[arg-type]
    )
    return fm.release(x, rng.integers(0, K, size=400))


def _tampered(release: Release, **fields: Any) -> str:
    data = release.to_dict()
    data.update(fields)
    return json.dumps(data)


def test_an_honest_gaussian_release_passes_with_its_own_law() -> None:
    release = _release(0)
    back = _decode(wire.encode_release(release))
    assert (back.noise, back.delta) == ("gaussian", DELTA)
    assert back.sensitivity == pytest.approx(sensitivity_softmax_l2(D, K))
    assert back.noise_scale == pytest.approx(sigma_zcdp(2.0, DELTA, sensitivity_softmax_l2(D, K)), rel=1e-6)
    numpy_release = _release(1, sampler="numpy")  # analytic sigma: smaller, the public calibration of another sampler
    with pytest.raises(ValueError, match="sampler='numpy'"):
        _decode(wire.encode_release(numpy_release))
    _decode(wire.encode_release(numpy_release), ReleaseExpectation(**{**EXPECTED.__dict__, "sampler": "numpy"}))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"noise": "laplace"}, "Laplace|noise"),  # a Gaussian release relabelled (its delta != 0 gives it away)
        ({"delta": 1e-3}, "delta"),  # another delta than the run's
        ({"noise_sd": 0.5}, "noise_sd"),  # claims less noise than its scale implies (a smaller repair)
        ({"noise_scale": 0.5, "noise_sd": 0.5}, "noise_scale"),  # claims less noise than (ε, δ) imply
        ({"repair_multiplier": 0.01}, "repair_multiplier"),  # a private repair rule
        ({"sampler": "opendp"}, "sampler"),  # no Gaussian sampler of that name
    ],
)
def test_a_gaussian_release_that_lies_about_its_noise_is_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _decode(_tampered(_release(2), **fields))


def test_a_laplace_release_is_refused_by_a_gaussian_run_and_accepted_by_a_laplace_run() -> None:
    laplace = _release(3, noise="laplace")
    with pytest.raises(ValueError, match="noise"):
        _decode(wire.encode_release(laplace))
    laplace_run = ReleaseExpectation(task="classification", num_features=D, epsilon=2.0, num_classes=K)
    _decode(wire.encode_release(laplace), laplace_run)


def test_the_gaussian_entry_bound_is_tighter_than_the_laplace_one_and_refuses_inflated_statistics() -> None:
    release = _release(4)
    noise = entry_noise(release)
    coordinates = release.dimension * (release.dimension + 1) // 2 + release.statistics["cross"].size
    assert noise.coordinates == coordinates and noise.sd == release.noise_sd
    bound = noise.entry_bound(1e-12)
    assert bound == pytest.approx(math.sqrt(2 * math.log(2 * coordinates / 1e-12)) * release.noise_scale)
    assert bound < math.log(coordinates / 1e-12) * release.noise_scale  # what Laplace noise of that scale needs
    inflated = release.statistics["gram"] * 40.0  # a participant scaling its statistics up
    with pytest.raises(ValueError, match="reach|bias|diagonal"):
        _decode(_tampered(release, statistics={
            "gram": {"shape": [D + 1, D + 1], "upper": True,
                     "base64": __import__("base64").b64encode(np.ascontiguousarray(inflated[np.triu_indices(D + 1)], "<f8").tobytes()).decode()},
            "cross": release.to_dict()["statistics"]["cross"],
        }))


def test_the_pooled_solve_uses_the_sd_of_the_sum_and_the_decoder() -> None:
    releases = [_release(10 + k) for k in range(4)]
    pooled = combine_releases(releases)
    assert pooled.noise_sd == pytest.approx(math.sqrt(sum(r.noise_sd**2 for r in releases)))
    assert pooled.repaired().rho == pytest.approx(0.5 * 2 * pooled.noise_sd * math.sqrt(D + 1))
    taylor, lda = pooled.solve(), pooled.solve(decoder="lda")
    assert taylor.shape == lda.shape == (K, D + 1) and not np.allclose(taylor, lda)


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_the_reliability_scoring_reads_each_laws_own_noise_variance(noise: str) -> None:
    """The calibrated estimator's noise law is the release's own per-entry variance ``noise_sd²``: σ² for
    a Gaussian release (not the 2σ² of reading ``noise_scale`` as a Laplace scale), 2b² for a Laplace one."""
    from flwr_ppcdl.strategies.releases import release_scoring_view

    release = _release(20 if noise == "gaussian" else 21, noise=noise)
    sd2 = release.noise_sd**2
    assert sd2 == pytest.approx(release.noise_scale**2 * (1.0 if noise == "gaussian" else 2.0))
    (means, _), (variance, _) = release_scoring_view(release)
    gram, cross, n = release.statistics["gram"], release.statistics["cross"], release.num_examples
    sums = cross + gram[:, -1][None, :] / K
    counts = np.maximum(sums[:, -1], max(1.0, 3.0 * release.noise_sd, 1e-3 * n))
    np.testing.assert_allclose(means, sums[:, :-1] / counts[:, None], rtol=1e-12)
    privacy = sd2 * (1 + 1 / K**2 + means**2) / counts[:, None] ** 2
    total = np.maximum(np.diag(gram)[:-1] / n - (gram[:-1, -1] / n) ** 2, 0)
    np.testing.assert_allclose(variance, privacy + total[None, :] / counts[:, None], rtol=1e-12)


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_a_regression_release_is_scored_by_its_target_moments_with_variance_sd2_over_n2(noise: str) -> None:
    """Regression: the scored view is ``b / n`` (feature-target moments, last entry the mean target) and the
    Gram part ``G / n`` (upper triangle), each entry of noise variance exactly ``noise_sd² / n²`` -- checked
    against the spread of many noisy releases."""
    from flwr_ppcdl.strategies.releases import release_scoring_view

    rng = np.random.default_rng(22)
    n = 300
    x = rng.normal(size=(n, D)) / (3.0 * np.sqrt(D))  # rows within the public bound: nothing is clipped
    y = np.clip(x @ rng.normal(size=D), -1, 1)
    fm = FunctionalMechanism(task="regression", epsilon=2.0, noise=noise,  # type: ignore[arg-type]
                             delta=DELTA if noise == "gaussian" else None, sampler="numpy")
    xb = np.hstack([x, np.ones((n, 1))])
    exact = np.concatenate([xb.T @ y, (xb.T @ xb)[np.triu_indices(D + 1)]]) / n
    draws = []
    for _ in range(1500):
        release = fm.release(x, y)
        layers, variances = release_scoring_view(release)
        for variance in variances:
            np.testing.assert_allclose(variance, (release.noise_sd / n) ** 2, rtol=1e-12)
        draws.append(np.concatenate(layers))
    draws = np.array(draws)
    variance = (release.noise_sd / n) ** 2
    np.testing.assert_allclose(draws.mean(axis=0), exact, atol=4 * np.sqrt(variance / len(draws)))
    assert np.var(draws, axis=0) == pytest.approx(np.full(exact.shape, variance), rel=0.3)  # about 4 standard errors


def _census_like_weights(rng: np.random.Generator, fm: FunctionalMechanism, beta: np.ndarray, bad: set[int]) -> np.ndarray:
    """The calibrated weights of ten census-like regression releases (2,000 records each) scored by their
    views under the statistics protocol; the ``bad`` participants have random targets."""
    from flwr_ppcdl.reliability import estimate_reliability
    from flwr_ppcdl.strategies.releases import release_view

    releases = []
    for k in range(10):
        x = rng.uniform(-1, 1, size=(2000, D)) / np.sqrt(D)
        y = np.clip(x @ beta, -1, 1)
        releases.append(fm.release(x, rng.uniform(-1, 1, size=2000) if k in bad else y))
    return estimate_reliability(None, np.full(10, 2000.0), seed=0, views=[release_view(r) for r in releases]).weights


def _binomial_upper(n: int, p: float, tail: float) -> int:
    """The smallest count c with P(Binomial(n, p) > c) <= tail."""
    c, below = 0, (1.0 - p) ** n
    while 1.0 - below > tail:
        c += 1
        below += math.comb(n, c) * p**c * (1.0 - p) ** (n - c)
    return c


@pytest.mark.parametrize("fraction", [3, 4])
def test_random_targets_are_down_weighted_by_their_target_moments(fraction: int) -> None:
    """Three or four of ten census-like participants with random targets lose their weight (<= 0.2x their
    FedAvg share) under the statistics protocol; honest participants keep >= 0.8x their share, with or
    without random targets among them. The privacy noise is the OS's (never seeded), so the margins come
    from the model's own rates, not from one lucky draw: an honest participant below 0.8x is a false alarm,
    at most twice the stated rate (``false_alarm_rate``) -- the count of them in the 4 x (10 + 10 - f)
    participant-draws stays below the 1e-4 upper quantile of that binomial; random targets at epsilon = 1 are
    missed now and then (1.25 % of 1,200 unseeded draws), so at most one of the four draws may miss."""
    from flwr_ppcdl.reliability import ReliabilityOptions

    alarms, honest_draws, missed = 0, 0, 0
    for seed in range(4):
        rng = np.random.default_rng(seed)  # the data (public in this test); the privacy noise is the OS's
        beta = rng.normal(size=D)
        fm = FunctionalMechanism(task="regression", epsilon=1.0, noise="gaussian", delta=DELTA, sampler="numpy")
        for bad in (set(), set(range(fraction))):
            weights = _census_like_weights(rng, fm, beta, bad)
            honest = [k for k in range(10) if k not in bad]
            alarms += int(np.sum(weights[honest] < 0.8 * 0.1))
            honest_draws += len(honest)
            if bad:
                missed += int(weights[sorted(bad)].sum() > 0.2 * 0.1 * len(bad))
    assert missed <= 1, missed
    bound = _binomial_upper(honest_draws, 2.0 * ReliabilityOptions().false_alarm_rate, 1e-4)
    assert alarms <= bound, (alarms, bound, honest_draws)
