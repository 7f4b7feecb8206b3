"""Memory across rounds, per node id (pure Python): accumulated suspicion and each statistic's running sum.

Log-odds ``L_t = l_t + memory_rate * max(L_{t-1}, 0)`` (``l_t``: the round's log-likelihood ratio minus the
threshold): a node found corrupted stays down while its uploads keep failing, one far round fades, credit is
never carried. Statistics: the discounted sums ``(A, W)`` of ``estimate._accumulate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray


class EvidenceMemory:
    """Accumulated log-odds and statistics per node id (see the module docstring)."""

    def __init__(self) -> None:
        self.scores: dict[int, float] = {}
        self.statistics: dict[int, dict[str, tuple[float, float]]] = {}

    def prior(self, node_ids: Sequence[int]) -> NDArray[np.float64]:
        """The log-odds each node carries from earlier rounds (NaN for a node never seen)."""
        return np.array([self.scores.get(int(n), math.nan) for n in node_ids], dtype=np.float64)

    def prior_statistics(self, node_ids: Sequence[int]) -> list[Mapping[str, tuple[float, float]] | None]:
        """Each node's running sums (None for a node never seen)."""
        return [self.statistics.get(int(n)) for n in node_ids]

    def update(self, node_ids: Sequence[int], accumulated: Sequence[float] | NDArray[np.float64],
               statistics: Sequence[Mapping[str, tuple[float, float]]] = ()) -> None:
        """Store the log-odds (finite values only) and running sums the estimator computed this round."""
        for node, value in zip(node_ids, accumulated, strict=True):
            if math.isfinite(float(value)):
                self.scores[int(node)] = float(value)
        for node, stats in zip(node_ids, statistics, strict=False):
            self.statistics[int(node)] = {**self.statistics.get(int(node), {}), **stats}
