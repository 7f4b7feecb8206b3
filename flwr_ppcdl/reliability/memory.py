"""Memory of reliability across rounds, per node id (pure Python/numpy)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class ReliabilityMemory:
    """Moving average of reliability per node id across rounds.

    Each round, a node's reliability factor ``r_k`` in [0, 1] (1 = fully trusted, before
    sample counts) is blended into its score: ``m <- (1 - rate) * m + rate * r_k``. The
    score, clipped to ``[floor, 1]``, is used as a multiplicative prior next round, so a persistently
    unreliable node stays down-weighted while a newcomer starts neutral (1).

    Parameters
    ----------
    rate : float, default 0.5
        Blend rate in (0, 1]; 1 = no memory.
    floor : float, default 0.0
        Smallest prior a node can have.
    """

    def __init__(self, rate: float = 0.5, floor: float = 0.0) -> None:
        if not (0 < rate <= 1):
            raise ValueError(f"rate={rate!r} must be in (0, 1]")
        if not (0 <= floor <= 1):
            raise ValueError(f"floor={floor!r} must be in [0, 1]")
        self.rate = rate
        self.floor = floor
        self.scores: dict[int, float] = {}

    def prior(self, node_ids: Sequence[int]) -> FloatArray:
        """Prior per node (1.0 for unseen nodes)."""
        return np.array(
            [max(self.floor, min(1.0, self.scores.get(int(n), 1.0))) for n in node_ids],
            dtype=np.float64,
        )

    def update(self, node_ids: Sequence[int], reliability: Sequence[float] | FloatArray) -> None:
        """Blend this round's reliability factors (in [0, 1]) into the per-node scores."""
        for node, rel in zip(node_ids, reliability, strict=True):
            old = self.scores.get(int(node), 1.0)
            value = float(rel) if math.isfinite(float(rel)) else 0.0
            self.scores[int(node)] = (1 - self.rate) * old + self.rate * min(max(value, 0.0), 1.0)

    def state(self) -> Mapping[int, float]:
        """Current scores (read-only view)."""
        return dict(self.scores)
