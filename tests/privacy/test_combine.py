"""Combining participants' releases (post-processing): the sum is the pooled statistics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from flwr_ppcdl.privacy import (
    FunctionalMechanism,
    PrivacyLeakWarning,
    combine_releases,
    linear_head_parameters,
)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.integers(0, 3, size=n)


def _fm(epsilon: float, seed: int | None = 0) -> FunctionalMechanism:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        return FunctionalMechanism(task="classification", num_classes=3, epsilon=epsilon, insecure_noise_seed=seed)


def test_sum_of_noise_free_releases_equals_the_pooled_release() -> None:
    parts = [_data(200 + 50 * k, k) for k in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        releases = [_fm(math.inf).release(x, y) for x, y in parts]
        pooled = _fm(math.inf).release(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    combined = combine_releases(releases)
    for key in ("gram", "cross"):
        np.testing.assert_allclose(combined.statistics[key], pooled.statistics[key], rtol=1e-12, atol=1e-9)
    assert combined.num_examples == pooled.num_examples
    np.testing.assert_allclose(combined.solve(), pooled.solve(), rtol=1e-8, atol=1e-8)


def test_combined_noise_scale_and_epsilon() -> None:
    releases = [_fm(1.0, seed=k).release(*_data(300, k)) for k in range(4)]
    coef = np.array([1.0, 0.5, 0.0, 2.0])
    combined = combine_releases(releases, coef)
    expected = math.sqrt(sum(c * c * r.noise_scale**2 for c, r in zip(coef, releases, strict=True)))
    assert combined.noise_scale == pytest.approx(expected)
    assert combined.epsilon == 1.0  # parallel composition: each record is in one release
    np.testing.assert_allclose(
        combined.statistics["gram"], releases[0].statistics["gram"] + 0.5 * releases[1].statistics["gram"] + 2 * releases[3].statistics["gram"]
    )


def test_mismatched_or_bad_inputs_are_rejected_naming_the_problem() -> None:
    a = _fm(1.0).release(*_data(100, 0))
    b = FunctionalMechanism(task="classification", num_classes=3, epsilon=1.0, feature_bound=2.0, insecure_noise_seed=0).release(*_data(100, 1))
    with pytest.raises(ValueError, match="feature_bound"):
        combine_releases([a, b])
    with pytest.raises(ValueError, match="-1.0"):
        combine_releases([a, a], [1.0, -1.0])
    with pytest.raises(ValueError, match="at least one"):
        combine_releases([])


def test_linear_head_parameters_reproduce_the_normalised_predictions() -> None:
    rel = FunctionalMechanism(task="regression", epsilon=math.inf, feature_bound=2.0, target_bound=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(100, 3)) * 0.5
        x = x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True) / 2.0)  # ||x|| <= c = 2
        release = rel.release(x, x @ np.array([1.0, -0.5, 0.2]))
    w = release.solve()
    weight, bias = linear_head_parameters(w, release)
    direct = 3.0 * (np.c_[x / 2.0, np.ones(len(x))] @ w)
    np.testing.assert_allclose(x @ weight.T[:, 0] + bias[0], direct, rtol=1e-10, atol=1e-10)
