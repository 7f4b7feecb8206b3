"""The calibrated estimator (issue #13): FedAvg's weights for honest uploads, evidence for corrupted ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr_ppcdl.reliability import (
    EvidenceMemory,
    ReliabilityAggregator,
    ReliabilityOptions,
    Upload,
    estimate_reliability,
    reliability_weights,
)
from flwr_ppcdl.reliability.calibrated import round_evidence
from flwr_ppcdl.reliability.memory import accumulate_evidence
from flwr_ppcdl.reliability.noise_law import solution_noise_variance
from flwr_ppcdl.reliability.null import (
    _fit,
    normal_quantile,
    null_threshold,
    prediction_threshold,
    robust_null,
)
from flwr_ppcdl.reliability.statistics import loo_median, subset_loo_median

C, D = 10, 17  # a linear head: class rows x (features + bias)


def heads(seed: int, k: int = 10, noise: float = 0.3, spread: float = 0.3):
    """Honest heads: a common head + participant-specific (non-IID) deviation + noise; unequal counts."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(C, D))
    ups = [[truth + spread * rng.uniform(0.5, 1.5) * rng.normal(size=(C, D)) + noise * rng.normal(size=(C, D))] for _ in range(k)]
    counts = rng.integers(100, 5000, size=k).astype(float)
    return truth, ups, counts, rng


# ------------------------------------------------------------------------------------------ the null
@pytest.mark.parametrize("k", [5, 10, 30])
@pytest.mark.parametrize("two_sided", [False, True])
def test_calibrated_threshold_holds_the_false_alarm_rate_on_fresh_draws(k: int, two_sided: bool) -> None:
    alpha = 0.01
    values = np.random.default_rng(987 + k).standard_normal((40_000 // k * 4, k))
    loc, scale = _fit(values)
    z = (values - loc[:, None]) / scale[:, None]
    z = np.abs(z) if two_sided else z
    rate = float(np.mean(z > null_threshold(k, alpha, two_sided)))
    assert 0.6 * alpha <= rate <= 1.5 * alpha


def test_threshold_approaches_the_normal_quantile_for_many_participants() -> None:
    t = null_threshold(300, 0.01, False)
    assert normal_quantile(0.99) < t < 1.1 * normal_quantile(0.99)
    assert null_threshold(10, 0.01, False) > t  # a scale estimated from 10 values: heavier tails


@pytest.mark.parametrize("n", [4, 7, 10])
@pytest.mark.parametrize("two_sided", [False, True])
def test_prediction_threshold_holds_its_rate_for_a_new_value_against_an_honest_reference(n: int, two_sided: bool) -> None:
    """A value not among the n reference values, tested against their mean and sd (fresh draws, another seed)."""
    alpha = 0.03
    rng = np.random.default_rng(4242 + n)
    ref = rng.standard_normal((100_000, n))
    z = (rng.standard_normal(100_000) - ref.mean(axis=1)) / ref.std(axis=1, ddof=1)
    z = np.abs(z) if two_sided else z
    rate = float(np.mean(z > prediction_threshold(n, alpha, two_sided)))
    assert 0.85 * alpha <= rate <= 1.15 * alpha
    assert normal_quantile(1 - alpha / (2 if two_sided else 1)) < prediction_threshold(n, alpha, two_sided)


def test_a_later_pass_tests_against_the_clean_participants_mean_and_spread() -> None:
    """Unknown law (parameter uploads): three of ten regression uploads shrunk by 30-70 % towards zero (random
    targets), honest ones tightly around the consensus. After the first pass sets them aside, the seven left
    are the reference, tested with the prediction bound for seven values: the three keep <= 0.2x their share
    in all 40 draws and the honest ones >= 0.8x (refitting the tightest half of the seven: 29 of 40, and an
    honest upload shrunk in one)."""
    theta = np.array([0.11, 0.015, -0.03, 0.145])
    for seed in range(40):
        rng = np.random.default_rng(seed)
        ups = [theta + 0.006 * rng.normal(size=4) for _ in range(10)]
        for i in range(3):
            ups[i] = rng.uniform(0.3, 0.7) * theta + 0.006 * rng.normal(size=4)
        result = estimate_reliability([[u] for u in ups], np.full(10, 100.0), seed=0, reference=[np.zeros(4)])
        assert result.weights[:3].sum() <= 0.2 * 0.3, (seed, result.weights)
        assert np.all(result.weights[3:] >= 0.8 * 0.1), (seed, result.weights)


def test_honest_heads_lose_weight_at_most_at_the_false_alarm_rate() -> None:
    """Plain honest heads (unknown law), 300 draws of 5-19 participants, IID and heterogeneous: the share of
    participants that lose any weight stays below the 3 % false-alarm rate (measured 1.5 %; with the
    tightest-half refit, 1.6 %)."""
    lost = total = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(5, 20))
        truth = rng.normal(size=(C, D))
        spread = 0.3 * rng.uniform(0.5, 1.5, size=k) if seed % 2 else np.zeros(k)
        ups = [[truth + spread[i] * rng.normal(size=(C, D)) + 0.4 * rng.normal(size=(C, D))] for i in range(k)]
        result = estimate_reliability(ups, rng.integers(100, 5000, size=k).astype(float), seed=0, memory_rate=None)
        lost += int(np.count_nonzero(result.reliability < 1.0))
        total += k
    assert lost / total <= 0.03, lost / total


def test_normal_quantile_inverts_the_normal_cdf() -> None:
    from math import erfc, sqrt

    for p in (1e-6, 0.01, 0.3, 0.5, 0.9, 0.999):
        assert 0.5 * erfc(-normal_quantile(p) / sqrt(2)) == pytest.approx(p, rel=1e-9, abs=1e-15)
    with pytest.raises(ValueError, match="1.5"):
        normal_quantile(1.5)


def test_robust_null_ignores_a_minority_of_outliers() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=10)
    v[:4] = 50.0 + rng.normal(size=4)
    loc, scale = robust_null(v)
    assert abs(loc) < 1.5 and scale < 2.0


# ------------------------------------------------------------------------------------------ honest uploads
def test_honest_heterogeneous_uploads_keep_fedavg_weights_at_the_false_alarm_rate() -> None:
    below = total = 0
    for seed in range(60):
        _, ups, counts, _ = heads(seed)
        res = estimate_reliability(ups, counts, seed=seed, memory_rate=None)
        ratio = res.weights / res.sample_weights
        below += int(np.sum(ratio < 0.8))
        total += len(ups)
    assert below / total <= 0.03, f"{below} of {total} honest participant-rounds below 0.8x FedAvg"


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.floats(1.0, 1000.0), min_size=3, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_identical_uploads_get_exactly_fedavg_weights_for_any_counts(counts, seed) -> None:
    rng = np.random.default_rng(seed)
    up = [rng.normal(size=(4, 3)), rng.normal(size=3)]
    w = reliability_weights([up] * len(counts), counts)
    np.testing.assert_allclose(w, np.array(counts) / np.sum(counts), rtol=1e-12, atol=0)


# derandomized: honest participants lose weight at the false-alarm rate by design (300 IID draws of this
# kind: 1.6 % lose any, 0.8 % fall below 0.8x), so a rare draw has three of twelve at once (seed 3789,
# found by a random run); fixed examples keep the guard below (at most two) deterministic in CI
@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    counts=st.lists(st.floats(1.0, 1000.0), min_size=4, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_equal_quality_uploads_weigh_by_counts_and_counts_never_enter_the_evidence(counts, seed) -> None:
    """Participants without significant evidence keep exactly FedAvg's relative weights (no cap on
    honest unequal counts, issue #12.1); permuting the claimed counts changes no evidence (#11.3)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(C, D))
    ups = [[truth + 0.5 * rng.normal(size=(C, D))] for _ in counts]
    n = np.array(counts)
    res = estimate_reliability(ups, n, seed=0, memory_rate=None)
    kept = res.reliability == 1.0
    assert np.count_nonzero(kept) >= len(n) - 2
    np.testing.assert_allclose(res.weights[kept] / res.weights[kept].sum(), n[kept] / n[kept].sum(), rtol=1e-12)
    shuffled = estimate_reliability(ups, rng.permutation(n), seed=0, memory_rate=None)
    np.testing.assert_array_equal(shuffled.round_evidence, res.round_evidence)


def test_honest_unequal_counts_ten_ten_eighty() -> None:
    _, ups, _, _ = heads(3, k=3)
    np.testing.assert_allclose(reliability_weights(ups, [10, 10, 80]), [0.1, 0.1, 0.8], atol=1e-15)


def test_weights_are_permutation_equivariant_and_scale_invariant() -> None:
    _, ups, counts, _ = heads(5)
    ups[2] = [np.roll(ups[2][0], 1, axis=0)]
    w = reliability_weights(ups, counts, seed=0)
    perm = np.random.default_rng(0).permutation(len(ups))
    np.testing.assert_allclose(reliability_weights([ups[i] for i in perm], counts[perm], seed=0), w[perm], atol=1e-12)
    np.testing.assert_allclose(reliability_weights([[3e-4 * a for a in u] for u in ups], counts, seed=0), w, atol=1e-9)


# ------------------------------------------------------------------------------------------ corruptions
def corrupt(kind: str, head: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "random-labels":  # class structure collapsed: every row the same, plus noise
        return np.repeat(head.mean(axis=0, keepdims=True), C, axis=0) + 0.3 * rng.normal(size=head.shape)
    if kind == "flipped-labels":  # rows permuted relative to the consensus (a derangement)
        return np.roll(head, 3, axis=0)
    if kind == "shrunk-targets":
        return 0.2 * head
    return 4.0 * head  # exploded targets


@pytest.mark.parametrize("kind", ["random-labels", "flipped-labels", "shrunk-targets", "exploded-targets"])
@pytest.mark.parametrize("n_bad", [1, 3, 4])
def test_modelled_corruptions_lose_their_weight_and_honest_ones_keep_theirs(kind: str, n_bad: int) -> None:
    for seed in range(3):
        truth, ups, counts, rng = heads(10 * seed + n_bad)
        for i in range(n_bad):
            ups[i] = [corrupt(kind, ups[i][0], rng)]
        res = estimate_reliability(ups, counts, seed=seed)
        fa = res.sample_weights
        bad = np.arange(len(ups)) < n_bad
        assert res.weights[bad].sum() <= 0.2 * fa[bad].sum(), (kind, seed, res.round_evidence)
        assert res.weights[~bad].min() > res.weights[bad].max()
        assert res.undecidable is None


def test_row_permutation_is_caught_by_the_gap_statistic() -> None:
    truth, ups, counts, rng = heads(11)
    ups[0] = [np.roll(ups[0][0], 1, axis=0)]
    ev = round_evidence(ups, list(range(10)), None, false_alarm_rate=0.01, max_coordinates=None, rng=rng)
    assert ev.per_statistic["gap"][0] > normal_quantile(0.99)
    assert np.argmax(ev.statistics["gap"]) == 0


def test_half_the_participants_colluding_is_reported_undecidable(caplog: pytest.LogCaptureFixture) -> None:
    truth, ups, counts, rng = heads(12)
    for i in range(5):
        ups[i] = [3.0 * truth + 0.01 * rng.normal(size=truth.shape)]
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        agg.aggregate(1, [Upload(i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=False))])
    report = agg.history[-1]
    assert report.undecidable is not None and "server_data" in report.undecidable
    np.testing.assert_allclose(list(report.weights.values()), list(report.fedavg_share.values()))
    assert "undecidable" in caplog.text


# ------------------------------------------------------------------------------------------ memory
def test_one_unlucky_round_does_not_silence_an_honest_node() -> None:
    truth, ups, counts, rng = heads(13)
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0))
    first = [list(u) for u in ups]
    first[4] = [ups[4][0] + 2.0 * rng.normal(size=(C, D))]  # one bad round
    agg.aggregate(1, [Upload(i, u, c) for i, (u, c) in enumerate(zip(first, counts, strict=False))])
    assert agg.history[-1].weights[4] < 0.5 * agg.history[-1].fedavg_share[4]  # its influence bounded
    for rnd in range(2, 12):
        fresh = [[truth + 0.3 * rng.normal(size=(C, D))] for _ in range(10)]
        agg.aggregate(rnd, [Upload(i, u, c) for i, (u, c) in enumerate(zip(fresh, counts, strict=False))])
    last = agg.history[-1]
    assert last.weights[4] >= 0.8 * last.fedavg_share[4]


def test_persistent_evidence_keeps_a_node_down_and_a_newcomer_starts_from_its_own() -> None:
    truth, _, counts, rng = heads(14)
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0))
    for rnd in range(1, 8):
        ups = [[truth + 0.3 * rng.normal(size=(C, D))] for _ in range(10)]
        ups[0] = [np.roll(ups[0][0], 2, axis=0)]
        agg.aggregate(rnd, [Upload(i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=False))])
        assert agg.history[-1].weights[0] < 0.05 * agg.history[-1].fedavg_share[0]
    ups = [[truth + 0.3 * rng.normal(size=(C, D))] for _ in range(11)]
    agg.aggregate(8, [Upload(i, u, c) for i, (u, c) in enumerate(zip(ups, list(counts) + [1000.0], strict=False))])
    assert np.isnan(EvidenceMemory().prior([10])[0])
    assert agg.history[-1].weights[10] >= 0.8 * agg.history[-1].fedavg_share[10]


def test_accumulated_evidence_is_a_convex_combination_of_rounds() -> None:
    rng = np.random.default_rng(0)
    prior = np.array([np.nan, 0.5, 3.0])
    ev = rng.normal(size=3)
    out = accumulate_evidence(prior, ev, 0.1, np.array([0.0, 1.0, 30.0]))
    assert out[0] == ev[0]  # newcomer: its own round
    assert out[1] == pytest.approx(0.5 + (0.1 / (1 - 0.9**2)) * (ev[1] - 0.5))  # mean of two rounds
    assert min(prior[2], ev[2]) <= out[2] <= max(prior[2], ev[2])
    np.testing.assert_array_equal(accumulate_evidence(prior, ev, None), ev)


# ------------------------------------------------------------------------------------------ noise law
def test_known_noise_law_keeps_noisy_honest_participants_and_unknown_law_does_not() -> None:
    """Small participants' releases are noisier: with their law known they are not mistaken for unreliable."""
    rng = np.random.default_rng(15)
    truth = rng.normal(size=(C, D))
    sigma = np.array([0.1] * 7 + [1.5] * 3)  # three small participants, 15x the noise
    ups = [[truth + 0.1 * rng.normal(size=(C, D)) + s * rng.normal(size=(C, D))] for s in sigma]
    counts = np.where(sigma > 1, 50.0, 5000.0)
    law = [[np.full((C, D), s * s)] for s in sigma]
    known = estimate_reliability(ups, counts, seed=0, noise_variance=law)
    unknown = estimate_reliability(ups, counts, seed=0)
    assert np.all(known.reliability == 1.0)
    assert np.all(unknown.reliability[7:] < 0.5)
    # a corrupted low-noise participant is still caught with the law known
    ups[0] = [np.roll(ups[0][0], 1, axis=0)]
    assert estimate_reliability(ups, counts, seed=0, noise_variance=law).reliability[0] < 0.2


def _noise(rng: np.random.Generator, law: str, sd: float, size: tuple[int, ...] | int) -> np.ndarray:
    """Noise of standard deviation ``sd`` from either law (Laplace of scale sd / sqrt 2)."""
    if law == "laplace":
        return rng.laplace(scale=sd / np.sqrt(2.0), size=size)
    return rng.normal(scale=sd, size=size)


@pytest.mark.parametrize("law", ["laplace", "gaussian"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_solution_noise_variance_matches_monte_carlo(task: str, law: str) -> None:
    rng = np.random.default_rng(16)
    d, k, n, sd = 5, 3, 4000, 0.7
    h = np.concatenate([rng.normal(size=(n, d - 1)) / np.sqrt(d), np.ones((n, 1))], axis=1)
    gram = h.T @ h
    if task == "classification":
        y = rng.integers(0, k, n)
        cross = (np.eye(k)[y] - 1.0 / k).T @ h
        solve = lambda g, c: k * c @ np.linalg.inv(g)  # noqa: E731
    else:
        cross = h.T @ (h @ rng.normal(size=d) + 0.1 * rng.normal(size=n))
        solve = lambda g, c: np.linalg.solve(g, c)  # noqa: E731
    w = solve(gram, cross)
    draws = []
    for _ in range(3000):
        e = np.triu(_noise(rng, law, sd, (d, d)))
        draws.append(solve(gram + e + np.triu(e, 1).T, cross + _noise(rng, law, sd, cross.shape)))
    mc = np.var(np.array(draws), axis=0)
    formula = solution_noise_variance(task, np.linalg.inv(gram), w, sd, k if task == "classification" else None)
    np.testing.assert_allclose(formula.mean(), mc.mean(), rtol=0.25)
    assert np.corrcoef(formula.ravel(), mc.ravel())[0, 1] > 0.8
    with pytest.raises(ValueError, match="noise_sd=-1"):
        solution_noise_variance(task, np.eye(d), w, -1.0, k)


# ------------------------------------------------------------------------------------------ building blocks
def test_leave_one_out_medians_match_brute_force() -> None:
    rng = np.random.default_rng(17)
    for k in (3, 4, 7, 10):
        x = rng.normal(size=(k, 50))
        x[:, :5] = np.round(x[:, :5])  # ties
        brute = np.stack([np.median(np.delete(x, i, axis=0), axis=0) for i in range(k)])
        np.testing.assert_allclose(loo_median(x), brute)
        clean = np.ones(k, dtype=bool)
        clean[0] = False
        sub = subset_loo_median(x, clean)
        np.testing.assert_allclose(sub[0], np.median(x[1:], axis=0))
        if k > 3:
            np.testing.assert_allclose(sub[1], np.median(np.delete(x, [0, 1], axis=0), axis=0))


@pytest.mark.parametrize("option", [{"false_alarm_rate": 0.0}, {"false_alarm_rate": 0.6}, {"shrink_width": -1.0}, {"max_num_examples": 0}])
def test_calibrated_options_are_validated_naming_the_value(option) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        ReliabilityOptions(**option)


def test_class_means_read_counts_and_means_from_a_release_and_state_their_variance() -> None:
    from flwr_ppcdl.reliability.noise_law import class_means

    rng = np.random.default_rng(18)
    k, d, n = 4, 3, 2000
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d))
    h = np.concatenate([0.3 * centres[y] + 0.1 * rng.normal(size=(n, d)), np.ones((n, 1))], axis=1)
    gram = h.T @ h
    cross = (np.eye(k)[y] - 1.0 / k).T @ h
    means, var = class_means(cross, gram, n, 0.0)
    truth = np.stack([h[y == c, :-1].mean(axis=0) for c in range(k)])
    np.testing.assert_allclose(means, truth, atol=1e-12)
    assert np.all(var > 0)  # sampling variance even without privacy noise
    # with noise of standard deviation sd (either law), the stated variance covers the spread of the noisy means
    sd = 7.0
    for law in ("laplace", "gaussian"):
        draws = []
        for _ in range(400):
            e = np.triu(_noise(rng, law, sd, gram.shape))
            noisy_gram = gram + e + np.triu(e, 1).T
            draws.append(class_means(cross + _noise(rng, law, sd, cross.shape), noisy_gram, n, sd)[0])
        spread = np.var(np.array(draws), axis=0)
        stated = class_means(cross, gram, n, sd)[1]
        assert np.all(spread <= 2.0 * stated) and np.mean(spread) >= 0.2 * np.mean(stated)
    with pytest.raises(ValueError, match="noise_sd=nan"):
        class_means(cross, gram, n, float("nan"))


def test_paule_mandel_recovers_the_heterogeneity_beyond_known_noise() -> None:
    from flwr_ppcdl.reliability.statistics import paule_mandel

    rng = np.random.default_rng(19)
    v = rng.uniform(0.1, 2.0, size=(40, 500))
    res = rng.normal(size=v.shape) * np.sqrt(0.7 + v)
    clean = np.ones(40, dtype=bool)
    assert paule_mandel(res, v, clean) == pytest.approx(0.7, rel=0.15)
    assert paule_mandel(rng.normal(size=v.shape) * np.sqrt(v), v, clean) < 0.05


def test_honest_spread_far_on_both_sides_is_set_aside_not_taken_for_corruption() -> None:
    """With a known noise law, a two-sided statistic with participants far beyond the threshold on both
    sides of a tight core is honest heterogeneity (a coherent corruption moves one way): nobody is shrunk
    by it, and the reason is returned; one-sided far values are still evidence."""
    from flwr_ppcdl.reliability.calibrated import _evidence

    rng = np.random.default_rng(24)
    core = rng.normal(scale=0.1, size=10)
    both = {"energy": np.zeros(10), "collapse": np.concatenate([core[:8], [-5.0, 5.0]])}
    per, _, aside = _evidence(both, 2.0, 0.03)
    assert "collapse" in aside and np.all(per["collapse"] == 0.0)
    # without a known noise law (plain clients, clean participants given) the rule is not applied
    per, _, aside = _evidence(both, 2.0, 0.03, clean=np.ones(10, dtype=bool))
    assert not aside and np.all(per["collapse"][8:] > 2.0)
    one = {"energy": np.zeros(10), "collapse": np.concatenate([core[:8], [5.0, 5.0]])}
    per, _, aside = _evidence(one, 2.0, 0.03)
    assert not aside and np.all(per["collapse"][8:] > 2.0) and np.all(per["collapse"][:8] <= 2.0)


def test_bounded_influence_false_runs_no_energy_test() -> None:
    """For views whose influence is bounded otherwise (validated releases), the energy test is left out:
    an honest participant whose uploads are merely far keeps its weight, a pattern corruption is still caught."""
    _, ups, counts, _ = heads(25)
    ups[0] = [ups[0][0] + 3.0 * np.random.default_rng(1).normal(size=(C, D))]  # far, same pattern
    ups[1] = [np.roll(ups[1][0], 1, axis=0)]  # rows permuted
    clipped = estimate_reliability(ups, counts, seed=0)
    free = estimate_reliability(ups, counts, seed=0, bounded_influence=False)
    assert clipped.reliability[0] < 1.0 and free.reliability[0] == 1.0
    assert free.reliability[1] < 0.2


def test_a_tiny_move_along_the_consensus_is_not_a_collapse_and_a_real_one_is() -> None:
    """Plain clients' first updates from a shared initial model: honest residuals are spread across the
    coordinates and hardly along the model; one honest client 0.4 % of the model's norm closer to zero is
    not a collapse (the floor: 0.3 %), a client shrunk to half is."""
    rng = np.random.default_rng(26)
    init = rng.normal(size=2000)  # a flat layer: collapse is the pattern statistic scored
    ups = [[init + 0.01 * rng.normal(size=init.shape)] for _ in range(10)]
    ups[3] = [ups[3][0] - 0.003 * init]  # 0.003 along the model: 13 honest sampling errors, 0.3 % of the norm
    counts = np.full(10, 600.0)
    assert np.all(estimate_reliability(ups, counts, seed=0).reliability == 1.0)
    ups[5] = [0.5 * ups[5][0]]
    result = estimate_reliability(ups, counts, seed=0)
    assert result.reliability[5] < 0.2 and result.reliability[3] == 1.0


def test_one_far_round_does_not_hold_an_honest_node_down_but_every_round_far_does() -> None:
    """The memory keeps each round's evidence winsorised at CARRY widths above the threshold: an honest
    node far in round 1 only has its full weight back from round 2 on; a node far every round stays down."""
    from flwr_ppcdl.reliability.calibrated import CARRY

    _, ups, counts, _ = heads(27)
    level = normal_quantile(0.97)
    prior = seen = None
    weights = []
    for rnd in range(4):
        round_ups = [list(u) for u in ups]
        round_ups[1] = [np.roll(ups[1][0], 1, axis=0)]  # node 1: rows permuted every round
        if rnd == 0:
            round_ups[0] = [np.roll(ups[0][0], 1, axis=0)]  # node 0: one far round
        res = estimate_reliability(round_ups, counts, seed=0, prior_evidence=prior, prior_rounds=seen)
        assert np.all(res.carried_evidence <= res.evidence + 1e-12)
        if rnd == 0:
            assert res.round_evidence[0] > level + CARRY and res.carried_evidence[0] == pytest.approx(level + CARRY)
        prior, seen = res.carried_evidence, np.full(len(round_ups), float(rnd + 1))
        weights.append(res.reliability)
    assert weights[0][0] < 0.2 and weights[1][0] >= 0.8 and weights[3][0] == 1.0
    assert all(w[1] < 0.2 for w in weights)
