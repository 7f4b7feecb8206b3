"""Every Δ against brute force over extreme records of the unit ℓ2 ball (plus the bias coordinate)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_ppcdl.privacy import (
    FunctionalMechanism,
    clip_l2,
    cross_classification_record_l1,
    cross_regression_record_l1,
    gram_record_l1,
    l1_norm_bound,
    sensitivity_cross_classification,
    sensitivity_cross_regression,
    sensitivity_gram,
    sensitivity_regression,
    sensitivity_softmax,
    squared_l2_norm_bound,
)


def extreme_features(d: int) -> np.ndarray:
    """Extreme points of the unit ℓ2 ball: sign vectors / sqrt(d), ±e_j, and zero."""
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d))) / np.sqrt(d)
    basis = np.vstack([np.eye(d), -np.eye(d)])
    return np.vstack([signs, basis, np.zeros((1, d))])


def gram_contribution(h: np.ndarray) -> np.ndarray:
    """Upper triangle (with diagonal) of [h;1][h;1]^T for each row of h."""
    ht = np.hstack([h, np.ones((h.shape[0], 1))])
    iu = np.triu_indices(ht.shape[1])
    return np.einsum("ni,nj->nij", ht, ht)[:, iu[0], iu[1]]


def cross_classification_contribution(h: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(e_y - 1/K) [h;1]^T, flattened, for each record."""
    ht = np.hstack([h, np.ones((h.shape[0], 1))])
    t = np.eye(k)[labels] - 1.0 / k
    return np.einsum("nk,nj->nkj", t, ht).reshape(h.shape[0], -1)


def cross_regression_contribution(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y [h;1] for each record."""
    ht = np.hstack([h, np.ones((h.shape[0], 1))])
    return y[:, None] * ht


def max_pair_l1(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> float:
    """max_{i,j} ||a_i - b_j||_1 (chunked to bound memory)."""
    best = 0.0
    for start in range(0, a.shape[0], chunk):
        block = a[start : start + chunk]
        diff = np.abs(block[:, None, :] - b[None, :, :]).sum(axis=2)
        best = max(best, float(diff.max()))
    return best


DIMS = range(1, 9)
CLASSES = (2, 3, 10)
REL = 1e-9


def _classification_sets(d: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Record sets A (label 0) and B (labels 0 and 1): by class symmetry these cover all label pairs."""
    h = extreme_features(d)
    n = h.shape[0]
    hb = np.vstack([h, h])
    lab_a = np.zeros(n, dtype=int)
    lab_b = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    return (
        gram_contribution(h),
        cross_classification_contribution(h, lab_a, k),
        gram_contribution(hb),
        cross_classification_contribution(hb, lab_b, k),
    )


def _regression_sets(d: int) -> tuple[np.ndarray, np.ndarray]:
    h = extreme_features(d)
    n = h.shape[0]
    hh = np.vstack([h, h, h])
    y = np.repeat([-1.0, 0.0, 1.0], n)
    return gram_contribution(hh), cross_regression_contribution(hh, y)


def test_norm_bounds_match_their_extreme_records() -> None:
    for d in DIMS:
        ht = np.hstack([extreme_features(d), np.ones((2**d + 2 * d + 1, 1))])
        assert np.abs(ht).sum(axis=1).max() == pytest.approx(l1_norm_bound(d), rel=1e-12)
        assert (ht**2).sum(axis=1).max() == pytest.approx(squared_l2_norm_bound(d), rel=1e-12)


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("d", DIMS)
def test_classification_delta_bounds_every_neighbouring_pair(d: int, k: int) -> None:
    ga, ca, gb, cb = _classification_sets(d, k)
    total = max_pair_l1(np.hstack([ga, ca]), np.hstack([gb, cb]))
    gram = max_pair_l1(ga, gb)
    cross = max_pair_l1(ca, cb)
    assert total <= sensitivity_softmax(d, k)
    assert gram <= sensitivity_gram(d)
    assert cross <= sensitivity_cross_classification(d, k)
    # Not vacuous: the reference finds the worst replace-one pair at 0.5-0.73 of Δ (h h^T cannot
    # change sign, so the pair bound 2·max is loose for the Gram part).
    assert total >= 0.45 * sensitivity_softmax(d, k)
    if d >= 2:
        assert gram >= 0.5 * sensitivity_gram(d)
    if k == 2:  # binary: the cross-term bound is attained by (h, y=0) vs (h, y=1)
        assert cross == pytest.approx(sensitivity_cross_classification(d, k), rel=REL)
    else:  # the bias column limits the worst pair for K > 2
        assert cross >= 0.7 * sensitivity_cross_classification(d, k)


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("d", DIMS)
def test_per_record_bounds_are_attained(d: int, k: int) -> None:
    ga, ca, _, _ = _classification_sets(d, k)
    assert np.abs(ga).sum(axis=1).max() == pytest.approx(gram_record_l1(d), rel=REL)
    assert np.abs(ca).sum(axis=1).max() == pytest.approx(
        cross_classification_record_l1(d, k), rel=REL
    )
    per_record = np.abs(np.hstack([ga, ca])).sum(axis=1).max()
    # Replace-one: Δ = 2 · per-record max; add/remove-one: Δ = the per-record max, attained exactly.
    assert sensitivity_softmax(d, k) == pytest.approx(2 * per_record, rel=REL)
    assert sensitivity_softmax(d, k, "add-remove-one") == pytest.approx(per_record, rel=REL)
    assert sensitivity_softmax(d, k, "add-remove-one") >= per_record


@pytest.mark.parametrize("d", DIMS)
def test_regression_delta_bounds_every_neighbouring_pair(d: int) -> None:
    g, b = _regression_sets(d)
    total = max_pair_l1(np.hstack([g, b]), np.hstack([g, b]))
    assert total <= sensitivity_regression(d)
    assert max_pair_l1(g, g) <= sensitivity_gram(d)
    cross = max_pair_l1(b, b)
    assert cross == pytest.approx(sensitivity_cross_regression(d), rel=REL)  # tight: y=1 vs y=-1
    assert cross <= sensitivity_cross_regression(d)
    assert total >= 0.45 * sensitivity_regression(d)
    per_record = np.abs(np.hstack([g, b])).sum(axis=1).max()
    assert np.abs(b).sum(axis=1).max() == pytest.approx(cross_regression_record_l1(d), rel=REL)
    assert sensitivity_regression(d, "add-remove-one") == pytest.approx(per_record, rel=REL)
    assert sensitivity_regression(d, "add-remove-one") >= per_record


def test_reference_table_values() -> None:
    # functional-mechanism.md §3.2: ℓ2 bound, bias appended, d=16, K=10 -> Δ = 45.0
    assert sensitivity_softmax(16, 10) == pytest.approx(45.0, rel=1e-9)
    # §2.2 Gram column without bias is d + 1 + 2 sqrt(d); with bias s1 = sqrt(d)+1, s2 = 2.
    s1 = math.sqrt(5) + 1
    assert sensitivity_regression(5) == pytest.approx(2 * (s1 + (s1**2 + 2) / 2), rel=1e-12)
    # Δ is rounded *up*, never down.
    assert sensitivity_regression(5) > 2 * (s1 + (s1**2 + 2) / 2)


def test_mechanism_uses_the_sensitivity_functions() -> None:
    clf = FunctionalMechanism(task="classification", num_classes=10, epsilon=1.0)
    assert clf.sensitivity(16) == sensitivity_softmax(16, 10)
    half = FunctionalMechanism(
        task="classification", num_classes=10, epsilon=1.0, neighbouring="add-remove-one"
    )
    assert half.sensitivity(16) == pytest.approx(clf.sensitivity(16) / 2, rel=1e-15)
    reg = FunctionalMechanism(task="regression", epsilon=1.0)
    assert reg.sensitivity(3) == sensitivity_regression(3)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_dimension_is_rejected(bad: object) -> None:
    with pytest.raises(
        (TypeError, ValueError), match=repr(bad) if isinstance(bad, str) else str(bad)
    ):
        sensitivity_softmax(bad, 3)  # type: ignore[arg-type]


def test_bad_neighbouring_is_rejected() -> None:
    with pytest.raises(ValueError, match="'swap-one'"):
        sensitivity_regression(3, "swap-one")


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda d: st.tuples(
            st.lists(finite, min_size=d, max_size=d),
            st.lists(finite, min_size=d, max_size=d),
            st.integers(min_value=0, max_value=9),
            st.integers(min_value=0, max_value=9),
            st.floats(min_value=-5, max_value=5),
            st.floats(min_value=-5, max_value=5),
        )
    )
)
def test_delta_bounds_random_bounded_records(case: tuple) -> None:
    xa, xb, ya, yb, ta, tb = case
    d = len(xa)
    h = clip_l2(np.array([xa, xb]))
    labels = np.array([ya, yb])
    va = np.hstack([gram_contribution(h), cross_classification_contribution(h, labels, 10)])
    assert np.abs(va[0] - va[1]).sum() <= sensitivity_softmax(d, 10)
    assert np.abs(va[0]).sum() <= sensitivity_softmax(d, 10, "add-remove-one")
    y = np.clip([ta, tb], -1, 1)
    vr = np.hstack([gram_contribution(h), cross_regression_contribution(h, y)])
    assert np.abs(vr[0] - vr[1]).sum() <= sensitivity_regression(d)
