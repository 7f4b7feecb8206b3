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


def accumulate_evidence(
    prior: FloatArray, evidence: FloatArray, rate: float | None, rounds: FloatArray | None = None
) -> FloatArray:
    """Evidence accumulated over rounds: a bias-corrected exponentially weighted mean.

    With ``rounds`` = the number of earlier rounds ``t`` a node was scored in (0 or NaN ``prior``
    for a node never seen), the new value is ``prior + g (evidence - prior)`` with gain
    ``g = rate / (1 - (1 - rate)^(t + 1))``: the plain mean of the first rounds, an exponentially
    weighted mean of rate ``rate`` later (``rounds=None``: gain ``rate`` once seen). A convex
    combination of evidence values with standard-normal marginals has variance at most 1 whatever
    their dependence, so the decision threshold keeps its false-alarm rate: evidence that all rounds
    share (one fixed release) is not counted again, and one unlucky round is diluted.
    ``rate=None`` (no memory) returns ``evidence``.
    """
    ev = np.asarray(evidence, dtype=np.float64)
    if rate is None:
        return ev.copy()
    pri = np.asarray(prior, dtype=np.float64)
    if pri.shape != ev.shape:
        raise ValueError(f"prior evidence has shape {pri.shape}, expected {ev.shape}")
    seen = np.isfinite(pri)
    if rounds is None:
        gain = np.full(ev.shape, rate)
    else:
        t = np.where(np.isfinite(rounds), np.asarray(rounds, dtype=np.float64), 0.0)
        gain = rate / (1.0 - (1.0 - rate) ** (t + 1.0))
    return np.where(seen, pri + gain * (ev - np.where(seen, pri, 0.0)), ev)


class EvidenceMemory:
    """Accumulated evidence of unreliability per node id (see :func:`accumulate_evidence`).

    Parameters
    ----------
    rate : float, default 0.1
        Weight of the newest round in (0, 1] once a node has been seen often; 1 = no memory.
    """

    def __init__(self, rate: float = 0.1) -> None:
        if not (0 < rate <= 1):
            raise ValueError(f"rate={rate!r} must be in (0, 1]")
        self.rate = rate
        self.scores: dict[int, float] = {}
        self.rounds: dict[int, int] = {}

    def prior(self, node_ids: Sequence[int]) -> FloatArray:
        """Accumulated evidence per node before this round (NaN for a node never seen)."""
        return np.array([self.scores.get(int(n), math.nan) for n in node_ids], dtype=np.float64)

    def seen(self, node_ids: Sequence[int]) -> FloatArray:
        """Rounds each node has been scored in so far."""
        return np.array([float(self.rounds.get(int(n), 0)) for n in node_ids], dtype=np.float64)

    def update(self, node_ids: Sequence[int], accumulated: Sequence[float] | FloatArray) -> None:
        """Store the accumulated evidence the estimator computed this round."""
        for node, value in zip(node_ids, accumulated, strict=True):
            v = float(value)
            if math.isfinite(v):
                self.scores[int(node)] = v
                self.rounds[int(node)] = self.rounds.get(int(node), 0) + 1

    def state(self) -> Mapping[int, float]:
        """Current accumulated evidence (a copy)."""
        return dict(self.scores)
