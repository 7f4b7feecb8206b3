"""Every constant of the calibrated estimator, with where its value comes from (one table).

``docs/reliability.md`` (section "Constants") repeats this table for readers; the values live here
only. "Tuning seeds" are seeds 0-2 of ``benchmarks/reliability_calibrated.py`` and
``benchmarks/reliability_plain.py``; nothing here was chosen on the reporting seeds (3-5).
"""

from __future__ import annotations

SHARPNESS = 3.0
"""kappa: the posterior probability of being honest is ``1 / (1 + exp(kappa * L))`` for accumulated
calibrated log-odds ``L`` (0 at the threshold). The likelihood ratio of one round is tempered by kappa
so that an honest participant one log-likelihood unit below the threshold keeps 95 % of its FedAvg
weight; with kappa = 1 the same participant keeps 73 % and honest participants fell below 0.8x their
share in about 12 % of participant-rounds (tuning seeds, all-honest cells)."""

HEAD_ROWS = (3, 64)
"""A 2-D layer with this many rows (a classification head, a release's class means) is scored in full
and tested for permuted rows; a structural definition, not tuned."""

SCORED_ENTRIES = 200_000
"""At most this many sampled entries (participants x coordinates) are scored per round ..."""
MIN_COORDINATES = 1_000
"""... but never fewer coordinates than this: the statistics of 1,000 coordinates are precise to a few
percent (sd of a log chi-square energy with 1,000 coordinates: 0.045). Cost bounds, not tuned: at
K = 100, P = 10^5 scoring 2,000 coordinates per participant keeps the aggregation within twice FedAvg's
time (``benchmarks/aggregation_speed.py``)."""
SAMPLE_BLOCK = 64
"""Coordinates per sampled contiguous block (256 bytes of float32): contiguous reads, random starts."""

MAX_STEPS = 20
"""At most this many concentration steps per start of the least-trimmed-squares fit (it converges in
3-6 on every benchmark cell; the cap only bounds the cost)."""

SIMULATIONS = 200_000
"""Simulated honest statistic values per calibrated threshold (about 1e-4 resolution in the tail)."""
MAX_CALIBRATED_K = 256
"""Thresholds are simulated for min(K, 256) participants: beyond 256 the estimator's own noise is
negligible and the threshold has converged (``tests/reliability/test_calibration.py``)."""

SAMPLING_FLOOR = 0.5
"""Without a known noise law, the collapse statistic's null scale (a cosine times the square root of the
number of entries, about 1 for isotropic residuals) is at least this: honest values closer than half
their own sampling error are not told apart."""

REVERSAL_SPREADS = 2.0
"""The reversal test (an update against the others' consensus update) runs only while the consistent
participants' median cosine with the others' update is at least this many of its spreads (MAD) above 0,
so an honest participant reverses by chance with probability about Phi(-2) = 2 %, and contributes
nothing to the calibrated sum. Near a fixed point of the aggregation every update is anti-correlated with
the others' mean: on Fashion-MNIST (parameter protocol, IID, epsilon = 1, tuning seed 0) every honest
participant looked reversed in rounds 16-20 (17 % of participant-rounds flagged) before this condition."""
