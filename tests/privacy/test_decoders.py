"""The LDA decoder: class statistics recovered from the release, equal to LDA fitted on the records."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning, combine_releases
from flwr_ppcdl.privacy.decoders import class_sums_and_counts

K = 4


def _records(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent means, unit-norm rows (inside the public bound)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    centres = np.random.default_rng(99).normal(size=(K, d))  # the same classes in every sample
    x = centres[y] + 0.8 * rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def _exact_release(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        return FunctionalMechanism(task="classification", num_classes=K, epsilon=math.inf).release(x, y)


def test_class_sums_and_counts_come_out_of_the_released_statistics() -> None:
    x, y = _records(500, 6, seed=0)
    release = _exact_release(x, y)
    sums, counts = class_sums_and_counts(release.statistics["gram"], release.statistics["cross"])
    np.testing.assert_allclose(counts, np.bincount(y, minlength=K), atol=1e-9)
    for k in range(K):
        np.testing.assert_allclose(sums[k], x[y == k].sum(axis=0), atol=1e-9)


def test_noise_free_lda_equals_lda_fitted_on_the_records() -> None:
    x, y = _records(800, 5, seed=1)
    weights = _exact_release(x, y).solve(decoder="lda")
    means = np.stack([x[y == k].mean(axis=0) for k in range(K)])
    counts = np.bincount(y, minlength=K)
    centred = x - means[y]
    covariance = centred.T @ centred / (len(y) - K)
    precision = np.linalg.inv(covariance)
    coef = means @ precision
    bias = -0.5 * np.sum(coef * means, axis=1) + np.log(counts / len(y))
    np.testing.assert_allclose(weights, np.hstack([coef, bias[:, None]]), rtol=1e-7, atol=1e-7)


def test_lda_under_gaussian_noise_beats_chance_and_sums_pool() -> None:
    parts = [_records(3000, 8, seed=10 + k) for k in range(4)]
    releases = [
        FunctionalMechanism(task="classification", num_classes=K, epsilon=2.0, noise="gaussian", delta=1e-5, insecure_noise_seed=k).release(*p)
        for k, p in enumerate(parts)
    ]
    combined = combine_releases(releases)
    x_test, y_test = _records(2000, 8, seed=10)
    h = np.c_[x_test, np.ones(len(x_test))]
    for release in (releases[0], combined):
        weights = release.solve(decoder="lda")
        assert weights.shape == (K, 9) and np.all(np.isfinite(weights))
        assert np.mean(np.argmax(h @ weights.T, axis=1) == y_test) > 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"decoder": "qda"}, "'qda'"), ({"decoder": "lda", "ridge": 1.0}, "ridge"), ({"decoder": "lda", "prox_mu": 1.0, "anchor": np.zeros((K, 4))}, "prox")],
)
def test_bad_decoder_requests_name_the_value(kwargs: dict[str, object], match: str) -> None:
    release = _exact_release(*_records(100, 3, seed=2))
    with pytest.raises(ValueError, match=match):
        release.solve(**kwargs)  # type: ignore[arg-type]


def test_lda_is_for_classification_only() -> None:
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        release = FunctionalMechanism(task="regression", epsilon=math.inf).release(rng.normal(size=(50, 3)), rng.normal(size=50))
    with pytest.raises(ValueError, match="'regression'"):
        release.solve(decoder="lda")
