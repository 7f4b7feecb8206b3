"""Corruption touches exactly the chosen participants and exactly the intended field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_ppcdl.data import (
    CENSUS_TARGET_RANGE,
    choose_unreliable,
    corrupt,
    corrupt_if_unreliable,
    derangement,
    load_sklearn_digits,
    partition_indices,
)


def _data(n: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 16, size=(n, 64)), rng.integers(0, 10, size=n)


def test_choose_unreliable():
    chosen = choose_unreliable(10, fraction=0.3, seed=4)
    assert len(chosen) == 3 and chosen == sorted(set(chosen)) and all(0 <= i < 10 for i in chosen)
    assert chosen == choose_unreliable(10, fraction=0.3, seed=4)
    assert len(choose_unreliable(10, fraction=0.25)) == 3  # round half up: 2.5 -> 3
    assert choose_unreliable(10, fraction=0.0) == []
    assert choose_unreliable(5, ids=[4, 0]) == [0, 4]
    for kwargs, match in [
        ({}, "exactly one"),
        ({"fraction": 0.1, "ids": [1]}, "exactly one"),
        ({"fraction": 1.5}, "fraction"),
        ({"ids": [5]}, "out of range"),
        ({"ids": [1, 1]}, "duplicates"),
    ]:
        with pytest.raises(ValueError, match=match):
            choose_unreliable(5, **kwargs)


@settings(max_examples=50, deadline=None)
@given(num_classes=st.integers(2, 30), seed=st.integers(0, 2**32 - 1))
def test_derangement_is_a_permutation_without_fixed_points(num_classes, seed):
    perm = derangement(num_classes, seed)
    assert sorted(perm.tolist()) == list(range(num_classes))
    assert np.all(perm != np.arange(num_classes))
    np.testing.assert_array_equal(perm, derangement(num_classes, seed))


def test_flipped_labels_change_every_label_and_nothing_else():
    x, y = _data()
    x0, y0 = x.copy(), y.copy()
    out = corrupt(x, y, "flipped-labels", num_classes=10, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(x, x0)  # inputs untouched
    np.testing.assert_array_equal(y, y0)
    assert out.field == "targets" and out.changed.all()
    np.testing.assert_array_equal(out.targets, derangement(10)[y])
    np.testing.assert_array_equal(out.features, x)
    assert out.features is not x
    # the same fixed map for every participant, whatever its rng
    other = corrupt(x, y, "flipped-labels", num_classes=10, rng=np.random.default_rng(99))
    np.testing.assert_array_equal(other.targets, out.targets)


def test_random_labels_are_uniform_and_features_untouched():
    x, y = _data(n=20_000)
    out = corrupt(x, y, "random-labels", num_classes=10, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(out.features, x)
    counts = np.bincount(out.targets, minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200
    np.testing.assert_array_equal(out.changed, out.targets != y)
    assert 0.87 < out.changed.mean() < 0.93  # 1/10 of random labels equal the true one


def test_feature_noise_changes_only_features():
    x, y = _data(n=2000)
    x0 = x.copy()
    out = corrupt(x, y, "feature-noise", noise_std=2.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(out.targets, y)
    assert out.field == "features" and out.changed.all()
    assert np.std(out.features - x) == pytest.approx(2.0, rel=0.02)
    clipped = corrupt(
        x, y, "feature-noise", noise_std=50.0, feature_range=(0, 16), rng=np.random.default_rng(3)
    )
    assert clipped.features.min() >= 0 and clipped.features.max() <= 16
    with pytest.raises(ValueError, match="noise_std"):
        corrupt(x, y, "feature-noise", rng=np.random.default_rng(3))


def test_random_targets_stay_in_public_range():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(size=(3000, 3)), rng.normal(6.6, 0.7, size=3000)
    out = corrupt(x, y, "random-targets", target_range=CENSUS_TARGET_RANGE, rng=rng)
    low, high = CENSUS_TARGET_RANGE
    assert out.targets.min() >= low and out.targets.max() <= high
    assert out.targets.max() - out.targets.min() > 0.95 * (high - low)
    np.testing.assert_array_equal(out.features, x)
    with pytest.raises(ValueError, match="target_range"):
        corrupt(x, y, "random-targets", rng=rng)


def test_bad_kinds_and_labels():
    x, y = _data(n=10)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        corrupt(x, y, "shuffle", rng=rng)
    with pytest.raises(ValueError, match="num_classes"):
        corrupt(x, y, "flipped-labels", rng=rng)
    with pytest.raises(ValueError, match="labels must be in"):
        corrupt(x, y, "random-labels", num_classes=3, rng=rng)
    with pytest.raises(ValueError, match="permutation"):
        corrupt(x, y, "flipped-labels", num_classes=10, permutation=np.zeros(10, int), rng=rng)


@pytest.mark.parametrize("kind", ["flipped-labels", "random-labels", "feature-noise"])
def test_exactly_the_chosen_participants_are_corrupted(kind):
    data = load_sklearn_digits()
    parts = partition_indices(data.targets, 10, "iid", seed=0)
    unreliable = choose_unreliable(10, fraction=0.3, seed=1)
    options = {"num_classes": 10, "noise_std": 1.0}
    for pid, part in enumerate(parts):
        x, y = data.features[part], data.targets[part]
        out = corrupt_if_unreliable(pid, unreliable, x, y, kind, seed=2, **options)
        if pid in unreliable:
            assert out.changed.mean() > 0.8
            same = out.targets if out.field == "features" else out.features
            original = y if out.field == "features" else x
            np.testing.assert_array_equal(same, original)
        else:
            assert out.field == "none" and not out.changed.any()
            np.testing.assert_array_equal(out.features, x)
            np.testing.assert_array_equal(out.targets, y)
    # each participant's corruption depends only on (seed, its id)
    x, y = data.features[parts[unreliable[0]]], data.targets[parts[unreliable[0]]]
    a = corrupt_if_unreliable(unreliable[0], unreliable, x, y, kind, seed=2, **options)
    b = corrupt_if_unreliable(unreliable[0], [unreliable[0]], x, y, kind, seed=2, **options)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.targets, b.targets)
