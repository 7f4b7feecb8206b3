"""Evidence that adds up across rounds: one-sided statistics with an estimated null are running sums.

A corruption too weak to pass one round's threshold, repeated every round, must be found after a few
rounds; honest participants whose deviations do not persist keep the stated false-alarm rate; and an
upload repeated unchanged every round must not look stronger for being repeated.
"""

from __future__ import annotations

import numpy as np

from flwr_ppcdl.reliability import (
    ReliabilityAggregator,
    ReliabilityOptions,
    Upload,
    estimate_reliability,
)

K, ROWS, COLS, BAD = 10, 10, 50, (7, 8, 9)


def _rounds(seed: int, mix: float, memory_rate: float | None, n_rounds: int = 8) -> np.ndarray:
    """Plain updates of a 10-row head towards its centred rows (the class templates), fresh noise every
    round; ``BAD`` move each row ``mix`` of the way towards the next row's template (labels partly
    shifted), every round. Returns which participants are flagged, rounds x K."""
    rng = np.random.default_rng(seed)
    head = rng.standard_normal((ROWS, COLS))
    statistics, carried, flags = None, None, []
    for r in range(n_rounds):
        templates = head - head.mean(axis=0)
        shifted = (1.0 - mix) * templates + mix * np.roll(templates, -1, axis=0)
        uploads = [[head + 0.1 * ((shifted if k in BAD else templates) + rng.standard_normal((ROWS, COLS)))]
                   for k in range(K)]
        result = estimate_reliability(uploads, [100] * K, reference=[head], seed=1000 * seed + r,
                                      memory_rate=memory_rate, prior_statistics=statistics, prior_evidence=carried)
        statistics, carried = result.statistics, result.evidence
        flags.append(result.evidence > 0)
        head = head + 0.1 * templates
    return np.array(flags)


def test_a_weak_corruption_that_persists_is_found_within_a_few_rounds() -> None:
    """Rows shifted 20 % of the way: one round's evidence alone flags them in about 60 % of the later rounds;
    the running sums in nearly all."""
    alone = np.array([_rounds(seed, 0.2, None) for seed in range(8)])
    summed = np.array([_rounds(seed, 0.2, 0.5) for seed in range(8)])
    late_alone, late_summed = alone[:, 3:, BAD].mean(), summed[:, 3:, BAD].mean()
    assert late_alone <= 0.8, f"one round alone already flags {late_alone:.2f}: the test is not weak enough"
    assert late_summed >= 0.95, f"summed over rounds, flagged in {late_summed:.2f} of the later rounds"
    assert summed[:, :, :7].mean() <= 0.04


def test_honest_rounds_keep_the_stated_false_alarm_rate_when_summed() -> None:
    """Nobody corrupted, eight rounds, ten sequences: honest participants flagged at most twice the stated 2 %."""
    flags = np.array([_rounds(100 + seed, 0.0, 0.5) for seed in range(10)])
    assert flags.mean() <= 0.04


def test_a_repeated_upload_is_not_stronger_evidence_for_being_repeated() -> None:
    """Every participant sends the same upload every round (a fixed release): the running sums are kept, yet
    every round's evidence is the first round's (discounted sums of equal values, standardised again)."""
    rng = np.random.default_rng(3)
    head = rng.standard_normal((ROWS, COLS))
    templates = head - head.mean(axis=0)
    shifted = 0.8 * templates + 0.2 * np.roll(templates, -1, axis=0)
    uploads = [[head + 0.1 * ((shifted if k in BAD else templates) + rng.standard_normal((ROWS, COLS)))]
               for k in range(K)]
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0))
    evidence = []
    for r in range(1, 4):
        agg.remember_global([head])
        evidence.append(agg.weigh(r, [Upload(k, u, 100) for k, u in enumerate(uploads)]).round_evidence)
    assert agg.memory is not None and all("0:gap" in agg.memory.statistics[k] for k in range(K))
    for later in evidence[1:]:
        np.testing.assert_allclose(later, evidence[0], atol=1e-9)
