"""Privacy core of flwr_ppcdl: the functional mechanism, its sensitivities, samplers and ledger.

Pure numpy (float64) and, in :mod:`.objective` only, torch. No Flower, no Ray.
The guarantee is stated in :mod:`flwr_ppcdl.privacy.functional_mechanism`.
"""

from flwr_ppcdl.privacy.functional_mechanism import (
    FunctionalMechanism,
    Release,
    RepairedStatistics,
    clip_l2,
    summation_slack,
)
from flwr_ppcdl.privacy.ledger import BudgetExceededError, LedgerEntry, PrivacyLedger
from flwr_ppcdl.privacy.noise import PrivacyLeakWarning
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

__all__ = [
    "BudgetExceededError",
    "FunctionalMechanism",
    "LedgerEntry",
    "PrivacyLeakWarning",
    "PrivacyLedger",
    "Release",
    "RepairedStatistics",
    "clip_l2",
    "cross_classification_record_l1",
    "cross_regression_record_l1",
    "gram_record_l1",
    "l1_norm_bound",
    "sensitivity_cross_classification",
    "sensitivity_cross_regression",
    "sensitivity_gram",
    "sensitivity_regression",
    "sensitivity_softmax",
    "squared_l2_norm_bound",
    "summation_slack",
]
