"""L2 sensitivities against brute force over extreme pairs and a constrained local optimiser.

The released vector per record is φ(h, y) = (upper([h;1][h;1]ᵀ) incl. diagonal, cross), ||h||_2 <= 1,
cross = (e_y - 1/K)[h;1]ᵀ (classification) or y[h;1] (regression, |y| <= 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from flwr_ppcdl.privacy import clip_l2
from flwr_ppcdl.privacy.sensitivity import (
    ROUND_UP,
    sensitivity_regression_l2,
    sensitivity_softmax_l2,
)

DIMS = range(1, 9)
# the local optimiser is the slow brute force: small dimensions in the developer loop, the rest in CI's slow pass
OPTIMISER_DIMS = [d if d <= 3 else pytest.param(d, marks=pytest.mark.slow) for d in DIMS]
CLASSES = (2, 3, 10)
STARTS = 12


def phi_classification(h: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """φ for each row of h (n, d) with integer labels (n,): (n, D(D+1)/2 + K·D)."""
    ht = np.hstack([h, np.ones((h.shape[0], 1))])
    iu = np.triu_indices(ht.shape[1])
    gram = np.einsum("ni,nj->nij", ht, ht)[:, iu[0], iu[1]]
    u = np.eye(k)[labels] - 1.0 / k
    cross = np.einsum("nk,nj->nkj", u, ht).reshape(h.shape[0], -1)
    return np.hstack([gram, cross])


def phi_regression(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    ht = np.hstack([h, np.ones((h.shape[0], 1))])
    iu = np.triu_indices(ht.shape[1])
    gram = np.einsum("ni,nj->nij", ht, ht)[:, iu[0], iu[1]]
    return np.hstack([gram, y[:, None] * ht])


def exact_value(bound: float) -> float:
    """The closed form without the ROUND_UP safety factor."""
    return bound / ROUND_UP


def max_pair_distance(a: np.ndarray, b: np.ndarray, recheck: int = 64) -> float:
    """max_{i,j} ||a_i - b_j||_2: Gram-trick screen, then the best pairs recomputed directly."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    flat = np.argsort(sq, axis=None)[-recheck:]
    i, j = np.unravel_index(flat, sq.shape)
    return float(np.sqrt(((a[i] - b[j]) ** 2).sum(1)).max())


def candidate_features(d: int, rng: np.random.Generator) -> np.ndarray:
    """Extreme and random records of the unit ball: ±e_j, sign vectors/√d, the 2-D maximiser
    family at random angles, random unit vectors, random interior points, zero."""
    basis = np.vstack([np.eye(d), -np.eye(d)])
    signs = rng.choice([-1.0, 1.0], size=(min(2**d, 64), d)) / math.sqrt(d)
    unit = rng.normal(size=(250, d))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    inner = unit[:100] * rng.uniform(0, 1, size=(100, 1)) ** (1 / d)
    rows = [basis, signs, unit, inner, np.zeros((1, d))]
    if d >= 2:
        angles = rng.uniform(0, 2 * math.pi, size=60)
        pair = np.zeros((60, d))
        pair[:, 0], pair[:, 1] = np.cos(angles), np.sin(angles)
        rows.append(pair)
    return clip_l2(np.vstack(rows))


def _project(h: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(h)
    return h / norm if norm > 1.0 else h


def optimise_pair(
    d: int, objective, extra: int = 0, starts: int = STARTS, seed: int = 0
) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    """Maximise objective(h, h', extras) by SLSQP with ||h||², ||h'||² <= 1 and extras in [-1, 1].

    The final point is projected onto the feasible set before it is scored, so a slightly
    infeasible optimiser answer cannot overstate the maximum.
    """
    rng = np.random.default_rng(seed)
    n = 2 * d + extra

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return x[:d], x[d : 2 * d], x[2 * d :]

    constraints = [
        {"type": "ineq", "fun": lambda x: 1.0 - x[:d] @ x[:d]},
        {"type": "ineq", "fun": lambda x: 1.0 - x[d : 2 * d] @ x[d : 2 * d]},
    ]
    bounds = [(-1.0, 1.0)] * n
    best, best_x = -math.inf, np.zeros(n)
    for _ in range(starts):
        x0 = rng.uniform(-1, 1, size=n)
        x0[:d], x0[d : 2 * d] = _project(x0[:d]), _project(x0[d : 2 * d])
        result = minimize(
            lambda x: -objective(*split(x)),
            x0,
            method="SLSQP",
            bounds=bounds,
            constraints=constraints,
            options={"ftol": 1e-15, "maxiter": 500},
        )
        h, hp, e = split(result.x)
        h, hp, e = _project(h), _project(hp), np.clip(e, -1.0, 1.0)
        value = objective(h, hp, e)
        if value > best:
            best, best_x = value, np.concatenate([h, hp, e])
    return math.sqrt(best), best_x


def classification_pair_sq(k: int, y: int, yp: int):  # type: ignore[no-untyped-def]
    def f(h: np.ndarray, hp: np.ndarray, _: np.ndarray) -> float:
        v = phi_classification(np.vstack([h, hp]), np.array([y, yp]), k)
        return float(((v[0] - v[1]) ** 2).sum())

    return f


def regression_pair_sq(h: np.ndarray, hp: np.ndarray, ys: np.ndarray) -> float:
    v = phi_regression(np.vstack([h, hp]), ys)
    return float(((v[0] - v[1]) ** 2).sum())


# --------------------------------------------------------------------------- closed forms


def test_closed_forms() -> None:
    for k in CLASSES:
        general = math.sqrt(8.5 - 3 / k + 1 / (2 * k * k))
        assert exact_value(sensitivity_softmax_l2(5, k)) == pytest.approx(general, rel=1e-15)
        assert exact_value(sensitivity_softmax_l2(1, k)) == pytest.approx(
            math.sqrt(8 - 4 / k), rel=1e-15
        )
        assert exact_value(sensitivity_softmax_l2(3, k, "add-remove-one")) == pytest.approx(
            math.sqrt(5 - 2 / k), rel=1e-15
        )
    assert sensitivity_softmax_l2(49, 10) == pytest.approx(2.8644371, abs=1e-7)  # feasibility doc
    assert exact_value(sensitivity_regression_l2(4)) == pytest.approx(math.sqrt(10), rel=1e-15)
    assert exact_value(sensitivity_regression_l2(1)) == pytest.approx(math.sqrt(8), rel=1e-15)
    assert exact_value(sensitivity_regression_l2(1, "add-remove-one")) == pytest.approx(
        math.sqrt(5), rel=1e-15
    )
    # Rounded up, never down; independent of d for d >= 2.
    assert sensitivity_softmax_l2(2, 10) > math.sqrt(8.5 - 0.3 + 0.005)
    assert sensitivity_softmax_l2(2, 10) == sensitivity_softmax_l2(128, 10)


@pytest.mark.parametrize("k", CLASSES)
def test_explicit_maximisers_attain_the_bounds(k: int) -> None:
    c = 1 - 1 / k
    a = 0.5 * math.asin(-c / 2)
    for d in (2, 5):
        h = np.zeros((2, d))
        h[0, :2] = math.cos(a), math.sin(a)
        h[1, :2] = math.sin(a), math.cos(a)
        v = phi_classification(h, np.array([0, 1]), k)
        assert np.linalg.norm(v[0] - v[1]) == pytest.approx(
            exact_value(sensitivity_softmax_l2(d, k)), rel=1e-13
        )
    # d = 1: h = 1 vs h' = -1, different labels (and also equal labels) reach sqrt(8 - 4/K)
    for labels in ([0, 1], [0, 0]):
        v = phi_classification(np.array([[1.0], [-1.0]]), np.array(labels), k)
        assert np.linalg.norm(v[0] - v[1]) == pytest.approx(
            exact_value(sensitivity_softmax_l2(1, k)), rel=1e-13
        )
    # add/remove-one: one record h = e_1
    v = phi_classification(np.eye(4)[:1], np.array([0]), k)
    assert np.linalg.norm(v[0]) == pytest.approx(
        exact_value(sensitivity_softmax_l2(4, k, "add-remove-one")), rel=1e-13
    )


def test_regression_explicit_maximisers() -> None:
    v = phi_regression(np.eye(3)[:2], np.array([1.0, -1.0]))  # e_1, y=1 vs e_2, y=-1
    assert np.linalg.norm(v[0] - v[1]) == pytest.approx(
        exact_value(sensitivity_regression_l2(3)), rel=1e-13
    )
    v = phi_regression(np.array([[1.0], [-1.0]]), np.array([1.0, 1.0]))
    assert np.linalg.norm(v[0] - v[1]) == pytest.approx(
        exact_value(sensitivity_regression_l2(1)), rel=1e-13
    )
    v = phi_regression(np.array([[0.0, 1.0]]), np.array([-1.0]))
    assert np.linalg.norm(v[0]) == pytest.approx(
        exact_value(sensitivity_regression_l2(2, "add-remove-one")), rel=1e-13
    )


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("d", DIMS)
def test_no_classification_pair_exceeds_the_bound(d: int, k: int) -> None:
    rng = np.random.default_rng(100 * d + k)
    h = candidate_features(d, rng)
    n = h.shape[0]
    # By class symmetry, label 0 against labels {0, 1} covers every label pair.
    a = phi_classification(h, np.zeros(n, dtype=int), k)
    b = phi_classification(np.vstack([h, h]), np.r_[np.zeros(n, int), np.ones(n, int)], k)
    worst = max_pair_distance(a, b)
    bound = sensitivity_softmax_l2(d, k)
    assert worst <= bound
    assert worst >= 0.97 * exact_value(bound)  # the candidate set contains near-extreme pairs
    per_record = float(np.linalg.norm(a, axis=1).max())
    assert per_record <= sensitivity_softmax_l2(d, k, "add-remove-one")
    assert per_record == pytest.approx(
        exact_value(sensitivity_softmax_l2(d, k, "add-remove-one")), rel=1e-12
    )  # attained by ±e_j


@pytest.mark.parametrize("d", DIMS)
def test_no_regression_pair_exceeds_the_bound(d: int) -> None:
    rng = np.random.default_rng(7 * d)
    h = candidate_features(d, rng)
    n = h.shape[0]
    targets = np.repeat([-1.0, -0.5, 0.0, 0.5, 1.0], n)
    v = phi_regression(np.tile(h, (5, 1)), targets)
    worst = max_pair_distance(v, v)
    bound = sensitivity_regression_l2(d)
    assert worst <= bound
    assert worst >= 0.999 * exact_value(bound)  # ±e_j with y = ±1 are in the set
    per_record = float(np.linalg.norm(v, axis=1).max())
    assert per_record <= sensitivity_regression_l2(d, "add-remove-one")
    assert per_record == pytest.approx(
        exact_value(sensitivity_regression_l2(d, "add-remove-one")), rel=1e-12
    )


# --------------------------------------------------------------------------- local optimiser


@pytest.mark.parametrize("k", (2, 10))
@pytest.mark.parametrize("d", OPTIMISER_DIMS)
def test_optimiser_reaches_but_never_exceeds_the_classification_bound(d: int, k: int) -> None:
    bound = sensitivity_softmax_l2(d, k)
    found = max(
        optimise_pair(d, classification_pair_sq(k, 0, y_other), seed=d)[0] for y_other in (0, 1)
    )
    assert found <= bound
    assert found == pytest.approx(exact_value(bound), abs=1e-6)  # tight, d = 1 included


@pytest.mark.parametrize("d", OPTIMISER_DIMS)
def test_optimiser_reaches_but_never_exceeds_the_regression_bound(d: int) -> None:
    bound = sensitivity_regression_l2(d)
    found, x = optimise_pair(d, regression_pair_sq, extra=2, seed=d)
    assert found <= bound
    assert found == pytest.approx(exact_value(bound), abs=1e-6)
    if d >= 2:  # the maximiser: unit vectors, orthogonal, opposite targets
        h, hp, ys = x[:d], x[d : 2 * d], x[2 * d :]
        assert np.linalg.norm(h) == pytest.approx(1, abs=1e-4)
        assert h @ hp == pytest.approx(0, abs=1e-3)
        assert ys[0] * ys[1] == pytest.approx(-1, abs=1e-4)


@pytest.mark.parametrize("k", (3, 10))
def test_optimiser_maximiser_matches_the_derivation(k: int) -> None:
    """At the optimum: ||h|| = ||h'|| = 1 and h·h' = -c/2, c = 1 - 1/K, labels different."""
    d = 4
    _, x = optimise_pair(d, classification_pair_sq(k, 0, 1), seed=3)
    h, hp = x[:d], x[d : 2 * d]
    assert np.linalg.norm(h) == pytest.approx(1, abs=1e-5)
    assert np.linalg.norm(hp) == pytest.approx(1, abs=1e-5)
    assert h @ hp == pytest.approx(-(1 - 1 / k) / 2, abs=1e-3)


@pytest.mark.parametrize("k", (2, 10))
@pytest.mark.parametrize("d", (1, 3, 8))
def test_add_remove_one_record_maximum_is_attained(d: int, k: int) -> None:
    def one_record_cls(h: np.ndarray, _hp: np.ndarray, _e: np.ndarray) -> float:
        return float((phi_classification(h[None, :], np.array([0]), k) ** 2).sum())

    def one_record_reg(h: np.ndarray, _hp: np.ndarray, e: np.ndarray) -> float:
        return float((phi_regression(h[None, :], e[:1]) ** 2).sum())

    found = optimise_pair(d, one_record_cls, seed=d)[0]
    bound = sensitivity_softmax_l2(d, k, "add-remove-one")
    assert found <= bound
    assert found == pytest.approx(exact_value(bound), abs=1e-6)
    found = optimise_pair(d, one_record_reg, extra=1, seed=d)[0]
    bound = sensitivity_regression_l2(d, "add-remove-one")
    assert found <= bound
    assert found == pytest.approx(exact_value(bound), abs=1e-6)


# --------------------------------------------------------------------------- other properties

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
def test_l2_bounds_hold_for_random_bounded_records(case: tuple) -> None:
    xa, xb, ya, yb, ta, tb = case
    d = len(xa)
    h = clip_l2(np.array([xa, xb]))
    vc = phi_classification(h, np.array([ya, yb]), 10)
    assert np.linalg.norm(vc[0] - vc[1]) <= sensitivity_softmax_l2(d, 10)
    assert np.linalg.norm(vc[0]) <= sensitivity_softmax_l2(d, 10, "add-remove-one")
    vr = phi_regression(h, np.clip([ta, tb], -1, 1))
    assert np.linalg.norm(vr[0] - vr[1]) <= sensitivity_regression_l2(d)
    assert np.linalg.norm(vr[1]) <= sensitivity_regression_l2(d, "add-remove-one")


def test_add_remove_is_not_half_of_replace_one() -> None:
    """Unlike L1, the L2 pair bound is well below twice the per-record bound (2·2.19 = 4.38)."""
    replace = sensitivity_softmax_l2(16, 10)
    per_record = sensitivity_softmax_l2(16, 10, "add-remove-one")
    assert replace < 0.66 * 2 * per_record
    assert replace > per_record


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_dimension_is_rejected(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match=str(bad)):
        sensitivity_softmax_l2(bad, 3)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match=str(bad)):
        sensitivity_regression_l2(bad)  # type: ignore[arg-type]


def test_bad_classes_and_relation_are_rejected() -> None:
    with pytest.raises(ValueError, match="1"):
        sensitivity_softmax_l2(3, 1)
    with pytest.raises(ValueError, match="'swap-one'"):
        sensitivity_softmax_l2(3, 10, "swap-one")
    with pytest.raises(ValueError, match="'swap-one'"):
        sensitivity_regression_l2(3, "swap-one")
