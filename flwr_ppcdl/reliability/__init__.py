"""Reliability core of flwr_ppcdl (server side): pure numpy, no Flower, no Ray.

The server's counterpart of :mod:`flwr_ppcdl.privacy`. One job per module:

* :mod:`.options` -- :class:`ReliabilityOptions`, every option declared and validated once;
* :mod:`.validation` -- which uploads cannot be aggregated, and why;
* :mod:`.counts` -- which claimed example counts are plausible;
* :mod:`.sketch` -- coordinate sampling (and the legacy estimator's per-layer Gram matrices);
* :mod:`.statistics` -- per-participant test statistics on residuals to a robust centre;
* :mod:`.rows` -- class-row tests under a known noise law (the consistent majority, the swap test);
* :mod:`.null` -- the honest distribution of a statistic, estimated robustly, calibrated thresholds;
* :mod:`.calibrated` -- the default estimator: FedAvg's weights unless the evidence is significant;
* :mod:`.truth_discovery` -- the legacy truth-discovery estimator and its alignment gates;
* :mod:`.estimate` -- one round's reliability and weights (:func:`estimate_reliability`);
* :mod:`.arrays` -- the weighted sum itself;
* :mod:`.memory` -- evidence (calibrated) or reliability (legacy) across rounds per node;
* :mod:`.aggregator` -- a round's bookkeeping for the Flower adapters, with :class:`RoundReport`,
  the one shape of the weight history.

Privacy: everything here is post-processing of what participants already released, plus,
optionally, losses the server computes on data it owns: it costs no privacy budget.
"""

from flwr_ppcdl.reliability.aggregator import (
    ReliabilityAggregator,
    RoundOutcome,
    RoundReport,
    ScoredView,
    Upload,
)
from flwr_ppcdl.reliability.arrays import weighted_sum
from flwr_ppcdl.reliability.estimate import (
    ReliabilityResult,
    estimate_reliability,
    reliability_weights,
)
from flwr_ppcdl.reliability.memory import EvidenceMemory, ReliabilityMemory
from flwr_ppcdl.reliability.options import (
    DEFAULT_TOLERANCE,
    METHODS,
    SAMPLE_WEIGHTINGS,
    ReliabilityOptions,
    ServerLossFn,
)
from flwr_ppcdl.reliability.validation import validate_updates

__all__ = [
    "DEFAULT_TOLERANCE",
    "EvidenceMemory",
    "METHODS",
    "SAMPLE_WEIGHTINGS",
    "ReliabilityAggregator",
    "ReliabilityMemory",
    "ReliabilityOptions",
    "ReliabilityResult",
    "RoundOutcome",
    "RoundReport",
    "ScoredView",
    "ServerLossFn",
    "Upload",
    "estimate_reliability",
    "reliability_weights",
    "validate_updates",
    "weighted_sum",
]
