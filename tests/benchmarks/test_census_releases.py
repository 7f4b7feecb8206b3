"""The census-release screening tool: every squared scale reads a normal's scale, the pair scale is pulled less by
values at the centre, swapping the scale reaches the estimator and its simulated thresholds together, and the oracle
ceiling fits the collapse null to the honest voices only."""

from __future__ import annotations

import numpy as np
import pytest

import flwr_ppcdl.reliability.calibration as calibration
import flwr_ppcdl.reliability.constants as constants
import flwr_ppcdl.reliability.model as model
from benchmarks import reliability_census_releases as census
from flwr_ppcdl.reliability import ScoredView, estimate_reliability


def test_both_squared_scales_read_the_scale_of_normal_values() -> None:
    values = 3.0 * np.random.default_rng(5).standard_normal((40, 801))
    assert np.mean(calibration.squared_scale(values)) == pytest.approx(9.0, rel=0.05)
    assert np.mean(census.pair_scale(values)) == pytest.approx(9.0, rel=0.05)
    assert np.mean(census.upper_quartile_scale(values)) == pytest.approx(9.0, rel=0.05)
    assert np.mean(census.mixture_scale(values)) == pytest.approx(9.0, rel=0.1)


def test_values_at_the_centre_pull_the_pair_scale_less_than_the_median_square() -> None:
    """Four of ten values at 0 (random targets at the consensus) beside six honest ones of scale 1: the median square
    falls to a sixth of the honest scale, the median squared difference to a half; the mixture keeps most of it."""
    rng = np.random.default_rng(11)
    values = np.concatenate([np.zeros((4000, 4)), rng.standard_normal((4000, 6))], axis=1)
    median_square, pairs = np.median(calibration.squared_scale(values)), np.median(census.pair_scale(values))
    assert median_square < 0.2 and pairs > 0.4
    assert np.median(census.mixture_scale(values)) > 0.6  # the six honest are the larger component


def test_swapping_the_scale_reaches_the_estimator_and_its_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``use_scale("pairs")`` the known-law collapse of a round and the threshold it is compared with both use the
    pair scale (the cached thresholds are recomputed): a round scored before and after differs, and restoring the
    library's scale restores the round."""
    rng = np.random.default_rng(3)
    theta = rng.normal(size=4)
    views = [ScoredView([(1.0 + 0.3 * rng.standard_t(4)) * theta + 0.01 * rng.normal(size=4)], [np.full(4, 1e-4)], False)
             for _ in range(10)]

    def score() -> np.ndarray:
        return estimate_reliability(None, np.full(10, 100.0), views=views, memory_rate=None).round_evidence

    before = score()
    monkeypatch.setattr(calibration, "squared_scale", calibration.squared_scale)
    monkeypatch.setattr(model, "squared_scale", model.squared_scale)
    calls: list[int] = []
    pair_scale = census.pair_scale

    def counted(values: np.ndarray) -> np.ndarray:
        calls.append(values.ndim)
        return pair_scale(values)

    monkeypatch.setattr(census, "pair_scale", counted)
    census.use_scale("pairs")
    after = score()
    assert 1 in calls and 2 in calls  # the estimator's one round (1-D) and the simulation's draws (2-D)
    assert not np.allclose(before, after)
    monkeypatch.undo()
    calibration.evidence_threshold.cache_clear()
    calibration.chance_spread.cache_clear()
    assert np.allclose(score(), before)


def test_the_oracle_fits_the_collapse_null_to_the_honest_voices_and_the_library_is_restored() -> None:
    """Four of ten releases at the consensus shrink the median-square null and the six honest ones, spread along it,
    look far; fitted to the honest six (``oracle``) the largest honest evidence falls. ``--tails`` reaches the constant,
    and ``use_scale("median")`` restores the library's scale, projections and tail."""
    def score(views: list[ScoredView]) -> np.ndarray:
        return estimate_reliability(None, np.full(10, 100.0), views=views, memory_rate=None).round_evidence

    rounds = []
    for seed in range(8, 13):
        rng = np.random.default_rng(seed)
        theta = rng.normal(size=4)
        honest = [(1.0 + 0.3 * rng.standard_normal()) * theta for _ in range(6)]
        rounds.append([ScoredView([u + 0.01 * rng.normal(size=4)], [np.full(4, 1e-4)], False) for u in honest + [theta] * 4])
    before = [score(views) for views in rounds]
    try:
        census.HONEST[:] = [np.arange(10) < 6]
        census.use_scale("oracle")
        assert all(score(views)[:6].max() < b[:6].max() for views, b in zip(rounds, before, strict=True))
        census.use_scale("median", 3.0)
        assert constants.HETEROGENEITY_TAIL == 3.0
    finally:
        census.use_scale("median")
    assert constants.HETEROGENEITY_TAIL == census.LIBRARY_TAIL and model._projections is census.LIBRARY_PROJECTIONS
    assert all(np.allclose(score(views), b) for views, b in zip(rounds, before, strict=True))


def test_without_gram_evidence_a_census_round_scores_the_target_moments_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gram-evidence off``: the views the tool scores carry the Gram moments as no evidence, and the flag is the
    tool's alone (the library's views are unchanged)."""
    seen: list[object] = []

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(kwargs["views"])
        raise RuntimeError("stop")

    monkeypatch.setattr(census, "estimate_reliability", recording)
    release = type("R", (), {"num_examples": 100})()
    monkeypatch.setattr(census, "release_view", lambda r: ScoredView([np.zeros(2), np.zeros(3)], [np.ones(2), np.ones(3)],
                                                                      evidence=(True, True)))
    for flag in (True, False):
        with pytest.raises(RuntimeError):
            census.score([release] * 3, np.zeros(3, dtype=bool), gram_evidence=flag)
    assert [v[0].evidence for v in seen] == [(True, True), (True, False)]  # type: ignore[index, attr-defined]


def test_the_honest_majority_ceiling_searches_the_honest_voices_and_the_library_is_restored() -> None:
    """Four tight releases and six spread ones: the least-trimmed majority takes the tight four; under ``honest-majority``
    (and ``honest-all``) it is searched among the six honest voices only, and ``use_scale("median")`` restores the
    library's search."""
    rng = np.random.default_rng(4)
    stack = np.concatenate([rng.normal(size=(6, 4)) * 3.0, 0.01 * rng.normal(size=(4, 4))])
    layers = [model.Layer(stack, np.zeros(4), np.full((10, 4), 1e-4), 0, False)]
    voices, honest = np.ones(10, dtype=bool), np.arange(10) < 6
    assert model._least_trimmed(layers, voices)[6:].all()  # the library's majority holds the tight four
    try:
        census.HONEST[:] = [honest]
        for name in ("honest-majority", "honest-all"):
            census.use_scale(name)
            assert not model._least_trimmed(layers, voices)[6:].any()
        assert model._projections is census.honest_projections  # honest-all: the oracle's null too
    finally:
        census.use_scale("median")
    assert model._least_trimmed is census.LIBRARY_MAJORITY and model._least_trimmed(layers, voices)[6:].all()


def test_flagged_honest_participants_are_split_by_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten honest releases, five of 100 records and five of 1,000; two small ones far beyond the others along the
    consensus are flagged, and the tool counts every flagged honest participant once, in the half its claimed count
    falls in (below the honest's median count, or at least it)."""
    rng = np.random.default_rng(4)
    theta = np.array([1.0, 2.0, -1.0, 0.5])
    far = {0: 8.0, 1: 8.0}
    views = {k: ScoredView([theta * (1.0 + far.get(k, 0.0)) + 0.01 * rng.standard_normal(4), np.eye(2)[np.triu_indices(2)]],
                           [np.full(4, 1e-4), np.full(3, 1e-4)], evidence=(True, True)) for k in range(10)}
    releases = [type("R", (), {"num_examples": 100 if k < 5 else 1000, "k": k})() for k in range(10)]
    monkeypatch.setattr(census, "release_view", lambda r: views[r.k])
    got = census.score(releases, np.zeros(10, dtype=bool))
    assert got["smaller"] + got["larger"] == round(got["flagged"] * 10)
    assert got["smaller"] >= 2 and got["larger"] == 0, got


def test_the_sampling_screen_fits_a_spread_that_grows_as_one_over_the_count_and_the_library_is_restored() -> None:
    """Ten known-law views whose honest spread is ``0.1 + 2 m / n_k`` (five of 100 records, five of 1,000; ``m`` the
    median count) over 400 entries: the screen's heterogeneity is about ten times larger for the small ones and near
    the truth for both; with equal counts it is the library's; ``use_scale`` swaps it in and back out."""
    rng = np.random.default_rng(9)
    n = np.array([100.0] * 5 + [1000.0] * 5)
    truth = 0.1 + 2.0 * np.median(n) / n
    noise = np.full((10, 400), 0.05)
    stack = rng.standard_normal((10, 400)) * np.sqrt(truth[:, None] + noise)
    lay = model.Layer(stack, np.zeros(400), noise, 0)
    members = np.ones(10, dtype=bool)
    try:
        census.COUNTS[:] = [n]
        got = np.ravel(census.sampling_heterogeneity([lay], [np.zeros(400)], members)[0])
        assert got[:5].mean() / got[5:].mean() == pytest.approx(truth[0] / truth[-1], rel=0.25)
        assert got == pytest.approx(truth, rel=0.25)
        census.COUNTS[:] = [np.full(10, 500.0)]
        assert census.sampling_heterogeneity([lay], [np.zeros(400)], members) == model._heterogeneity([lay], [np.zeros(400)], members)
        census.use_scale("sampling")
        assert model._heterogeneity is census.sampling_heterogeneity
    finally:
        census.use_scale("median")
        census.COUNTS.clear()
    assert model._heterogeneity is census.LIBRARY_HETEROGENEITY
