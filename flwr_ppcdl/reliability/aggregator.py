"""Round bookkeeping shared by the Flower adapters (pure Python/numpy; no Flower import).

The adapters convert Flower replies into :class:`Upload` s (node id, arrays, claimed count, or the
reason the adapter already rejected the reply); :class:`ReliabilityAggregator` does everything else:
deltas to the global model, reliability estimation, memory across rounds, the aggregate, the
per-round :class:`RoundReport` (the one shape of the weight history), metrics and the log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability.arrays import weighted_sum
from flwr_ppcdl.reliability.estimate import ReliabilityResult, estimate_reliability
from flwr_ppcdl.reliability.memory import EvidenceMemory, ReliabilityMemory
from flwr_ppcdl.reliability.options import ReliabilityOptions

LOGGER = logging.getLogger("flwr")


@dataclass
class ScoredView:
    """A second, known-law view of a participant, scored beside its parameters.

    A functional-mechanism participant that shares its (already private) release gives the server
    statistics whose privacy-noise law is public (e.g. its class means,
    :func:`~flwr_ppcdl.reliability.noise_law.class_means`): the calibrated estimator tests them
    under that law, which parameters cannot be (the server never sees the noise a local solve
    propagated). Post-processing of the release: no privacy cost.

    Attributes
    ----------
    layers : list of ndarray
        The scored statistics (same shapes for every participant of a round).
    noise_variance : list of ndarray
        Their known privacy-noise variance, broadcastable to ``layers``.
    bounded_influence : bool
        Whether the energy test clips on this view (:func:`estimate_reliability`).
    """

    layers: list[NDArray[Any]]
    noise_variance: list[NDArray[Any]]
    bounded_influence: bool = True


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
    """What the reliability weighting decided in one round (node ids as ints).

    Attributes
    ----------
    round : int
    weights : dict[int, float]
        Final aggregation weight per valid node (sums to 1 when the model was updated).
    reliability : dict[int, float]
        Reliability factor in [0, 1] per valid node, before counts and caps.
    fedavg_share : dict[int, float]
        The node's share under plain sample-count weighting (after the count cap).
    excluded : dict[int, str]
        Nodes whose reply was not aggregated, and why.
    down_weighted : list[int]
        Nodes below half their FedAvg share.
    iterations : int
        Truth-discovery iterations run.
    model_updated : bool
        False when nothing valid arrived (the global model stays as it was).
    failures : int
        Error replies / failures the runtime reported (legacy API).
    evidence : dict[int, float]
        Calibrated estimator: accumulated evidence of unreliability per valid node (normal scale;
        weights shrink above ``Phi^-1(1 - false_alarm_rate)``, 2.33 at the default 1 %).
    undecidable : str or None
        Calibrated estimator: why the uploads could not decide this round (FedAvg's weights were
        kept), e.g. at least half of the participants disagree with the rest.
    """

    round: int
    weights: dict[int, float] = field(default_factory=dict)
    reliability: dict[int, float] = field(default_factory=dict)
    fedavg_share: dict[int, float] = field(default_factory=dict)
    excluded: dict[int, str] = field(default_factory=dict)
    down_weighted: list[int] = field(default_factory=list)
    iterations: int = 0
    model_updated: bool = False
    failures: int = 0
    evidence: dict[int, float] = field(default_factory=dict)
    undecidable: str | None = None


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
    options : ReliabilityOptions
        Every option (validated once); ``method="server_data"`` needs ``server_loss_fn``.
    """

    def __init__(self, options: ReliabilityOptions) -> None:
        if not isinstance(options, ReliabilityOptions):
            raise TypeError(f"options must be a ReliabilityOptions; got {type(options).__name__}")
        if options.method == "server_data" and options.server_loss_fn is None:
            raise ValueError("method='server_data' needs server_loss_fn (got None)")
        self.options = options
        rate = options.memory_rate
        self.memory: ReliabilityMemory | None = None
        self.evidence_memory: EvidenceMemory | None = None
        self.view_memory: EvidenceMemory | None = None  # the evidence of the release views (ScoredView)
        if rate is not None and options.method == "calibrated":
            self.evidence_memory = EvidenceMemory(rate)
            self.view_memory = EvidenceMemory(rate)
        elif rate is not None:
            self.memory = ReliabilityMemory(rate)
        self.global_arrays: list[NDArray[Any]] | None = None
        self.history: list[RoundReport] = []
        self.labels: dict[int, str] = {}  # node id -> how logs name it (e.g. "p3"); display only

    def remember_global(self, arrays: list[NDArray[Any]]) -> None:
        """Keep a copy of the arrays sent to clients this round."""
        self.global_arrays = [np.array(a, copy=True) for a in arrays]

    def aggregate(self, server_round: int, uploads: Sequence[Upload]) -> RoundOutcome:
        """Validate, weight and average the uploads of one round."""
        opts = self.options
        excluded = _pre_excluded(uploads)
        reference = self.global_arrays
        shapes = [tuple(a.shape) for a in reference] if reference is not None else None
        # Reliability is scored on deltas to the global model; the core subtracts the
        # reference on the scored coordinates only, so no K x P delta copy is made.
        updates = [[] if pos in excluded or up.arrays is None else list(up.arrays) for pos, up in enumerate(uploads)]
        server_losses = self._server_losses(uploads, excluded) if opts.method == "server_data" else None
        # Excluded uploads are given a placeholder the core rejects by shape.
        core_updates = [[] if pos in excluded else u for pos, u in enumerate(updates)]
        counts = [0 if pos in excluded else up.num_examples for pos, up in enumerate(uploads)]
        node_ids = [up.node_id for up in uploads]
        prior = self.memory.prior(node_ids) if self.memory is not None else None
        prior_evidence = self.evidence_memory.prior(node_ids) if self.evidence_memory is not None else None
        prior_rounds = self.evidence_memory.seen(node_ids) if self.evidence_memory is not None else None
        scored = self._score_views(uploads, excluded, counts) if opts.method == "calibrated" else None
        if scored is not None:  # two tests of each participant: Bonferroni, alpha / 2 each
            opts = opts.with_overrides(false_alarm_rate=opts.false_alarm_rate / 2)
        result = estimate_reliability(
            core_updates,
            counts,
            opts,
            external_factor=None if scored is None else scored.reliability,
            prior=prior,
            prior_evidence=prior_evidence,
            prior_rounds=prior_rounds,
            server_losses=server_losses,
            reference=reference if opts.use_deltas else None,
            expected_shapes=shapes,
        )
        for pos, reason in result.excluded.items():
            excluded.setdefault(pos, reason)
        for pos, message in sorted(result.capped.items()):
            LOGGER.warning("reliability round %d: node %s: %s", server_round, node_ids[pos], message)
        for pos, reason in sorted(excluded.items()):
            LOGGER.warning(
                "reliability round %d: excluded reply from node %s: %s", server_round, self._label(node_ids[pos]), reason
            )
        weights = result.weights
        included = [pos for pos in range(len(uploads)) if weights[pos] > 0 and pos not in excluded]
        arrays_out: list[NDArray[Any]] | None = None
        if included:
            w = np.zeros(len(uploads))
            w[included] = weights[included] / weights[included].sum()
            # sum_k w_k (x_k - g) + g == sum_k w_k x_k because the weights sum to 1
            arrays_out = weighted_sum(updates, w)
        valid_pos = [pos for pos in range(len(uploads)) if pos not in excluded]
        if self.memory is not None and included:
            self.memory.update([node_ids[p] for p in valid_pos], result.reliability[valid_pos])
        if self.evidence_memory is not None and included:
            self.evidence_memory.update([node_ids[p] for p in valid_pos], result.carried_evidence[valid_pos])
        if scored is not None:
            result = _with_view(result, scored, self.view_memory, node_ids, valid_pos, bool(included))
        report = self._report(server_round, node_ids, result, excluded, bool(included))
        return RoundOutcome(arrays_out, self._metrics(report, len(included)), included)

    def _score_views(
        self, uploads: Sequence[Upload], excluded: dict[int, str], counts: list[Any]
    ) -> ReliabilityResult | None:
        """The calibrated estimate on the uploads' release views, at half the false-alarm rate.

        Only uploads that carry a :class:`ScoredView` are scored (at least three are needed for a
        null); the others get factor 1 here and are judged by their parameters alone. ``None`` when
        fewer than three views arrived: the parameters are then tested at the full rate.
        """
        have = [p for p, up in enumerate(uploads) if p not in excluded and up.view is not None]
        if len(have) < 3:
            return None
        views = [uploads[p].view for p in have]
        assert all(v is not None for v in views)
        layers = [list(v.layers) for v in views if v is not None]
        noise = [list(v.noise_variance) for v in views if v is not None]
        ids = [uploads[p].node_id for p in have]
        memory = self.view_memory
        opts = self.options.with_overrides(false_alarm_rate=self.options.false_alarm_rate / 2)
        sub = estimate_reliability(
            layers, [counts[p] for p in have], opts, noise_variance=noise,
            bounded_influence=all(v.bounded_influence for v in views if v is not None),
            prior_evidence=None if memory is None else memory.prior(ids),
            prior_rounds=None if memory is None else memory.seen(ids),
        )
        n_up = len(uploads)
        full = ReliabilityResult(np.zeros(n_up), np.ones(n_up), np.zeros(n_up), np.full(n_up, np.nan),
                                 evidence=np.full(n_up, np.nan), carried_evidence=np.full(n_up, np.nan),
                                 round_evidence=np.full(n_up, np.nan), undecidable=sub.undecidable)
        for i, p in enumerate(have):
            if i in sub.excluded:  # a view the core cannot score: no view evidence, its parameters decide
                continue
            full.reliability[p] = sub.reliability[i]
            full.evidence[p] = sub.evidence[i]
            full.carried_evidence[p] = sub.carried_evidence[i]
        return full

    def _server_losses(self, uploads: Sequence[Upload], excluded: dict[int, str]) -> NDArray[np.float64]:
        losses = np.full(len(uploads), np.inf)
        loss_fn = self.options.server_loss_fn
        assert loss_fn is not None
        for pos, up in enumerate(uploads):
            if pos in excluded or up.arrays is None:
                continue
            try:
                losses[pos] = float(loss_fn(list(up.arrays)))
            except Exception as exc:  # noqa: BLE001 - a bad upload must not crash the run
                excluded[pos] = f"server loss failed ({type(exc).__name__}: {exc})"
        return losses

    def _report(
        self, server_round: int, node_ids: list[int], result: ReliabilityResult, excluded: dict[int, str], updated: bool
    ) -> RoundReport:
        valid = [p for p in range(len(node_ids)) if p not in excluded]
        report = RoundReport(
            round=server_round,
            weights={node_ids[p]: float(result.weights[p]) for p in valid},
            reliability={node_ids[p]: float(result.reliability[p]) for p in valid},
            fedavg_share={node_ids[p]: float(result.sample_weights[p]) for p in valid},
            excluded={node_ids[p]: reason for p, reason in excluded.items()},
            iterations=int(result.iterations),
            model_updated=updated,
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
        if report.undecidable is not None:
            LOGGER.warning("reliability round %d: undecidable: %s", server_round, report.undecidable)
        return report

    def _label(self, node: int) -> str:
        return self.labels.get(node, str(node))

    def _metrics(self, report: RoundReport, num_included: int) -> dict[str, float]:
        """Summary counts of the round (a fixed set of keys, whatever the number of nodes).

        Per-node weights are not metrics here (their keys would grow with the federation); the
        adapters add ``{prefix}weight/<node>`` only when asked (``per_node_metrics=True``).
        """
        p = self.options.metrics_prefix
        metrics: dict[str, float] = {
            f"{p}num-included": float(num_included),
            f"{p}num-excluded": float(len(report.excluded)),
            f"{p}num-down-weighted": float(len(report.down_weighted)),
        }
        w = np.array(list(report.weights.values()))
        if w.size:
            metrics[f"{p}min"] = float(w.min())
            metrics[f"{p}median"] = float(np.median(w))
            metrics[f"{p}max"] = float(w.max())
        return metrics


def _with_view(
    result: ReliabilityResult, scored: ReliabilityResult, memory: EvidenceMemory | None, node_ids: list[int],
    valid_pos: list[int], updated: bool,
) -> ReliabilityResult:
    """Fold the release views' verdict into the parameters' result (its weights already include it).

    The reported evidence is the larger of the two (both on the normal scale at the same threshold),
    the reliability factor their product (as in the weights); an undecidable view is reported.
    """
    if memory is not None and updated:
        seen = [p for p in valid_pos if np.isfinite(scored.carried_evidence[p])]
        memory.update([node_ids[p] for p in seen], scored.carried_evidence[seen])
    both = np.fmax(result.evidence, scored.evidence)
    result.evidence = np.where(np.isfinite(result.evidence), both, result.evidence)
    if scored.undecidable is not None:
        view = f"release views: {scored.undecidable}"
        result.undecidable = view if result.undecidable is None else f"{result.undecidable}; {view}"
    return result


def _pre_excluded(uploads: Sequence[Upload]) -> dict[int, str]:
    """Uploads the adapter rejected, and repeated replies of one node.

    A node counts once per round: its first reply the adapter accepted is kept, every later reply
    of the same node id is excluded (and named in the warning), as is every reply the adapter
    rejected. Adapters give replies without a usable sender id distinct ids, so they are never
    taken for repeats of one another.
    """
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
