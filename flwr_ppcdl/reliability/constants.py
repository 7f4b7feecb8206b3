"""Every constant of the calibrated estimator, with where its value comes from (one table).

``docs/reliability.md`` (section "Constants") repeats this table for readers; the values live here
only. "Tuning seeds" are seeds 0-2 (and 10-15, ``benchmarks/reliability_tuning.py``) of the reliability
benchmarks; nothing here was chosen on the reporting seeds (3-5).
"""

from __future__ import annotations

SHARPNESS = 3.0
"""kappa: P(honest) = 1 / (1 + exp(kappa L)) for calibrated log-odds L (0 at the threshold): the likelihood
tempered so that one log-likelihood unit inside the threshold keeps 95 % of the weight (computed: with
kappa = 1, 73 %, and about 12 % of honest participants below 0.8x for a sum of two chi-square statistics)."""

HEAD_ROWS, HEAD_COST, PERMUTED_COLUMNS, TEMPLATE_NOISE = (3, 64), 0.25, 128, 0.1
"""A 2-D layer of this many rows (a classification head, class means) is tested for permuted rows (structural), whole
when its row tests (rows x size) cost at most this share of FedAvg's pass (a cost bound: at K = 1,000 the plain benchmark's
10 x 64 head is whole, 640 x 10 / 50,890 = 0.13; 1.08x FedAvg's time at K = 100); ``model.permuted_rows`` reads at most
this many columns (cost: columns^2) and runs where its templates' noise is at most this share of the rows' (flipped labels
found at <= .06; at .2-.9, 10 skewed participants, no power and honest z up to 13: tuning seeds 0-2)."""

SCORED_ENTRIES = 200_000
"""At most this many sampled entries (participants x coordinates) are scored per round, but never fewer
than ``MIN_COORDINATES`` coordinates (a log chi-square energy of 1,000 coordinates has sd 0.045): cost
bounds (K = 100, P = 10^5 within twice FedAvg's time, ``benchmarks/aggregation_speed.py``)."""
MIN_COORDINATES = 1_000
SAMPLE_BLOCK = 64
"""Coordinates per sampled contiguous block (256 bytes of float32): contiguous reads, random starts."""

MAX_STEPS = 20
"""At most this many concentration steps per start of the least-trimmed-squares fit (a cost cap)."""

SIMULATIONS = 200_000
"""Simulated honest statistic values per calibrated threshold (about 1e-4 resolution in the tail)."""
MAX_CALIBRATED_K = 256
"""Thresholds are simulated for min(K, 256) participants: converged (``tests/reliability/test_calibration.py``)."""

SAMPLING_FLOOR = 0.5
"""Without a known noise law, the collapse statistic's null scale (a cosine times the square root of the
number of entries, about 1 for isotropic residuals) is at least this: honest values closer than half
their own sampling error are not told apart."""

MIRROR_CAP = 6.0
"""The reversal's honest median / MAD is calibrated in steps of 0.5 up to this (at 6 an honest mirror is 9 sigma)."""

HETEROGENEITY_TAIL = 4.0
"""Degrees of freedom of the honest spread's scale mixing (Student-t): the energy threshold and the known-law collapse
are calibrated on it. With normal nulls honest census2000 participants under Dirichlet target skew were clipped (kept
0.80, tuning seed 0) and flagged for collapse (honest kept in 7 of 8 no-corruption cells, 8 of 8 with it, seeds 0-2)."""

STATISTIC_TAIL, COLLAPSE_TAIL = 10.0, 6.0
"""Student-t degrees of freedom for nulls estimated from the participants (gap, permuted, reversal; collapse without a law).
Synthetic honest rounds (tests) flag Gaussian uploads at .0095 with t(8), heavy-tailed ones at .048 with normal draws
(stated .02): t(10) keeps both within 2x. Plain clients, tuning seeds 0-2 twice: .035 IID / .020 Dirichlet (normal .040 / .027).
The law-free collapse is heterogeneity along the consensus: honest plain clients' values (tuning seeds, 1,800, by their round's
median / MAD) have quantiles .90 / .95 / .98 / .99 of 2.11 / 2.74 / 3.86 / 4.59; t(6) 2.04 / 2.76 / 3.87 / 4.84 (reliability_null_study)."""
LIGHT_SPREAD = 3.7
"""With at least ``MAX_CALIBRATED_K`` voices an estimated null is normal where their ``(q99 - q01) / (q75 - q25)`` is at
most this (normal 3.45, t(10) 3.95): K = 1,000 plain clients, nobody corrupted, flagged .012 instead of .0047 (tuning seed 0)."""
RIVAL = 0.25
"""Half the voices incompatible are a rival camp (an undecidable round) where their median energy to the other incompatible
voices' centre is below this share of their energy to the consensus: a tighter half then takes the consensus only within
sqrt(1 / RIVAL - 1) = 1.7 median honest distances (computed); uploads that agree on nothing sit near 1/2 (computed)."""
