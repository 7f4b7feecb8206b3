"""Privacy core of flwr_ppcdl (participant side): the functional mechanism and what surrounds it.

Pure numpy (float64) and, in :mod:`.objective` only, torch. No Flower, no Ray. One job per module:

* :mod:`.validation` -- the one validator of ε, public constants and records;
* :mod:`.bounding` -- public per-record bounds and the float summation slack;
* :mod:`.sensitivity` -- every sensitivity as a small pure function;
* :mod:`.noise` -- the Laplace samplers behind one interface, and their factory;
* :mod:`.calibration`, :mod:`.gaussian` -- Gaussian noise: σ from (ε, δ) through zCDP, the L2 slack,
  the hardened discrete Gaussian sampler; :mod:`.accounting` -- pure-ε / ρ-zCDP guarantees and
  their composition;
* :mod:`.mechanism` -- :class:`FunctionalMechanism`, the only reader of records (its docstring
  states the guarantee);
* :mod:`.release`, :mod:`.repair`, :mod:`.objective`, :mod:`.decoders` -- the release and its free
  post-processing (Taylor closed form, LDA);
* :mod:`.release_law` -- the release format's noise law in one place (the calibration the mechanism
  draws with and the server recomputes; per-entry and spectral noise bounds);
  :mod:`.release_checks` -- a server's checks of a shared release (exact metadata, Gram consistency);
* :mod:`.combine`, :mod:`.units` -- sums of releases; normalised weights <-> head parameters;
* :mod:`.ledger` -- the per-participant privacy ledger ((ε, δ) per release, composed).
"""

from flwr_ppcdl.privacy.bounding import clip_l2, summation_slack
from flwr_ppcdl.privacy.combine import combine_releases
from flwr_ppcdl.privacy.ledger import BudgetExceededError, LedgerEntry, PrivacyLedger
from flwr_ppcdl.privacy.mechanism import FunctionalMechanism
from flwr_ppcdl.privacy.noise import PrivacyLeakWarning
from flwr_ppcdl.privacy.release import Release
from flwr_ppcdl.privacy.repair import RepairedStatistics
from flwr_ppcdl.privacy.sensitivity import (
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
from flwr_ppcdl.privacy.units import (
    head_from_normalised,
    linear_head_parameters,
    normalised_from_head,
)
from flwr_ppcdl.privacy.validation import MIN_EPSILON, RecordError, check_epsilon

__all__ = [
    "MIN_EPSILON",
    "BudgetExceededError",
    "FunctionalMechanism",
    "LedgerEntry",
    "PrivacyLeakWarning",
    "PrivacyLedger",
    "RecordError",
    "Release",
    "RepairedStatistics",
    "check_epsilon",
    "clip_l2",
    "combine_releases",
    "cross_classification_record_l1",
    "cross_regression_record_l1",
    "gram_record_l1",
    "head_from_normalised",
    "l1_norm_bound",
    "linear_head_parameters",
    "normalised_from_head",
    "sensitivity_cross_classification",
    "sensitivity_cross_regression",
    "sensitivity_gram",
    "sensitivity_regression",
    "sensitivity_softmax",
    "squared_l2_norm_bound",
    "summation_slack",
]
