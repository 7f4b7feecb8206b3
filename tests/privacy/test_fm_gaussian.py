"""The Gaussian functional mechanism end to end: noise law through `FunctionalMechanism.release`,
its choice and validation, what the release and the ledger record, and the repair scale."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from flwr_ppcdl.privacy import (
    FunctionalMechanism,
    PrivacyLeakWarning,
    PrivacyLedger,
    Release,
    combine_releases,
)
from flwr_ppcdl.privacy.calibration import gaussian_l2_bound, sigma_zcdp, zcdp_noise_multiplier
from flwr_ppcdl.privacy.sensitivity import sensitivity_regression_l2, sensitivity_softmax_l2

K = 10
DELTA = 1e-5


def _records(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.integers(0, K, size=n)


def _vector(release: Release) -> np.ndarray:
    gram = release.statistics["gram"]
    return np.concatenate([gram[np.triu_indices(gram.shape[0])], release.statistics["cross"].ravel()])


def _exact(x: np.ndarray, y: np.ndarray, task: str = "classification") -> np.ndarray:
    with pytest.warns(PrivacyLeakWarning):
        fm = FunctionalMechanism(task=task, num_classes=K if task == "classification" else None, epsilon=math.inf)
    return _vector(fm.release(x, y))


def _gaussian(epsilon: float = 1.0, **kwargs: object) -> FunctionalMechanism:
    options: dict[str, object] = {"task": "classification", "num_classes": K, "noise": "gaussian", "delta": DELTA}
    options.update(kwargs)
    return FunctionalMechanism(epsilon=epsilon, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the noise law, through release()


def test_gaussian_release_noise_matches_its_formula() -> None:
    """Residuals of real releases: mean 0, variance σ² (χ² bounds), Gaussian shape (KS, kurtosis)."""
    n, d = 2000, 30
    x, y = _records(n, d, seed=0)
    exact = _exact(x, y)
    residuals = []
    for seed in range(4):
        release = _gaussian(insecure_noise_seed=seed).release(x, y)
        residuals.append(_vector(release) - exact)
    noise = np.concatenate(residuals)
    sigma = sigma_zcdp(1.0, DELTA, gaussian_l2_bound(sensitivity_softmax_l2(d, K), n, exact.size))
    assert release.noise_sd == pytest.approx(sigma, rel=1e-6)  # grid slack only (relative 2**-30 * sqrt(m))
    m = noise.size
    chi2 = float(np.sum(noise**2) / sigma**2)
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], m)
    assert low < chi2 < high, (chi2 / m, m)
    assert abs(float(np.mean(noise))) < 5.5 * sigma / math.sqrt(m)
    assert stats.kstest(noise / sigma, "norm").pvalue > 1e-6
    assert abs(float(stats.kurtosis(noise))) < 8 * math.sqrt(24 / m)  # Laplace would give +3


def test_laplace_release_is_not_mistaken_for_gaussian() -> None:
    """The same shape checks tell the two laws apart (the test above can fail)."""
    n, d = 500, 8
    x, y = _records(n, d, seed=1)
    exact = _exact(x, y)
    fm = FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, insecure_noise_seed=0)
    release = fm.release(x, y)
    noise = _vector(release) - exact
    assert release.noise == "laplace" and release.delta == 0.0
    assert release.noise_sd == pytest.approx(math.sqrt(2) * release.noise_scale)
    assert float(stats.kurtosis(noise)) > 1.5


def test_gaussian_noise_does_not_grow_with_the_feature_dimension() -> None:
    sds = []
    for d in (4, 16, 64):
        x, y = _records(300, d, seed=2)
        sds.append(_gaussian(insecure_noise_seed=0).release(x, y).noise_sd)
    assert max(sds) / min(sds) < 1 + 1e-6  # Δ₂ is the same for every d >= 2
    laplace = [
        FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, insecure_noise_seed=0).sensitivity(d)
        for d in (4, 16, 64)
    ]
    assert laplace[2] > 3 * laplace[0]


def test_regression_release_uses_its_own_l2_sensitivity() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 6)), rng.normal(size=400)
    fm = FunctionalMechanism(task="regression", epsilon=2.0, noise="gaussian", delta=DELTA, insecure_noise_seed=1)
    release = fm.release(x, y)
    assert release.sensitivity == sensitivity_regression_l2(6) == pytest.approx(math.sqrt(10), rel=1e-9)
    m = _vector(release).size
    assert release.noise_sd == pytest.approx(sigma_zcdp(2.0, DELTA, gaussian_l2_bound(math.sqrt(10), 400, m)), rel=1e-6)


# ---------------------------------------------------------------- what is recorded


def test_release_and_ledger_record_epsilon_delta_and_rho() -> None:
    ledger = PrivacyLedger(max_epsilon=1.0, delta=DELTA)
    fm = _gaussian(insecure_noise_seed=4, ledger=ledger)
    planned = fm.planned_guarantee()
    release = fm.release(*_records(300, 5, seed=4))
    entry = ledger.entries[0]
    assert (release.noise, release.delta) == ("gaussian", DELTA)
    assert release.epsilon <= 1.0 and entry.epsilon == release.epsilon
    assert entry.delta == DELTA and entry.rho is not None
    assert entry.rho <= planned.rho == pytest.approx(1 / (2 * zcdp_noise_multiplier(1.0, DELTA) ** 2))
    assert "gaussian/discrete" in entry.mechanism
    assert ledger.total_delta == DELTA and ledger.total_epsilon <= 1.0
    assert "(epsilon, delta)-DP" in release.guarantee_text


def test_a_second_gaussian_release_is_refused_by_the_budget_before_noise() -> None:
    ledger = PrivacyLedger(max_epsilon=1.0, delta=DELTA)
    fm = _gaussian(insecure_noise_seed=5, ledger=ledger)
    data = _records(200, 4, seed=5)
    fm.release(*data)
    with pytest.raises(Exception, match="max_epsilon"):
        fm.release(*data)
    assert len(ledger.entries) == 1


def test_release_round_trips_and_earlier_formats_read_as_laplace() -> None:
    release = _gaussian(insecure_noise_seed=6).release(*_records(200, 4, seed=6))
    back = Release.from_dict(json.loads(json.dumps(release.to_dict())))
    assert (back.noise, back.delta, back.noise_sd, back.repair_multiplier) == (
        "gaussian", release.delta, release.noise_sd, release.repair_multiplier,
    )
    np.testing.assert_array_equal(back.solve(), release.solve())
    laplace = FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, insecure_noise_seed=0).release(
        *_records(200, 4, seed=6)
    )
    base64_format = laplace.to_dict()  # format /2: base64 arrays, no noise law (every release was Laplace)
    for key in ("noise", "delta", "noise_sd", "repair_multiplier"):
        del base64_format[key]
    base64_format["format"] = "flwr_ppcdl.fm-release/2"
    list_format = dict(base64_format, format="flwr_ppcdl.fm-release/1")  # format /1: nested lists
    list_format["statistics"] = {k: v.tolist() for k, v in laplace.statistics.items()}
    for old in (base64_format, list_format):
        legacy = Release.from_dict(json.loads(json.dumps(old)))
        assert (legacy.noise, legacy.delta, legacy.repair_multiplier) == ("laplace", 0.0, 1.0)
        assert legacy.noise_sd == pytest.approx(math.sqrt(2) * legacy.noise_scale)
        np.testing.assert_array_equal(legacy.solve(), laplace.solve())


def test_repair_reads_the_noise_sd_not_the_laplace_scale() -> None:
    data = _records(300, 6, seed=7)
    gauss = _gaussian(insecure_noise_seed=7).release(*data)
    dim = gauss.dimension
    assert gauss.repaired().rho == pytest.approx(0.5 * 2 * gauss.noise_sd * math.sqrt(dim))
    laplace = FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, insecure_noise_seed=7).release(*data)
    assert laplace.repaired().rho == pytest.approx(2 * math.sqrt(2) * laplace.noise_scale * math.sqrt(dim))


def test_combined_gaussian_releases_carry_the_sd_of_the_sum() -> None:
    releases = [_gaussian(epsilon=e, insecure_noise_seed=k).release(*_records(300, 5, seed=k)) for k, e in enumerate((0.5, 1.0, 2.0))]
    coef = np.array([1.0, 0.5, 0.25])
    combined = combine_releases(releases, coef)
    expected = math.sqrt(sum(c * c * r.noise_sd**2 for c, r in zip(coef, releases, strict=True)))
    assert combined.noise_sd == pytest.approx(expected)
    assert (combined.noise, combined.delta) == ("gaussian", DELTA)
    assert combined.epsilon == max(r.epsilon for r in releases)
    laplace = FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, insecure_noise_seed=0).release(*_records(300, 5, 9))
    with pytest.raises(ValueError, match="noise"):
        combine_releases([releases[0], laplace])


# ---------------------------------------------------------------- choosing the noise


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": "poisson"}, "'poisson'"),
        ({"noise": "gaussian", "delta": None}, "delta"),
        ({"noise": "gaussian", "delta": 1.0}, "1.0"),
        ({"noise": "gaussian", "delta": 0.0}, "0.0"),
        ({"noise": "gaussian", "delta": math.nan}, "nan"),
        ({"noise": "gaussian", "delta": 1e-5, "sampler": "opendp"}, "'opendp'"),
        ({"noise": "laplace", "delta": 1e-5}, "1e-05"),
        ({"noise": "laplace", "sampler": "gaussian"}, "'gaussian'"),
        ({"noise": "gaussian", "delta": 1e-5, "repair_multiplier": 0.0}, "0.0"),
    ],
)
def test_every_bad_combination_is_refused_naming_the_value(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("noise", "sampler"), [("laplace", "discrete"), ("laplace", "numpy"), ("gaussian", "discrete"), ("gaussian", "numpy")])
def test_every_valid_combination_releases(noise: str, sampler: str) -> None:
    delta = DELTA if noise == "gaussian" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)  # the numpy samplers warn
        fm = FunctionalMechanism(task="classification", num_classes=K, epsilon=1.0, noise=noise, delta=delta, sampler=sampler, insecure_noise_seed=0)  # type: ignore[arg-type]
        release = fm.release(*_records(100, 3, seed=0))
    assert release.noise == noise and release.sampler == sampler


def test_numpy_gaussian_sampler_warns_and_uses_the_analytic_sigma() -> None:
    with pytest.warns(PrivacyLeakWarning, match="not hardened"):
        release = _gaussian(sampler="numpy", insecure_noise_seed=0).release(*_records(100, 3, seed=0))
    assert release.noise_sd < _gaussian(insecure_noise_seed=0).release(*_records(100, 3, seed=0)).noise_sd


def test_delta_at_least_one_over_n_warns() -> None:
    with pytest.warns(PrivacyLeakWarning, match="1/n"):
        _gaussian(delta=0.02, insecure_noise_seed=0).release(*_records(100, 3, seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _gaussian(delta=0.005, insecure_noise_seed=0).release(*_records(100, 3, seed=0))
    assert not [w for w in caught if "1/n" in str(w.message)]  # (the seed's own warning is expected)
