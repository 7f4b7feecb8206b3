"""Round bookkeeping shared by every Flower adapter (pure Python/numpy; no Flower import).

The adapters convert Flower replies into :class:`Upload` s (node id, arrays, claimed count, an optional
known-law view of the release, or the reason the adapter already rejected the reply);
:class:`ReliabilityAggregator` does everything else: the reliability estimate, memory across rounds,
the aggregate (the weighted sum, or the coordinate-wise median in a round without a decidable honest
majority), the per-round :class:`RoundReport` (the one shape of the weight history), metrics and the
log lines. ``SummedStatisticsFedAvg`` uses :meth:`ReliabilityAggregator.weigh` (the same bookkeeping;
it sums releases instead of averaging arrays).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.arrays import coordinate_median, weighted_sum
from flwr_ppcdl.reliability.calibration import median_mad, normal_quantile
from flwr_ppcdl.reliability.estimate import (
    ReliabilityResult,
    ScoredView,
    _cap_shares,
    estimate_reliability,
)
from flwr_ppcdl.reliability.memory import EvidenceMemory
from flwr_ppcdl.reliability.options import ReliabilityOptions

LOGGER = logging.getLogger("flwr")


@dataclass
class Upload:
    """One participant's reply, already converted from Flower types."""

    node_id: int
    arrays: list[NDArray[Any]] | None
    num_examples: Any
    reason: str | None = None  # set when the adapter already rejected the reply
    view: ScoredView | None = None  # a known-law view of its release, when it shared one


@dataclass
class RoundReport:
    """What the reliability weighting decided in one round (node ids as ints): ``weights`` (the
    estimator's, summing to 1, after the server's records overruled the flags in ``overruled``, method
    ``"server_data"``; in an undecidable round its judgement only, the aggregate being the median),
    ``reliability`` (the factor beyond the claimed count), ``fedavg_share`` (after the count cap),
    ``excluded`` (node -> why), ``down_weighted`` (below half their FedAvg share), ``model_updated``,
    ``failures`` (legacy API), ``evidence`` (accumulated log-odds of being corrupted: > 0 flagged),
    ``undecidable`` (why no honest majority was decidable) and ``aggregate`` (``"weighted"``, ``"median"``
    -- the coordinate-wise median, bounded influence -- or ``"none"``)."""

    round: int
    weights: dict[int, float] = field(default_factory=dict)
    reliability: dict[int, float] = field(default_factory=dict)
    fedavg_share: dict[int, float] = field(default_factory=dict)
    excluded: dict[int, str] = field(default_factory=dict)
    down_weighted: list[int] = field(default_factory=list)
    model_updated: bool = False
    failures: int = 0
    overruled: list[int] = field(default_factory=list)
    evidence: dict[int, float] = field(default_factory=dict)
    undecidable: str | None = None
    aggregate: str = "none"


@dataclass
class RoundOutcome:
    """What an adapter needs to build its return value."""

    arrays: list[NDArray[Any]] | None
    metrics: dict[str, float]
    included: list[int]  # positions (into the uploads list) that enter the aggregate


class ReliabilityAggregator:
    """Reliability-weighted aggregation with history and memory across rounds (``options``: every option,
    validated once; ``method="server_data"`` needs ``server_loss_fn``)."""

    def __init__(self, options: ReliabilityOptions) -> None:
        if not isinstance(options, ReliabilityOptions):
            raise TypeError(f"options must be a ReliabilityOptions; got {type(options).__name__}")
        if options.method == "server_data" and options.server_loss_fn is None:
            raise ValueError("method='server_data' needs server_loss_fn (got None)")
        self.options = options
        self.memory: EvidenceMemory | None = (
            EvidenceMemory() if options.method in ("calibrated", "server_data") and options.memory_rate else None)
        self.global_arrays: list[NDArray[Any]] | None = None
        self.history: list[RoundReport] = []
        self.labels: dict[int, str] = {}  # node id -> how logs name it (e.g. "p3"); display only
        self.server_helped: dict[int, bool] = {}  # node id -> the server's last verdict on its flag

    def remember_global(self, arrays: list[NDArray[Any]]) -> None:
        """Keep a copy of the arrays sent to clients this round."""
        self.global_arrays = [np.array(a, copy=True) for a in arrays]

    def weigh(self, server_round: int, uploads: Sequence[Upload], *, bounded_influence: bool = True) -> ReliabilityResult:
        """Validate and weigh the uploads of one round; append its :class:`RoundReport` (``aggregate``
        left to the caller: ``"none"`` until it sets it) and update the memory."""
        opts = self.options
        excluded = _pre_excluded(uploads)
        reference = self.global_arrays
        no_arrays = all(up.arrays is None for pos, up in enumerate(uploads) if pos not in excluded)
        updates = None if no_arrays else [
            [] if pos in excluded or up.arrays is None else list(up.arrays) for pos, up in enumerate(uploads)]
        counts = [0 if pos in excluded else up.num_examples for pos, up in enumerate(uploads)]
        node_ids = [up.node_id for up in uploads]
        result = estimate_reliability(
            updates, counts, opts,
            prior_evidence=None if self.memory is None else self.memory.prior(node_ids),
            prior_statistics=None if self.memory is None else self.memory.prior_statistics(node_ids),
            reference=reference if opts.use_deltas and updates is not None else None,
            expected_shapes=None if reference is None or updates is None else [tuple(a.shape) for a in reference],
            views=[None if pos in excluded else up.view for pos, up in enumerate(uploads)],
            bounded_influence=bounded_influence,
        )
        for pos, reason in result.excluded.items():
            excluded.setdefault(pos, reason)
        result.excluded = excluded
        for pos, message in sorted(result.capped.items()):
            LOGGER.warning("reliability round %d: node %s: %s", server_round, self._label(node_ids[pos]), message)
        for pos, reason in sorted(excluded.items()):
            LOGGER.warning("reliability round %d: excluded reply from node %s: %s",
                           server_round, self._label(node_ids[pos]), reason)
        valid = [pos for pos in range(len(uploads)) if pos not in excluded]
        if self.memory is not None and valid:
            self.memory.update([node_ids[p] for p in valid], result.evidence[valid],
                               [result.statistics[p] for p in valid] if result.statistics else ())
        self._report(server_round, node_ids, result, excluded)
        return result

    def aggregate(self, server_round: int, uploads: Sequence[Upload]) -> RoundOutcome:
        """Validate, weigh and aggregate the uploads of one round."""
        result = self.weigh(server_round, uploads)
        report = self.history[-1]
        weights = result.weights
        valid = [pos for pos in range(len(uploads)) if pos not in result.excluded]
        included = [pos for pos in valid if weights[pos] > 0]
        arrays: list[NDArray[Any]] | None = None
        updates = [list(up.arrays or []) for up in uploads]
        if report.undecidable is not None and valid:
            included = valid
            arrays, report.aggregate = coordinate_median(updates, included), "median"
            report.undecidable += f"; aggregate: the coordinate-wise median of the {len(included)} valid replies"
            LOGGER.warning("reliability round %d: %s (bounded influence)", server_round, report.undecidable)
        elif included:
            w = np.zeros(len(uploads))
            w[included] = weights[included] / weights[included].sum()
            arrays, report.aggregate = weighted_sum(updates, w), "weighted"
            if self.options.method == "server_data":
                arrays, included = self._put_flags_to_server(server_round, uploads, updates, arrays, w, valid, result, report)
        report.model_updated = arrays is not None
        return RoundOutcome(arrays, self.metrics(report, len(included)), included)

    def _put_flags_to_server(self, server_round: int, uploads: Sequence[Upload], updates: list[list[Any]],
                             arrays: list[NDArray[Any]], w: NDArray[np.float64], valid: list[int],
                             result: ReliabilityResult, report: RoundReport) -> tuple[list[NDArray[Any]], list[int]]:
        """``method="server_data"`` (docs/reliability.md §4): a participant below half its FedAvg share gets that
        share back where adding its upload at that share to the aggregate lowers the loss on the server's records
        more than adding a trusted participant's once more does, beyond chance (median - z(1 - false_alarm_rate)
        robust sds of those gains, and at most 0), in this round and the last round it was flagged."""
        loss_fn, share = self.options.server_loss_fn, result.sample_weights
        assert loss_fn is not None

        def loss(candidate: list[NDArray[Any]]) -> float:
            try:
                return float(loss_fn(candidate))
            except Exception as exc:  # noqa: BLE001 - a bad loss function or upload must not crash the run
                LOGGER.warning("reliability round %d: server loss failed (%s: %s)", server_round, type(exc).__name__, exc)
                return np.inf
        down = set(report.down_weighted)  # below half their FedAvg share
        flagged = [p for p in valid if uploads[p].node_id in down]
        base = loss(arrays) if flagged else np.nan
        if not np.isfinite(base):
            return arrays, [p for p in valid if w[p] > 0]

        def added(p: int, extra: float) -> float:  # the change of the server's loss when upload p gets `extra` more weight
            return loss([(a + extra * np.asarray(u)) / (1 + extra) for a, u in zip(arrays, updates[p], strict=False)]) - base
        trusted = np.array([added(p, share[p]) for p in valid if p not in flagged] or [0.0])  # each once more
        centre, scale = median_mad(trusted)
        bar = min(0.0, float(centre - normal_quantile(1 - self.options.false_alarm_rate) * scale))
        helps = {uploads[p].node_id: added(p, share[p] - w[p]) <= bar for p in flagged}
        back = [p for p in flagged if helps[uploads[p].node_id] and self.server_helped.get(uploads[p].node_id)]
        self.server_helped.update(helps)
        if back:  # their factor beyond the claimed count becomes 1; the others keep theirs
            factor = result.reliability.copy()
            factor[back] = 1.0
            w = _cap_shares(np.where(factor > 0, share * factor, 0.0), self.options.max_share)
            arrays = weighted_sum(updates, w)
            report.weights.update({uploads[p].node_id: float(w[p]) for p in valid})
            report.overruled = [uploads[p].node_id for p in back]
            report.down_weighted = [n for n in report.down_weighted if n not in report.overruled]
            LOGGER.info("reliability round %d: the server's records overrule the flags on %s (their FedAvg share back)",
                        server_round, [self._label(n) for n in report.overruled])
        return arrays, [p for p in valid if w[p] > 0]

    def _report(self, server_round: int, node_ids: list[int], result: ReliabilityResult,
                excluded: dict[int, str]) -> RoundReport:
        valid = [p for p in range(len(node_ids)) if p not in excluded]
        report = RoundReport(
            round=server_round,
            weights={node_ids[p]: float(result.weights[p]) for p in valid},
            reliability={node_ids[p]: float(result.reliability[p]) for p in valid},
            fedavg_share={node_ids[p]: float(result.sample_weights[p]) for p in valid},
            excluded={node_ids[p]: reason for p, reason in excluded.items()},
            evidence={node_ids[p]: float(result.evidence[p]) for p in valid if np.isfinite(result.evidence[p])},
            undecidable=result.undecidable,
        )
        report.down_weighted = [n for n, w in report.weights.items() if w < 0.5 * report.fedavg_share.get(n, 0.0)]
        self.history.append(report)
        w = np.array(list(report.weights.values()))
        if w.size:
            LOGGER.info(
                "reliability round %d: weights min %.4f / median %.4f / max %.4f over %d nodes; "
                "down-weighted (< half FedAvg share): %s; excluded: %s",
                server_round, w.min(), float(np.median(w)), w.max(), w.size,
                [self._label(n) for n in report.down_weighted] or "none",
                [self._label(n) for n in sorted(report.excluded)] or "none",
            )
        else:
            LOGGER.warning("reliability round %d: no valid reply; the global model stays as it was", server_round)
        return report

    def _label(self, node: int) -> str:
        return self.labels.get(node, str(node))

    def metrics(self, report: RoundReport, num_included: int) -> dict[str, float]:
        """Summary counts of the round: a fixed set of keys whatever the number of nodes (per-node
        weights only when the adapters are asked, ``per_node_metrics=True``)."""
        p = self.options.metrics_prefix
        metrics: dict[str, float] = {
            f"{p}num-included": float(num_included),
            f"{p}num-excluded": float(len(report.excluded)),
            f"{p}num-down-weighted": float(len(report.down_weighted)),
        }
        w = np.array(list(report.weights.values()))
        if w.size:
            metrics.update({f"{p}min": float(w.min()), f"{p}median": float(np.median(w)), f"{p}max": float(w.max())})
        return metrics


def _pre_excluded(uploads: Sequence[Upload]) -> dict[int, str]:
    """Uploads the adapter rejected, and repeated replies of one node (a node counts once per round: its
    first accepted reply is kept; adapters give replies without a usable sender id distinct ids)."""
    kept: dict[int, int] = {}
    excluded: dict[int, str] = {}
    for pos, up in enumerate(uploads):
        if up.reason is not None:
            excluded[pos] = up.reason
        elif up.node_id in kept:
            excluded[pos] = f"repeated reply of node {up.node_id} (its first reply this round is kept)"
        else:
            kept[up.node_id] = pos
    return excluded
