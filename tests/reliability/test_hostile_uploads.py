"""Hostile uploads against the library defaults (issues #11, #23, #25): the aggregate stays with the honest.

"Honest spread" below is the RMS distance of the honest uploads to their mean; every scenario checks
that the default aggregate (``ReliabilityAggregator(ReliabilityOptions())``, what every Flower adapter
runs) is within one honest spread of the honest mean, and that nothing raises.
"""

from __future__ import annotations

import numpy as np
import pytest

from flwr_ppcdl.reliability import (
    ReliabilityAggregator,
    ReliabilityOptions,
    Upload,
    estimate_reliability,
)
from flwr_ppcdl.reliability.constants import RIVAL

from .synthetic import flat, honest_mean_and_spread, honest_round, unflat


def aggregate_default(theta, ups, counts):
    agg = ReliabilityAggregator(ReliabilityOptions())
    agg.remember_global(theta)
    out = agg.aggregate(1, [Upload(100 + i, u, c) for i, (u, c) in enumerate(zip(ups, counts, strict=False))])
    return out, agg.history[-1]


def check_within_honest_spread(aggregate, honest_ups) -> None:
    mean, spread = honest_mean_and_spread(honest_ups)
    distance = float(np.linalg.norm(flat(aggregate) - mean))
    assert np.all(np.isfinite(flat(aggregate)))
    assert distance <= spread, f"aggregate {distance:.3g} from the honest mean, honest spread {spread:.3g}"


@pytest.mark.parametrize("seed", range(3))
def test_a_count_liar_with_a_far_upload_does_not_steer(seed: int) -> None:
    theta, ups, counts = honest_round(seed)
    honest = [list(u) for u in ups[1:]]
    ups[0] = [t + 3.0 * np.ones_like(t) for t in theta]
    counts[0] = 1e12
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, honest)
    assert report.weights[100] < 0.01


@pytest.mark.parametrize("seed", range(3))
def test_a_count_liar_with_an_honest_looking_upload_keeps_the_aggregate_among_the_honest(seed: int) -> None:
    """Its claim is capped (1000 x the median claim) but still dominates: the aggregate is then its
    upload, an honest-looking one -- no farther from the honest mean than the farthest honest upload."""
    theta, ups, counts = honest_round(seed)
    counts[0] = 1e12
    out, report = aggregate_default(theta, ups, counts)
    honest = np.stack([flat(u) for u in ups])
    mean = honest.mean(axis=0)
    farthest = float(np.max(np.linalg.norm(honest - mean, axis=1)))
    assert float(np.linalg.norm(flat(out.arrays) - mean)) <= farthest
    assert report.fedavg_share[100] < 1.0  # the claim was capped


@pytest.mark.parametrize("seed", range(3))
def test_three_colluding_sign_flipped_uploads_times_ten(seed: int) -> None:
    theta, ups, counts = honest_round(seed)
    honest = [list(u) for u in ups[3:]]
    for i in range(3):
        ups[i] = [t - 10.0 * (u - t) for t, u in zip(theta, ups[i], strict=False)]
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, honest)


@pytest.mark.parametrize("seed", range(3))
def test_four_colluding_identical_far_uploads(seed: int) -> None:
    theta, ups, counts = honest_round(seed)
    honest = [list(u) for u in ups[4:]]
    far = [t + 1.0 for t in theta]
    for i in range(4):
        ups[i] = [a.copy() for a in far]
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, honest)
    assert report.undecidable is None  # 6 honest against 4: the data can decide


@pytest.mark.parametrize("value", [1e10, 1e11])
def test_one_huge_upload_below_max_abs_gets_no_share(value: float) -> None:
    theta, ups, counts = honest_round(4)
    honest = [list(u) for u in ups[1:]]
    ups[0] = [np.full_like(t, value) for t in theta]
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, honest)
    assert report.weights[100] < 1e-12


@pytest.mark.parametrize("bad_count", [-5, 0, -1e12, float("nan")])
def test_negative_or_junk_counts_are_excluded(bad_count: float) -> None:
    theta, ups, counts = honest_round(5)
    counts[2] = bad_count
    out, report = aggregate_default(theta, ups, counts)
    assert 102 in report.excluded
    check_within_honest_spread(out.arrays, ups[:2] + ups[3:])


def test_one_sign_flipping_attacker_near_convergence_loses_its_share_in_every_seed() -> None:
    """Issue #11.4: with the old defaults it kept weight 1.0 in 9 of 20 seeds."""
    ratios = []
    for seed in range(20):
        theta, ups, counts = honest_round(100 + seed)
        ups[7] = [t - (u - t) * 10.0 for t, u in zip(theta, ups[7], strict=False)]
        res = estimate_reliability(ups, counts, reference=theta)
        ratios.append(res.weights[7] / res.sample_weights[7])
    assert max(ratios) <= 0.2, ratios


def test_absolute_count_maximum_excludes_impossible_claims() -> None:
    theta, ups, counts = honest_round(6)
    counts[1] = 50_000
    res = estimate_reliability(ups, counts, reference=theta, max_num_examples=10_000)
    assert res.weights[1] == 0 and "10000" in res.excluded[1]
    assert res.weights.sum() == pytest.approx(1.0)


def test_relative_count_cap_caps_absurd_claims_only() -> None:
    ups = [[np.ones(3)]] * 4
    res = estimate_reliability(ups, [10, 10, 80, 1e12])
    assert 3 in res.capped and "1e+12" in res.capped[3]
    assert not {0, 1, 2} & set(res.capped)
    np.testing.assert_allclose(res.weights[:3] / res.weights[:3].sum(), [0.1, 0.1, 0.8])


def far_point(seed: int, honest, spreads: float = 3.0) -> list[np.ndarray]:
    """A point ``spreads`` honest spreads from the honest mean, in a random direction."""
    mean, spread = honest_mean_and_spread(honest)
    direction = np.random.default_rng(seed + 7).normal(size=mean.shape)
    return unflat(mean + spreads * spread * direction / np.linalg.norm(direction))


@pytest.mark.parametrize("seed", range(3))
def test_the_library_default_bounds_a_count_liar_three_spreads_away(seed: int) -> None:
    """Issue #23.3: ``max_num_examples`` unset, a node claiming 1e12 examples with an upload three honest
    spreads from the honest mean: its count is pulled to the median claim and its upload clipped, so it
    keeps at most a fifth of the weight and moves the aggregate by at most one honest spread."""
    theta, ups, counts = honest_round(seed)
    ups[0], counts[0] = far_point(seed, ups[1:]), 1e12
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, ups[1:])
    assert report.weights[100] < 0.2


@pytest.mark.parametrize(("k", "bad"), [(20, 9), (100, 45), (100, 49)])
def test_colluding_identical_uploads_three_spreads_away_stay_within_their_share(k: int, bad: int) -> None:
    """Issue #25: identical uploads three honest spreads away from 9 of 20, 45 of 100 or 49 of 100: their
    total weight never exceeds their FedAvg share and the aggregate stays within one honest spread."""
    for seed in range(2):
        theta, ups, counts = honest_round(seed, k=k)
        far = far_point(seed, ups[bad:])
        for i in range(bad):
            ups[i] = [a.copy() for a in far]
        out, report = aggregate_default(theta, ups, counts)
        check_within_honest_spread(out.arrays, ups[bad:])
        colluders = [100 + i for i in range(bad)]
        assert sum(report.weights[n] for n in colluders) <= sum(report.fedavg_share[n] for n in colluders)
        assert report.undecidable is None


def test_a_majority_of_identical_uploads_is_one_voice() -> None:
    """Sixty identical uploads of a hundred: one piece of evidence, so the forty honest are the majority of
    independent voices and the aggregate stays with them."""
    theta, ups, counts = honest_round(3, k=100)
    far = far_point(3, ups[60:])
    for i in range(60):
        ups[i] = [a.copy() for a in far]
    out, report = aggregate_default(theta, ups, counts)
    check_within_honest_spread(out.arrays, ups[60:])


def test_half_coherent_colluders_make_the_round_undecidable_and_the_aggregate_a_median() -> None:
    """Fifty of a hundred colluders, each adding its own noise to a common point three spreads away: no
    decidable honest majority; the aggregate is the coordinate-wise median, logged in the round report.
    Its influence is bounded as documented: every coordinate lies between the honest half's median and the
    colluders' (the median of two equal halves), however far the colluders go."""
    theta, ups, counts = honest_round(4, k=100)
    mean, spread = honest_mean_and_spread(ups[50:])
    shift = flat(far_point(4, ups[50:])) - mean
    for i in range(50):
        ups[i] = unflat(flat(ups[i]) + shift)
    out, report = aggregate_default(theta, ups, counts)
    assert report.undecidable is not None and report.aggregate == "median"
    honest = np.median(np.stack([flat(u) for u in ups[50:]]), axis=0)
    colluders = np.median(np.stack([flat(u) for u in ups[:50]]), axis=0)
    got = flat(out.arrays)
    assert np.all(got >= np.minimum(honest, colluders) - 1e-12) and np.all(got <= np.maximum(honest, colluders) + 1e-12)


def test_half_random_uploads_are_found_and_the_honest_half_decides_the_round() -> None:
    """Ten of twenty uploads random at the model's own scale: every honest participant outweighs every
    random one (AUROC 1). The random uploads agree on nothing, so they are no rival camp: the round is
    decided, and its aggregate is the honest half's (within one honest spread of their mean)."""
    theta, ups, counts = honest_round(5, k=20)
    rng = np.random.default_rng(5)
    for i in range(10):
        ups[i] = [rng.normal(size=t.shape) * float(np.std(t)) for t in theta]
    out, report = aggregate_default(theta, ups, counts)
    weights = np.array([report.weights[100 + i] / report.fedavg_share[100 + i] for i in range(20)])
    assert weights[10:].min() > weights[:10].max()
    assert report.undecidable is None and report.aggregate == "weighted"
    check_within_honest_spread(out.arrays, ups[10:])


def test_a_tight_half_either_makes_the_round_undecidable_or_moves_the_aggregate_within_its_bound() -> None:
    """Fifty of a hundred colluders, each a tenth of an honest spread around a common point: tighter than
    the honest, they are the least-trimmed majority. The honest half, a rival camp, makes the round
    undecidable (the median) unless it is too close to tell from the colluders' spread; then the colluders'
    model decides, and it lies within ``sqrt(1 / RIVAL - 1)`` median honest distances of the honest mean
    (``docs/reliability.md`` section 4). Three spreads away is always a rival camp."""
    bound = np.sqrt(1.0 / RIVAL - 1.0)
    for spreads in (0.5, 1.0, 1.5, 2.0, 3.0):
        theta, ups, counts = honest_round(6, k=100)
        mean, _ = honest_mean_and_spread(ups[50:])
        median_distance = float(np.median([np.linalg.norm(flat(u) - mean) for u in ups[50:]]))
        point = flat(far_point(6, ups[50:], spreads))
        for i in range(50):
            ups[i] = unflat(point + 0.1 * (flat(ups[50 + i]) - mean))
        out, report = aggregate_default(theta, ups, counts)
        distance = float(np.linalg.norm(flat(out.arrays) - mean))
        assert report.aggregate == "median" or distance <= bound * median_distance, (spreads, distance / median_distance)
        assert spreads < 3.0 or report.undecidable is not None


@pytest.mark.parametrize("tight,junk", [(40, 10), (25, 25)])
def test_colluders_with_junk_at_half_cannot_pass_as_the_honest_camp(tight: int, junk: int) -> None:
    """Half of a hundred are attackers: a tight camp three spreads away plus random uploads that drag any mean of
    the incompatible voices. The honest half keeps the round: the attackers together stay within their FedAvg
    share and the aggregate within one honest spread of the honest mean."""
    theta, ups, counts = honest_round(6, k=100)
    honest = ups[50:]
    mean, _ = honest_mean_and_spread(honest)
    point = flat(far_point(6, honest))
    rng = np.random.default_rng(6)
    for i in range(tight):
        ups[i] = unflat(point + 0.1 * (flat(honest[i]) - mean))
    for i in range(tight, 50):
        ups[i] = [rng.normal(size=t.shape) * float(np.std(t)) for t in theta]
    out, report = aggregate_default(theta, ups, counts)
    attackers = [100 + i for i in range(50)]
    assert sum(report.weights[n] for n in attackers) <= sum(report.fedavg_share[n] for n in attackers)
    check_within_honest_spread(out.arrays, honest)
