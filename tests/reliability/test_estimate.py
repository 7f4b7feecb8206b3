"""Properties of the pure reliability core (no Flower)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_ppcdl.reliability import (
    ReliabilityAggregator,
    ReliabilityOptions,
    ScoredView,
    Upload,
    coordinate_median,
    estimate_reliability,
    reliability_weights,
    weighted_sum,
)

SHAPES = [(20, 8), (8,)]


def synthetic(k: int = 10, n_bad: int = 3, seed: int = 0, noise: float = 0.5):
    """Honest deltas = common signal + noise; random-label deltas = noise only (no signal)."""
    rng = np.random.default_rng(seed)
    signal = [rng.normal(size=s) for s in SHAPES]
    bad = np.zeros(k, dtype=bool)
    bad[rng.choice(k, n_bad, replace=False)] = True
    ups = []
    for i in range(k):
        ups.append([(0.0 if bad[i] else 1.0) * s + noise * rng.normal(size=s.shape) for s in signal])
    counts = rng.integers(50, 150, size=k)
    return ups, counts, bad


def test_identical_uploads_give_exact_fedavg_weights() -> None:
    ups = [[np.ones((3, 2)), np.arange(4.0)]] * 5
    counts = np.array([10, 20, 30, 25, 15])
    w = reliability_weights(ups, counts)
    np.testing.assert_allclose(w, counts / counts.sum(), rtol=0, atol=1e-12)


def test_iid_equal_noise_keeps_fedavg_weights_up_to_false_alarms() -> None:
    """Equal-quality uploads: everyone not flagged keeps FedAvg's weight (up to the renormalisation), and
    across twenty draws at most twice the stated 2 % of the participants are flagged."""
    flagged = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        signal = rng.normal(size=500)
        ups = [[signal + 0.3 * rng.normal(size=500)] for _ in range(10)]
        res = estimate_reliability(ups, np.full(10, 100), seed=seed)
        flagged.extend(res.evidence > 0)
        inside = res.evidence <= -1.0  # one log-likelihood unit inside the threshold: FedAvg's weight
        np.testing.assert_allclose(res.weights[inside] / res.weights.max(), 1.0, atol=0.05)
    assert float(np.mean(flagged)) <= 0.04


@pytest.mark.parametrize("n_bad", [1, 3])
def test_random_label_participants_get_lower_weight(n_bad: int) -> None:
    ups, counts, bad = synthetic(n_bad=n_bad)
    w = reliability_weights(ups, counts)
    fedavg = counts / counts.sum()
    assert w[bad].sum() <= 0.5 * fedavg[bad].sum()
    assert w[bad].max() < w[~bad].min()


def test_permutation_invariance() -> None:
    ups, counts, _ = synthetic(seed=3)
    w = reliability_weights(ups, counts)
    perm = np.random.default_rng(0).permutation(len(ups))
    wp = reliability_weights([ups[i] for i in perm], counts[perm])
    np.testing.assert_allclose(wp, w[perm], atol=1e-9)


@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e4])
def test_invariance_to_common_rescaling(scale: float) -> None:
    ups, counts, _ = synthetic(seed=4)
    w = reliability_weights(ups, counts)
    ws = reliability_weights([[scale * a for a in u] for u in ups], counts)
    np.testing.assert_allclose(ws, w, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 8),
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    spread=st.floats(1e-6, 1e6),
    method=st.sampled_from(["calibrated", "fedavg", "uniform"]),
)
def test_weights_are_a_distribution(k, shapes, seed, spread, method) -> None:
    rng = np.random.default_rng(seed)
    ups = [[spread * rng.standard_cauchy(size=s) for s in shapes] for _ in range(k)]
    counts = rng.integers(1, 10_000, size=k)
    w = reliability_weights(ups, counts, method=method)
    assert w.shape == (k,)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-9)


def test_nan_and_inf_uploads_get_zero() -> None:
    ups, counts, _ = synthetic(seed=5)
    ups[2] = [a.copy() for a in ups[2]]
    ups[2][0][0, 0] = np.nan
    ups[4] = [a.copy() for a in ups[4]]
    ups[4][1][3] = np.inf
    res = estimate_reliability(ups, counts)
    assert res.weights[2] == 0 and res.weights[4] == 0
    assert "non-finite" in res.excluded[2]
    assert res.weights.sum() == pytest.approx(1.0)


def test_absurd_norm_wrong_shape_and_dtype_are_excluded() -> None:
    ups, counts, _ = synthetic(seed=6)
    ups[0] = [1e30 * np.ones_like(a) for a in ups[0]]
    ups[1] = [np.zeros((3, 3)), ups[1][1]]
    ups[3] = [np.array(["a"] * 160).reshape(20, 8), ups[3][1]]
    ups[5] = ups[5][:1]
    res = estimate_reliability(ups, counts)
    for i in (0, 1, 3, 5):
        assert res.weights[i] == 0 and i in res.excluded
    assert res.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("bad_count", [0, -5, float("nan"), float("inf"), "many", None])
def test_zero_negative_or_junk_example_counts_are_excluded(bad_count) -> None:
    ups, counts, _ = synthetic(seed=7)
    counts = list(counts)
    counts[3] = bad_count
    res = estimate_reliability(ups, counts)
    assert res.weights[3] == 0 and 3 in res.excluded


def test_single_participant_and_all_invalid() -> None:
    w = reliability_weights([[np.ones(3)]], [5])
    np.testing.assert_allclose(w, [1.0])
    w = reliability_weights([[np.full(3, np.nan)], [np.ones(3)]], [5, 0])
    np.testing.assert_array_equal(w, [0.0, 0.0])


@pytest.mark.parametrize(
    "option", [{"method": "krum"}, {"false_alarm_rate": 0.6}, {"count_cap": 0.5}, {"max_share": 0.0},
               {"memory_rate": 1.0}, {"max_coordinates": 0}, {"method": "server_data", "memory_rate": -1.0}]
)
def test_bad_options_raise_value_error_naming_the_value(option) -> None:
    with pytest.raises(ValueError, match=str(list(option.values())[-1])):
        reliability_weights([[np.ones(2)], [np.ones(2)]], [1, 1], **option)


def test_an_option_the_method_ignores_is_refused() -> None:
    with pytest.raises(ValueError, match="not used by method='calibrated'"):
        ReliabilityOptions(server_loss_fn=sum)
    with pytest.raises(ValueError, match="false_alarm_rate=0.01 is not used by method='fedavg'"):
        ReliabilityOptions(method="fedavg", false_alarm_rate=0.01)
    assert ReliabilityOptions(false_alarm_rate=0.01).with_overrides(method="fedavg").false_alarm_rate == 0.02


def test_there_are_at_most_fifteen_options() -> None:
    assert len(ReliabilityOptions().summary()) <= 15


def test_memory_carries_suspicion_not_credit() -> None:
    """The log-odds of a round are its own evidence plus ``memory_rate`` times the node's carried
    suspicion (positive log-odds); carried credit (negative log-odds) is ignored."""
    ups, counts, _ = synthetic(n_bad=0, seed=11)
    alone = estimate_reliability(ups, counts, seed=0, memory_rate=None).evidence
    suspect = estimate_reliability(ups, counts, seed=0, memory_rate=0.5, prior_evidence=np.full(10, 4.0)).evidence
    credit = estimate_reliability(ups, counts, seed=0, memory_rate=0.5, prior_evidence=np.full(10, -40.0)).evidence
    np.testing.assert_allclose(suspect, alone + 2.0)
    np.testing.assert_allclose(credit, alone)
    new_nodes = estimate_reliability(ups, counts, seed=0, memory_rate=0.5, prior_evidence=np.full(10, np.nan)).evidence
    np.testing.assert_allclose(new_nodes, alone)  # NaN: a node never seen carries nothing
    with pytest.raises(ValueError, match=r"prior_evidence has shape \(9,\), expected \(10,\)"):
        estimate_reliability(ups, counts, memory_rate=0.5, prior_evidence=np.zeros(9))


def test_the_aggregator_remembers_a_node_that_keeps_failing() -> None:
    """A node sign-flipped in every round stays flagged and its log-odds grow towards ``l / (1 - rate)``."""
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0))
    for rnd in range(1, 5):
        ups, counts, _ = synthetic(n_bad=0, seed=20 + rnd)
        ups[0] = [-3.0 * a for a in ups[0]]
        agg.aggregate(rnd, [Upload(i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=True))])
    assert agg.memory is not None
    logs = [rep.evidence[0] for rep in agg.history]
    assert all(v > 0 for v in logs) and logs[-1] > logs[0]
    assert all(rep.weights[0] < 0.01 * rep.fedavg_share[0] for rep in agg.history)


def test_weighted_sum_skips_zero_weight_uploads() -> None:
    out = weighted_sum([[np.ones(2)], [np.full(2, np.nan)]], [1.0, 0.0])
    np.testing.assert_array_equal(out[0], np.ones(2))


def test_coordinate_median_is_flowers_fedmedian_arithmetic() -> None:
    rng = np.random.default_rng(12)
    ups = [[rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5)] for _ in range(7)]
    out = coordinate_median(ups, [0, 2, 3, 5, 6])
    for layer in range(2):
        np.testing.assert_allclose(out[layer], np.median(np.stack([ups[i][layer] for i in (0, 2, 3, 5, 6)]), axis=0), rtol=1e-6)
    assert out[0].dtype == np.float32


def _honest_flagged(n_bad: int, draws: int = 150, k: int = 10) -> float:
    """Share of honest participants flagged when ``n_bad`` far-away uploads (incompatible) stand beside them."""
    rng = np.random.default_rng(0)
    flagged: list[bool] = []
    for d in range(draws):
        head, body = rng.standard_normal((10, 40)), rng.standard_normal(400)
        templates = head - head.mean(axis=0)
        ups = [[body + 0.1 * rng.standard_normal(400), head + 0.1 * (templates + rng.standard_normal((10, 40)))]
               if i < k - n_bad else [body + 2.0 * rng.standard_normal(400), head + 2.0 * rng.standard_normal((10, 40))]
               for i in range(k)]
        result = estimate_reliability(ups, [100] * k, reference=[body, head], seed=d)
        flagged.extend(result.evidence[: k - n_bad] > 0)
    return float(np.mean(flagged))


def test_incompatible_uploads_do_not_raise_the_honest_false_alarm_rate() -> None:
    """The nulls are fitted to the compatible voices, so the threshold is simulated for their number: with
    four of ten far away, the six honest are flagged as often as ten honest alone (calibrated at ten, they
    were flagged at 3.2 % against 1.4 %)."""
    alone, beside = _honest_flagged(0), _honest_flagged(4)
    assert alone <= 0.04 and beside <= alone + 0.01, (alone, beside)


def test_a_view_layer_that_is_no_evidence_still_bounds_influence() -> None:
    """A release view's second layer (as the Gram moments are): participant 3 scaled 10 % towards zero,
    participant 9 forged 50-fold. As evidence, both are flagged; as no evidence (``evidence=(True, False)``),
    neither is flagged, yet the energy still bounds both (the forged one below 0.1 %) and the honest keep
    equal shares."""
    from .synthetic import C, P, class_rows

    rng = np.random.default_rng(7)
    stack, noise = class_rows(rng, 10, np.full(10, 0.3))
    second = rng.normal(size=40)
    layer = [second * (0.9 if i == 3 else 50.0 if i == 9 else 1.0) + 0.01 * rng.normal(size=40) for i in range(10)]

    def views(evidence: bool | tuple[bool, ...]) -> list[ScoredView | None]:
        return [ScoredView([stack[i].reshape(C, P), layer[i]], [noise[i].reshape(C, P), np.full(40, 1e-4)],
                           evidence=evidence) for i in range(10)]

    scored = estimate_reliability(None, np.full(10, 100.0), seed=0, views=views(True))
    silent = estimate_reliability(None, np.full(10, 100.0), seed=0, views=views((True, False)))
    assert scored.evidence[3] > 0 and scored.evidence[9] > 0
    assert np.all(silent.evidence <= 0)
    assert silent.weights[9] < 1e-3 and silent.weights[3] < 0.5 * silent.weights[0]
    np.testing.assert_allclose(np.delete(silent.weights, [3, 9]), silent.weights[0], rtol=1e-3)
