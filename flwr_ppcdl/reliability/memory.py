"""Memory across rounds: each node's accumulated suspicion, in calibrated log-odds (pure Python).

A round's log-odds are its log-likelihood ratio minus the threshold (> 0: flagged) plus ``memory_rate``
times the node's carried positive log-odds (``L_t = l_t + rate * max(L_{t-1}, 0)``): a node found
corrupted stays down while its uploads keep failing, one far round fades, and credit is never carried (no
node banks honest rounds for a later attack). Evidence repeated from one fixed release adds at most
``rate / (1 - rate)`` times itself.
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
