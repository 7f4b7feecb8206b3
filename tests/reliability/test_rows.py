"""Class-row tests under a known noise law (issue #13): pairwise consistency, the consistent majority,
the permutation (swap) test -- and flipped labels caught when the flipped participants hold half the data."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_ppcdl.reliability import estimate_reliability
from flwr_ppcdl.reliability.null import normal_quantile
from flwr_ppcdl.reliability.rows import consistent_majority, pairwise_consistency, row_swap

C, P = 6, 12  # class rows x entries per row


def class_rows(rng: np.random.Generator, k: int, sd: np.ndarray, perm: dict[int, np.ndarray] | None = None):
    """K participants' class-row means: a common truth plus noise of the stated sd; some rows permuted."""
    truth = rng.normal(size=(C, P))
    stack = []
    for i in range(k):
        rows = truth[(perm or {}).get(i, np.arange(C))]
        stack.append(rows + sd[i] * rng.normal(size=(C, P)))
    noise = np.stack([np.full((C, P), s * s) for s in sd])
    return np.stack(stack).reshape(k, -1), noise.reshape(k, -1)


def test_honest_pairs_have_unit_standardised_difference_within_the_stated_spread() -> None:
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.05, 2.0, size=12)
    stack, noise = class_rows(rng, 12, sd)
    d, limit = pairwise_consistency(stack, noise)
    off = d[~np.eye(12, dtype=bool)]
    assert off.mean() == pytest.approx(1.0, abs=0.05)  # E = 1 under the law
    assert off.std() == pytest.approx(np.sqrt(2.0 / (C * P)), rel=0.35)  # a mean of C*P chi-square(1) / (C*P)
    assert np.all(off <= limit[~np.eye(12, dtype=bool)])


def test_the_consistent_majority_is_the_honest_group_even_when_colluders_hold_more_data() -> None:
    """Four colluders with the same permutation and ten times less noise (a hundred times the data) than
    six honest participants: the majority of *participants* that agree is the honest six."""
    rng = np.random.default_rng(1)
    sd = np.array([0.5] * 6 + [0.05] * 4)
    perm = np.roll(np.arange(C), 1)
    stack, noise = class_rows(rng, 10, sd, {i: perm for i in range(6, 10)})
    group = consistent_majority(stack, noise)
    assert group is not None and group.tolist() == [True] * 6 + [False] * 4
    # all honest: nothing to exclude; five against five: no majority to build a centre from
    honest, law = class_rows(rng, 10, sd)
    assert consistent_majority(honest, law) is None
    even, law = class_rows(rng, 10, sd, {i: perm for i in range(5, 10)})
    assert consistent_majority(even, law) is None


def test_swap_statistic_holds_its_bonferroni_rate_for_honest_rows_and_finds_a_permuted_row() -> None:
    """Honest participants of very unequal precision: the largest of the C(C-1) standardised comparisons
    passes the Bonferroni threshold at most at the nominal rate; one swapped pair of rows is far beyond."""
    rng = np.random.default_rng(2)
    alpha = 0.05
    threshold = normal_quantile(1.0 - alpha / (C * (C - 1)))
    values = []
    for _ in range(150):
        sd = rng.uniform(0.05, 3.0, size=10)
        stack, noise = class_rows(rng, 10, sd)
        values.append(row_swap(stack, noise, C, np.ones(10, dtype=bool)))
    rate = float(np.mean(np.concatenate(values) > threshold))
    assert rate <= alpha
    swapped = np.arange(C)
    swapped[[0, 1]] = [1, 0]
    stack, noise = class_rows(rng, 10, np.full(10, 0.2), {3: swapped})
    found = row_swap(stack, noise, C, np.ones(10, dtype=bool))
    assert found[3] > threshold + 5 and np.all(np.delete(found, 3) < threshold)


def _class_releases(rng: np.random.Generator, sizes: np.ndarray | None, epsilon: float, relabel, single_class=()):
    """Ten FM classification releases (Gaussian, 5 classes, 6 features) under Dirichlet(0.3) label skew.

    ``sizes`` None: drawn from 800-5,000 per participant. ``relabel(i, y, rng)`` gives the labels participant i
    releases with (its corruption, or ``y``); the ``single_class`` participants hold class 0 only."""
    from flwr_ppcdl.privacy import FunctionalMechanism

    k, d, classes = 10, 6, 5
    centres = rng.normal(size=(classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) * 2.0
    sizes = rng.integers(800, 5000, size=k) if sizes is None else sizes
    fm = FunctionalMechanism(task="classification", num_classes=classes, epsilon=epsilon, noise="gaussian", delta=1e-5,
                             sampler="numpy", insecure_noise_seed=int(rng.integers(1 << 30)))
    out = []
    for i in range(k):
        y = np.zeros(sizes[i], dtype=int) if i in single_class else rng.choice(
            classes, size=sizes[i], p=rng.dirichlet(np.full(classes, 0.3)))
        x = centres[y] + rng.normal(scale=0.15, size=(sizes[i], d))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)
        out.append(fm.release(x, relabel(i, y, rng)))
    return out, sizes.astype(float)


def _label_skewed_releases(rng: np.random.Generator, flipped: set[int]):
    """Epsilon = 1; the ``flipped`` participants relabel with one shared derangement and hold the largest
    datasets (4,000 records against 1,500)."""
    perm = np.roll(np.arange(5), 1)
    sizes = np.array([1500, 1500, 1500, 1500, 1500, 1500, 4000, 4000, 4000, 4000])
    return _class_releases(rng, sizes, 1.0, lambda i, y, _: perm[y] if i in flipped else y)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flipped_labels_holding_half_the_data_lose_their_weight_under_label_skew() -> None:
    """Statistics protocol, class means: four colluding flipped-label participants hold 16,000 of 25,000
    records (Dirichlet 0.3 label skew). They keep <= 0.2x their FedAvg share, the honest six >= 0.8x;
    with nobody flipped every participant keeps its share."""
    from flwr_ppcdl.strategies.releases import release_scoring_view

    rng = np.random.default_rng(3)
    for flipped in (set(), {6, 7, 8, 9}):
        releases, sizes = _label_skewed_releases(rng, flipped)
        views = [release_scoring_view(r) for r in releases]
        result = estimate_reliability([v[0] for v in views], sizes, seed=0, noise_variance=[v[1] for v in views])
        share = sizes / sizes.sum()
        honest = [i for i in range(10) if i not in flipped]
        assert np.all(result.weights[honest] >= 0.8 * share[honest]), (flipped, result.weights / share)
        if flipped:
            bad = sorted(flipped)
            assert result.weights[bad].sum() <= 0.2 * share[bad].sum(), result.weights / share


def test_honest_participants_of_very_unequal_precision_are_not_two_camps() -> None:
    """Five participants with 100x the data of five others (noise sds 0.1 and 1.0): on the swap and
    energy statistics the first sit apart from the second -- both honest, so the round stays decidable
    and FedAvg's weights hold (each of five draws; the collapse statistic still splits such a
    population in about one draw of five, docs/reliability.md section 7)."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        sd = np.array([0.1] * 5 + [1.0] * 5)
        stack, noise = class_rows(rng, 10, sd)
        ups = [[row.reshape(C, P)] for row in stack]
        law = [[v.reshape(C, P)] for v in noise]
        counts = np.array([10000.0] * 5 + [100.0] * 5)
        result = estimate_reliability(ups, counts, seed=0, noise_variance=law)
        assert result.undecidable is None, (seed, result.undecidable)
        np.testing.assert_allclose(result.weights, counts / counts.sum())


def test_five_flipped_against_five_honest_is_undecidable_and_nobody_is_shrunk() -> None:
    """Half the participants permuted alike: no honest majority, so the round is reported undecidable
    and FedAvg's weights are kept for everyone (the swap test, measured from a centre that mixes the
    camps, once made one camp or the other look extreme depending on the draw)."""
    perm = np.roll(np.arange(C), 1)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        stack, noise = class_rows(rng, 10, np.full(10, 0.3), {i: perm for i in range(5)})
        ups = [[row.reshape(C, P)] for row in stack]
        result = estimate_reliability(ups, np.full(10, 100.0), seed=0, noise_variance=[[v.reshape(C, P)] for v in noise])
        assert result.undecidable is not None
        np.testing.assert_allclose(result.weights, np.full(10, 0.1))


def test_a_known_law_head_larger_than_the_coordinate_budget_is_scored_in_full() -> None:
    """A 6 x 5,000 head (30,000 entries, over the 20,000-coordinate budget): the row tests still see every
    entry, so a participant with two swapped rows is found and the others keep FedAvg's weights."""
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(C, 5000))
    swapped = np.arange(C)
    swapped[[2, 4]] = [4, 2]
    ups, law = [], []
    for i in range(10):
        rows = truth[swapped] if i == 7 else truth
        ups.append([rows + 0.5 * rng.normal(size=rows.shape)])
        law.append([np.full(rows.shape, 0.25)])
    result = estimate_reliability(ups, np.full(10, 100.0), seed=0, noise_variance=law, max_coordinates=20_000)
    assert result.weights[7] < 0.01 * 0.1
    assert np.all(np.delete(result.weights, 7) >= 0.8 * 0.1)


def test_a_law_that_understates_the_spread_flags_nobody_and_still_finds_a_permutation() -> None:
    """The stated law is 30x too small in sd (heterogeneity it does not state, or a wrong law): the
    overdispersion factor scales it back, so no honest participant is flagged (without the factor two
    honest participants lose their weight here), and a participant with two swapped rows is still caught
    where the rows are as distinct as the true noise allows."""
    from flwr_ppcdl.reliability.rows import overdispersion

    swapped = np.arange(C)
    swapped[[1, 3]] = [3, 1]
    for sd, must_catch in ((0.6, False), (0.3, True)):
        rng = np.random.default_rng(0)
        stack, noise = class_rows(rng, 10, np.full(10, sd), {2: swapped})
        law = noise / 900.0
        assert overdispersion(pairwise_consistency(stack, law)[0]) > 100.0
        assert overdispersion(pairwise_consistency(stack, noise)[0]) == 1.0  # the right law: factor 1
        ups = [[row.reshape(C, P)] for row in stack]
        result = estimate_reliability(ups, np.full(10, 100.0), seed=0, noise_variance=[[v.reshape(C, P)] for v in law])
        assert np.all(np.delete(result.weights, 2) >= 0.8 * 0.1), (sd, result.weights)
        if must_catch:
            assert result.weights[2] < 0.01 * 0.1


# ------------------------------------------------------- regression moments: the law-consistent majority
THETA = np.array([4.0, -1.4, -5.4, 14.0])
"""Census2000 target moments under IID at epsilon = 1, in units of their privacy-noise sd (measured)."""


def target_moments(rng: np.random.Generator, n_bad: int, spread: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ten participants' target moments with unit-variance noise; the first ``n_bad`` have random targets,
    whose moments collapse towards zero by different amounts (as the real ones do); ``spread`` scales
    the honest ones along the consensus (target skew: mean incomes that differ between participants)."""
    level = 1.0 + spread * rng.normal(size=(10, 1))
    stack = level * THETA + rng.normal(size=(10, 4))
    stack[:n_bad] = rng.uniform(0.0, 0.5, size=(n_bad, 1)) * THETA + rng.normal(size=(n_bad, 4))
    return stack, np.ones((10, 4))


def _moment_weights(stack: np.ndarray, noise: np.ndarray) -> np.ndarray:
    result = estimate_reliability([[s] for s in stack], np.full(10, 1000.0), seed=0,
                                  noise_variance=[[v] for v in noise], bounded_influence=False)
    return result.weights


def test_the_law_must_hold_for_a_majority_of_moments_to_be_claimed() -> None:
    """Six honest participants within the law and four random targets: the majority is the honest six and
    its dispersion about 1, also when the law leaves out part of the honest variance. Honest participants
    spread far beyond the law along the consensus (target skew): a group still agrees after the
    overdispersion factor, but not within the law itself, so no majority is claimed from it."""
    from flwr_ppcdl.reliability.rows import group_dispersion

    rng = np.random.default_rng(11)
    stack, noise = target_moments(rng, 4)
    group = consistent_majority(stack, noise, law_must_hold=True)
    assert group is not None and group.tolist() == [False] * 4 + [True] * 6
    assert 1.0 <= group_dispersion(stack, noise, group) < 1.5
    assert group_dispersion(stack * 3.0, noise, group) > 4.0  # a law 3x too small in sd: about 9
    # a law that states 1/1.4 of the honest variance (the sampling part it leaves out): still claimed,
    # and exactly the honest six, in at least 34 of 40 draws (measured 37; a median threshold of 1.25: 25)
    exact = 0
    for seed in range(40):
        stack, noise = target_moments(np.random.default_rng(seed), 4)
        group = consistent_majority(stack, noise / 1.4, law_must_hold=True)
        exact += group is not None and group.tolist() == [False] * 4 + [True] * 6
    assert exact >= 34, exact
    # ten honest participants: no group is claimed (one chance inconsistency is not a second population:
    # a participant consistent with half the group rejoins it; without that rule, 10 of these 100 draws)
    nothing = sum(consistent_majority(*target_moments(np.random.default_rng(500 + seed), 0), law_must_hold=True) is None
                  for seed in range(100))
    assert nothing >= 98, nothing
    claimed = 0
    for seed in range(20):
        skewed, noise = target_moments(np.random.default_rng(seed), 3, spread=0.5)
        assert consistent_majority(skewed, noise, law_must_hold=True) is None
        claimed += consistent_majority(skewed, noise) is not None
    assert claimed > 0  # without the condition some of these groups would have been the reference


def test_forty_percent_random_targets_are_caught_against_the_law_consistent_majority() -> None:
    """Four of ten participants with random targets whose moments collapse by 50-100 %: measured against
    the honest majority's centre with the law as the null, they keep <= 0.2x their FedAvg share in at least
    36 of 40 draws (measured: 38, a 0.05x mean; the estimated null of the earlier rule: 29 of 40, 0.26x); honest participants
    keep >= 0.8x in every draw, and with every target honest nobody loses weight."""
    caught, bad_mass = 0, []
    for seed in range(40):
        weights = _moment_weights(*target_moments(np.random.default_rng(seed), 4))
        assert np.all(weights[4:] >= 0.8 * 0.1), (seed, weights)
        bad_mass.append(weights[:4].sum() / 0.4)
        caught += bad_mass[-1] <= 0.2
    assert caught >= 36 and np.mean(bad_mass) <= 0.12, (caught, np.mean(bad_mass))
    for seed in range(10):
        np.testing.assert_allclose(_moment_weights(*target_moments(np.random.default_rng(100 + seed), 0)), 0.1)


def test_honest_moments_spread_by_target_skew_are_not_silenced_by_random_targets_among_them() -> None:
    """Target skew (honest moments spread along the consensus) with three random targets: no majority is
    consistent within the law, so no honest participant is measured against a group the random targets
    belong to; every honest participant keeps >= 0.8x its FedAvg share."""
    for seed in range(20):
        weights = _moment_weights(*target_moments(np.random.default_rng(seed), 3, spread=0.5))
        assert np.all(weights[3:] >= 0.8 * 0.1), (seed, weights)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_established_majority_is_not_overruled_by_camps_in_an_estimated_statistic() -> None:
    """Four random-label participants and two honest ones that hold a single class (their other class means
    rest on floored counts, so they lean towards a collapse): the collapse statistic can put one of them
    with the four, "two camps of five" -- the earlier rule then reported the round undecidable (2 of these
    30 draws) although the class means' majority under the known law was exactly the honest six. Now no
    draw is undecidable, and in every draw the four keep <= 0.2x their share, the honest six >= 0.8x."""
    from flwr_ppcdl.strategies.releases import release_scoring_view

    for seed in range(30):
        rng = np.random.default_rng(seed)
        releases, sizes = _class_releases(rng, None, 10.0, lambda i, y, r: r.integers(5, size=y.size) if i < 4 else y,
                                          single_class=(4, 5))
        views = [release_scoring_view(r) for r in releases]
        result = estimate_reliability([v[0] for v in views], sizes, seed=0, noise_variance=[v[1] for v in views])
        share = sizes / sizes.sum()
        assert result.undecidable is None, (seed, result.undecidable)
        assert result.weights[:4].sum() <= 0.2 * share[:4].sum() and np.all(result.weights[4:] >= 0.8 * share[4:]), seed
