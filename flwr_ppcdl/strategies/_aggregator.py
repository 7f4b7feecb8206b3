"""Round bookkeeping shared by both Flower adapters (pure Python/numpy; no Flower import).

The adapters convert Flower replies into ``(node_id, arrays, num_examples)`` triples plus
pre-exclusion reasons; :class:`ReliabilityAggregator` does everything else: deltas to the
global model, reliability estimation, memory across rounds, the aggregate, history,
metrics and the per-round log line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .reliability import (
    METHODS,
    SAMPLE_WEIGHTINGS,
    ReliabilityMemory,
    estimate_reliability,
    weighted_sum,
)

LOGGER = logging.getLogger("flwr")

ServerLossFn = Callable[[list[NDArray[Any]]], float]


@dataclass
class Upload:
    """One participant's reply, already converted from Flower types."""

    node_id: int
    arrays: list[NDArray[Any]] | None
    num_examples: Any
    reason: str | None = None  # set when the adapter already rejected the reply


@dataclass
class RoundOutcome:
    """What an adapter needs to build its return value."""

    arrays: list[NDArray[Any]] | None
    metrics: dict[str, float]
    included: list[int]  # positions (into the uploads list) with positive weight


class ReliabilityAggregator:
    """Reliability-weighted aggregation with history and memory across rounds.

    Parameters
    ----------
    method, sharpness, tolerance, alignment, sample_weighting, count_cap, max_share, max_abs, max_coordinates
        Passed to :func:`~flwr_ppcdl.strategies.reliability.estimate_reliability`.
    memory_rate : float or None
        Blend rate of :class:`ReliabilityMemory`; None disables memory across rounds.
    use_deltas : bool
        Estimate reliability on ``upload - global`` (needs the global model) rather than on
        raw parameters. The aggregate is the same weighted mean either way.
    server_loss_fn : callable, optional
        ``f(parameters: list[ndarray]) -> float`` on server-held data (lower is better).
        Required by ``method="server_data"``. Uploads may be read-only views (the adapters
        do not copy Flower's bytes), so the function must not modify them in place.
    metrics_prefix : str
        Prefix of the per-round metric keys.
    """

    def __init__(
        self,
        *,
        method: str = "truth_discovery",
        sharpness: float = 2.0,
        tolerance: float | None = None,
        alignment: bool = True,
        sample_weighting: str = "linear",
        count_cap: float | None = 10.0,
        max_share: float | None = 0.5,
        max_abs: float = 1e12,
        max_coordinates: int | None = 50_000,
        memory_rate: float | None = 0.5,
        use_deltas: bool = True,
        server_loss_fn: ServerLossFn | None = None,
        metrics_prefix: str = "reliability/",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {METHODS}")
        if sample_weighting not in SAMPLE_WEIGHTINGS:
            raise ValueError(f"sample_weighting={sample_weighting!r} is not one of {SAMPLE_WEIGHTINGS}")
        if method == "server_data" and server_loss_fn is None:
            raise ValueError("method='server_data' needs server_loss_fn (got None)")
        if server_loss_fn is not None and not callable(server_loss_fn):
            raise ValueError(f"server_loss_fn={server_loss_fn!r} is not callable")
        if not (math.isfinite(max_abs) and max_abs > 0):
            raise ValueError(f"max_abs={max_abs!r} must be a positive finite number")
        self.options: dict[str, Any] = {
            "method": method,
            "sharpness": sharpness,
            "tolerance": tolerance,
            "alignment": alignment,
            "sample_weighting": sample_weighting,
            "count_cap": count_cap,
            "max_share": max_share,
            "max_abs": max_abs,
            "max_coordinates": max_coordinates,
        }
        # validate numeric options now (ValueError naming the value), not at round 1
        estimate_reliability([[np.zeros(1)]], [1], **{**self.options, "method": "fedavg"})
        self.memory = ReliabilityMemory(memory_rate) if memory_rate is not None else None
        self.use_deltas = use_deltas
        self.server_loss_fn = server_loss_fn
        self.metrics_prefix = metrics_prefix
        self.global_arrays: list[NDArray[Any]] | None = None
        self.history: list[dict[str, Any]] = []

    def remember_global(self, arrays: list[NDArray[Any]]) -> None:
        """Keep a copy of the arrays sent to clients this round."""
        self.global_arrays = [np.array(a, copy=True) for a in arrays]

    def aggregate(self, server_round: int, uploads: Sequence[Upload]) -> RoundOutcome:
        """Validate, weight and average the uploads of one round."""
        excluded: dict[int, str] = {}
        # Duplicated node ids: no way to know which reply is genuine -> exclude all of them.
        seen: dict[int, int] = {}
        for up in uploads:
            seen[up.node_id] = seen.get(up.node_id, 0) + 1
        for pos, up in enumerate(uploads):
            if up.reason is not None:
                excluded[pos] = up.reason
            elif seen[up.node_id] > 1:
                excluded[pos] = f"duplicated node id ({seen[up.node_id]} replies)"
        reference = self.global_arrays
        shapes = [tuple(a.shape) for a in reference] if reference is not None else None
        # Reliability is scored on deltas to the global model; the core subtracts the
        # reference on the scored coordinates only, so no K x P delta copy is made.
        updates: list[list[NDArray[Any]]] = []
        for pos, up in enumerate(uploads):
            if pos in excluded or up.arrays is None:
                updates.append([])
            else:
                updates.append(list(up.arrays))
        score_reference = reference if self.use_deltas else None
        server_losses = None
        if self.options["method"] == "server_data":
            server_losses = np.full(len(uploads), np.inf)
            assert self.server_loss_fn is not None
            for pos, up in enumerate(uploads):
                if pos in excluded or up.arrays is None:
                    continue
                try:
                    server_losses[pos] = float(self.server_loss_fn(list(up.arrays)))
                except Exception as exc:  # noqa: BLE001 - a bad upload must not crash the run
                    excluded[pos] = f"server loss failed ({type(exc).__name__}: {exc})"
        # Excluded uploads are given a placeholder the core rejects by shape.
        placeholder: list[NDArray[Any]] = []
        core_updates = [placeholder if pos in excluded else u for pos, u in enumerate(updates)]
        counts = [0 if pos in excluded else up.num_examples for pos, up in enumerate(uploads)]
        node_ids = [up.node_id for up in uploads]
        prior = self.memory.prior(node_ids) if self.memory is not None else None
        result = estimate_reliability(
            core_updates,
            counts,
            prior=prior,
            server_losses=server_losses,
            reference=score_reference,
            expected_shapes=shapes,
            **self.options,
        )
        for pos, reason in result.excluded.items():
            excluded.setdefault(pos, reason)
        weights = result.weights
        for pos, reason in sorted(excluded.items()):
            LOGGER.warning(
                "reliability round %d: excluded reply from node %s: %s",
                server_round,
                node_ids[pos],
                reason,
            )
        included = [pos for pos in range(len(uploads)) if weights[pos] > 0 and pos not in excluded]
        arrays_out: list[NDArray[Any]] | None = None
        if included:
            w = np.zeros(len(uploads))
            w[included] = weights[included] / weights[included].sum()
            # sum_k w_k (x_k - g) + g == sum_k w_k x_k because the weights sum to 1
            arrays_out = weighted_sum(updates, w)
        if self.memory is not None and included:
            valid_pos = [pos for pos in range(len(uploads)) if pos not in excluded]
            self.memory.update([node_ids[p] for p in valid_pos], result.reliability[valid_pos])
        entry = self._record(server_round, node_ids, weights, result, excluded, included)
        return RoundOutcome(arrays_out, self._metrics(entry, node_ids, included), included)

    def _record(
        self,
        server_round: int,
        node_ids: list[int],
        weights: NDArray[np.float64],
        result: Any,
        excluded: dict[int, str],
        included: list[int],
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "round": server_round,
            "weights": {node_ids[p]: float(weights[p]) for p in range(len(node_ids)) if p not in excluded},
            "reliability": {
                node_ids[p]: float(result.reliability[p]) for p in range(len(node_ids)) if p not in excluded
            },
            "fedavg_share": {
                node_ids[p]: float(result.sample_weights[p]) for p in range(len(node_ids)) if p not in excluded
            },
            "excluded": {node_ids[p]: reason for p, reason in excluded.items()},
            "iterations": int(result.iterations),
            "model_updated": bool(included),
        }
        self.history.append(entry)
        w = np.array(list(entry["weights"].values()))
        down = [
            n for n in entry["weights"]
            if entry["weights"][n] < 0.5 * entry["fedavg_share"].get(n, 0.0)
        ]
        if w.size:
            LOGGER.info(
                "reliability round %d: weights min %.4f / median %.4f / max %.4f over %d nodes; "
                "down-weighted (< half FedAvg share): %s; excluded: %s",
                server_round, w.min(), float(np.median(w)), w.max(), w.size,
                down or "none", sorted(entry["excluded"]) or "none",
            )
        else:
            LOGGER.warning(
                "reliability round %d: no valid reply; the global model stays as it was", server_round
            )
        entry["down_weighted"] = down
        return entry

    def _metrics(self, entry: dict[str, Any], node_ids: list[int], included: list[int]) -> dict[str, float]:
        p = self.metrics_prefix
        metrics: dict[str, float] = {}
        for node, weight in entry["weights"].items():
            metrics[f"{p}weight/{node}"] = weight
        w = np.array(list(entry["weights"].values())) if entry["weights"] else np.zeros(0)
        metrics[f"{p}num-included"] = float(len(included))
        metrics[f"{p}num-excluded"] = float(len(entry["excluded"]))
        metrics[f"{p}num-down-weighted"] = float(len(entry["down_weighted"]))
        if w.size:
            metrics[f"{p}min"] = float(w.min())
            metrics[f"{p}median"] = float(np.median(w))
            metrics[f"{p}max"] = float(w.max())
        return metrics

