"""Reliability core of flwr_ppcdl (server side): pure numpy, no Flower, no Ray.

The server's counterpart of :mod:`flwr_ppcdl.privacy`. One statistical model (``docs/reliability.md``),
one job per module:

* :mod:`.options` -- :class:`ReliabilityOptions`, every option declared and validated once;
* :mod:`.constants` -- every constant of the estimator, with its provenance (one table);
* :mod:`.validation` -- which uploads cannot be aggregated, and why;
* :mod:`.counts` -- which claimed example counts are plausible;
* :mod:`.sketch` -- what is scored: coordinate samples of every view, and identical uploads as one voice;
* :mod:`.model` -- the honest model of a round fitted to one view, and the statistics scored against it;
* :mod:`.calibration` -- thresholds simulated for the round's number of participants;
* :mod:`.noise_law` -- the known noise law of a functional-mechanism release's scored views;
* :mod:`.estimate` -- one round's weights (:func:`estimate_reliability`);
* :mod:`.memory` -- accumulated log-odds and running sums of statistics across rounds, per node;
* :mod:`.arrays` -- the aggregate itself: the weighted sum, or the coordinate-wise median;
* :mod:`.aggregator` -- a round's bookkeeping for the Flower adapters, with :class:`RoundReport`.

Privacy: everything here is post-processing of what participants already released, plus,
optionally, losses the server computes on data it owns: it costs no privacy budget.
"""

from flwr_ppcdl.reliability.aggregator import (
    ReliabilityAggregator,
    RoundOutcome,
    RoundReport,
    Upload,
)
from flwr_ppcdl.reliability.arrays import coordinate_median, weighted_sum
from flwr_ppcdl.reliability.estimate import (
    ReliabilityResult,
    ScoredView,
    estimate_reliability,
    reliability_weights,
)
from flwr_ppcdl.reliability.memory import EvidenceMemory
from flwr_ppcdl.reliability.options import METHODS, ReliabilityOptions, ServerLossFn
from flwr_ppcdl.reliability.validation import validate_updates

__all__ = [
    "EvidenceMemory", "METHODS", "ReliabilityAggregator", "ReliabilityOptions", "ReliabilityResult", "RoundOutcome",
    "RoundReport", "ScoredView", "ServerLossFn", "Upload", "coordinate_median", "estimate_reliability",
    "reliability_weights", "validate_updates", "weighted_sum",
]
