"""Flower adapters for reliability-weighted aggregation (thin: the math is in :mod:`flwr_ppcdl.reliability`).

* :class:`ReliabilityWeightedFedAvg` -- Message API (``flwr.serverapp.strategy.FedAvg`` subclass);
* :class:`flwr_ppcdl.strategies.compat.ReliabilityWeightedFedAvg` -- legacy API;
* :class:`flwr_ppcdl.strategies.summed.SummedStatisticsFedAvg` -- pools released statistics.

All take one :class:`~flwr_ppcdl.reliability.ReliabilityOptions` (or its fields as keywords).
``reliability_weights`` and the other pure functions are re-exported here (public contract).
"""

from flwr_ppcdl.reliability import (
    ReliabilityOptions,
    ReliabilityResult,
    RoundReport,
    estimate_reliability,
    reliability_weights,
    validate_updates,
)

from .message_api import ReliabilityWeightedFedAvg

__all__ = [
    "ReliabilityOptions",
    "ReliabilityResult",
    "ReliabilityWeightedFedAvg",
    "RoundReport",
    "estimate_reliability",
    "reliability_weights",
    "validate_updates",
]
