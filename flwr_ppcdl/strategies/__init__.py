"""Reliability-weighted aggregation for Flower.

``reliability_weights`` (pure numpy) estimates how much each participant's upload should
count; ``ReliabilityWeightedFedAvg`` (Message API) and
``flwr_ppcdl.strategies.compat.ReliabilityWeightedFedAvg`` (legacy API) apply it.
"""

from .message_api import ReliabilityWeightedFedAvg
from .reliability import (
    ReliabilityMemory,
    ReliabilityResult,
    estimate_reliability,
    reliability_weights,
    validate_updates,
)

__all__ = [
    "ReliabilityMemory",
    "ReliabilityResult",
    "ReliabilityWeightedFedAvg",
    "estimate_reliability",
    "reliability_weights",
    "validate_updates",
]
