"""Partitions are disjoint, cover every record, are seeded, and skewed only when asked to be."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_ppcdl.data import (
    CENSUS_TARGET_BIN_EDGES,
    label_histograms,
    load_sklearn_digits,
    partition_indices,
)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_sklearn_digits().targets


def _assert_partition(parts: list[np.ndarray], n: int) -> None:
    together = np.concatenate(parts)
    assert len(together) == n
    np.testing.assert_array_equal(np.sort(together), np.arange(n))


def _mean_tv_distance(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's label mix and the global one."""
    hist = label_histograms(labels, parts, 10).astype(float)
    local = hist / hist.sum(axis=1, keepdims=True)
    overall = np.bincount(labels, minlength=10) / len(labels)
    return float(np.mean(0.5 * np.abs(local - overall).sum(axis=1)))


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_disjoint_cover_and_seeded(labels, partitioning):
    parts = partition_indices(labels, 8, partitioning, alpha=0.3, seed=5)
    assert len(parts) == 8 and all(p.dtype == np.int64 for p in parts)
    _assert_partition(parts, len(labels))
    again = partition_indices(labels, 8, partitioning, alpha=0.3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(labels, 8, partitioning, alpha=0.3, seed=6)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_is_balanced_even_when_records_are_sorted_by_label(labels):
    sorted_labels = np.sort(labels)  # a file sorted by class must not give one class per shard
    parts = partition_indices(sorted_labels, 5, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _mean_tv_distance(sorted_labels, parts) < 0.08


def test_dirichlet_is_label_skewed_and_respects_min_size(labels):
    iid = partition_indices(labels, 5, "iid", seed=0)
    skewed = partition_indices(labels, 5, "dirichlet", alpha=0.1, seed=0, min_partition_size=20)
    assert min(len(p) for p in skewed) >= 20
    assert _mean_tv_distance(labels, skewed) > 0.3 > 3 * _mean_tv_distance(labels, iid)


def test_regression_targets():
    rng = np.random.default_rng(0)
    targets = rng.normal(6.6, 0.7, size=2000)
    iid = partition_indices(targets, 4, "iid", seed=1)
    _assert_partition(iid, 2000)
    with pytest.raises(ValueError, match="bin_edges"):
        partition_indices(targets, 4, "dirichlet")
    skewed = partition_indices(
        targets, 4, "dirichlet", alpha=0.1, seed=1, bin_edges=CENSUS_TARGET_BIN_EDGES
    )
    _assert_partition(skewed, 2000)
    bands = np.digitize(targets, CENSUS_TARGET_BIN_EDGES)
    mean_band = [bands[p].mean() for p in skewed]
    assert max(mean_band) - min(mean_band) > 0.5  # income bands differ between participants


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_partitions": 0}, ValueError, "num_partitions"),
        ({"num_partitions": 11}, ValueError, r"\[1, n=10\]"),
        ({"num_partitions": 2.0}, TypeError, "int"),
        ({"num_partitions": 2, "partitioning": "shards"}, ValueError, "partitioning"),
        ({"num_partitions": 2, "partitioning": "dirichlet", "alpha": 0.0}, ValueError, "alpha"),
        (
            {"num_partitions": 2, "partitioning": "dirichlet", "min_partition_size": 6},
            ValueError,
            "min_partition_size",
        ),
    ],
)
def test_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        partition_indices(np.arange(10) % 2, **kwargs)
