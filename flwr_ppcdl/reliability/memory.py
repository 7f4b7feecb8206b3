"""Memory across rounds: each node's accumulated suspicion, in calibrated log-odds (pure Python).

The calibrated estimator's round evidence is a log-likelihood ratio minus its threshold: positive
when the round alone would flag the node. The memory carries the positive part, discounted by
``memory_rate`` per round, into the next round's log-odds (``L_t = l_t + rate * max(L_{t-1}, 0)``):
a node found corrupted stays down while its uploads keep failing, and one far round fades. Credit
is never carried (a node cannot bank honest rounds to spend on a later attack). Successive uploads
of one functional-mechanism participant derive from one release, so its rounds are not independent
evidence; carrying a discounted positive part at most adds ``rate / (1 - rate)`` times the evidence
already seen, and an honest node's log-odds pass 0 in a round only if that round's own evidence or a
carried false alarm does (measured: ``benchmarks/reliability_calibrated.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class EvidenceMemory:
    """Accumulated log-odds per node id (see the module docstring)."""

    def __init__(self) -> None:
        self.scores: dict[int, float] = {}

    def prior(self, node_ids: Sequence[int]) -> FloatArray:
        """The log-odds each node carries from earlier rounds (NaN for a node never seen)."""
        return np.array([self.scores.get(int(n), math.nan) for n in node_ids], dtype=np.float64)

    def update(self, node_ids: Sequence[int], accumulated: Sequence[float] | FloatArray) -> None:
        """Store the log-odds the estimator computed this round (finite values only)."""
        for node, value in zip(node_ids, accumulated, strict=True):
            if math.isfinite(float(value)):
                self.scores[int(node)] = float(value)

    def state(self) -> Mapping[int, float]:
        """Current log-odds (a copy)."""
        return dict(self.scores)
