"""`SummedStatisticsFedAvg`: pool the participants' released statistics instead of averaging models.

The paper's protocol shares model parameters; each participant's parameters are the minimiser of
its own noisy objective, and averaging them pays each participant's repair (regularisation) separately.
The released statistics are already differentially private, so the server may also sum them
(post-processing, no extra privacy cost) and solve the pooled objective once - measured on census2000
at epsilon = 1: R^2 .054 against .032 for parameter averaging (`benchmarks/protocol_comparison.py`).

Participants opt in with ``TrainerConfig(share_statistics=True)``: their train replies then carry a
``ConfigRecord`` ``wire.FM_RELEASE`` (the release as JSON) next to the usual ``arrays``/``metrics``, which
plain FedAvg ignores. Reliability goes through the same round bookkeeping as the parameter strategies
(:meth:`~flwr_ppcdl.reliability.ReliabilityAggregator.weigh`): each release's known-law view
(:func:`~flwr_ppcdl.strategies.releases.release_view`) is scored, and the statistics are summed with
keep-fractions ``c_k = r_k / max_j r_j``, ``r_k = w_k / p_k`` (``p_k`` = FedAvg's sample share): equal
reliability gives the plain sum, and no participant's noisy statistics are ever scaled up (scaling up,
``c_k = r_k``, amplified the noise of a few small participants at 100-1,000 participants). A round
without a decidable honest majority solves the head from the entry-wise median of the releases'
per-record statistics (:func:`~flwr_ppcdl.strategies.releases.median_release`: bounded influence).

Untrusted releases. Every shared release is checked -- its metadata against the run's exact
calibration, every statistic (the Gram matrix's consistency included) against what its records and
its noise law allow -- by :func:`flwr_ppcdl.privacy.release_checks.check_release`, with the run's
:class:`~flwr_ppcdl.wire.ReleaseExpectation` when the strategy is given one; a release whose ``n`` exceeds ``count_cap`` times the round's
median is counted as ``count_cap`` times the median (its statistics are scaled down, as the
parameter strategy clips claimed counts). A release that fails is excluded with a warning naming the
node; nothing falls back silently and no exception leaves ``aggregate_train``. Only the head comes
from the statistics: every other array (the frozen public body) is kept exactly as sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from flwr_ppcdl import wire
from flwr_ppcdl.privacy import Release, combine_releases, linear_head_parameters
from flwr_ppcdl.reliability import ReliabilityOptions, RoundReport, Upload

from ._dp import DPCompositionError, dp_wrapper_driving
from .message_api import (
    ReliabilityWeightedFedAvg,
    _count,
    _has_error,
    reported_partition,
    sender_id,
)
from .releases import (
    carries_release,
    consistent_releases,
    median_release,
    parse_release,
    release_view,
)


class SummedStatisticsFedAvg(ReliabilityWeightedFedAvg):
    """The head is solved from the summed released statistics; every other array is kept as sent.

    A round in which no reply carries a release (ordinary, non-FM clients) is aggregated as
    :class:`~flwr_ppcdl.strategies.ReliabilityWeightedFedAvg` does (``reliability=False``: FedAvg
    weights), with a warning saying so: this strategy is meant for ``share_statistics=True`` clients.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~flwr_ppcdl.strategies.ReliabilityWeightedFedAvg` (and so of FedAvg).
    reliability
        Weight the statistics by reliability (the calibrated estimator on each release's known-law
        view); ``False`` sums them plainly.
    options, **option_overrides
        The reliability options (:class:`~flwr_ppcdl.reliability.ReliabilityOptions`).
    head_keys
        Names of the head's weight and bias in the ArrayRecord (default: its last two arrays).
    expected_release
        The run's public configuration (task, ``d``, ``K``, ε, bounds): every release must match it.
        Without it a release is checked against its own public fields and the round's majority.
    decoder
        How the pooled statistics become the head: ``"taylor"`` (closed form of the noisy Taylor
        objective) or ``"lda"`` (linear discriminant from the same statistics); see
        :meth:`flwr_ppcdl.privacy.Release.solve`.
    """

    def __init__(
        self,
        *args: Any,
        reliability: bool = True,
        options: ReliabilityOptions | None = None,
        head_keys: tuple[str, str] | None = None,
        expected_release: wire.ReleaseExpectation | None = None,
        decoder: str = "taylor",
        **kwargs: Any,
    ) -> None:
        option_names = set(ReliabilityOptions.__dataclass_fields__)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in option_names}
        resolved = ReliabilityOptions.resolve(options, **overrides)
        if not reliability:
            resolved = resolved.with_overrides(method="fedavg")
        if resolved.method == "server_data":  # its step weighs averaged parameters, which this strategy never forms
            raise ValueError("SummedStatisticsFedAvg sums releases; method='server_data' puts flags to a loss of averaged "
                             "parameters: use ReliabilityWeightedFedAvg(method='server_data') with protocol 'parameters'")
        super().__init__(*args, options=resolved, expected_release=expected_release, **kwargs)
        self.reliability = reliability
        self.head_keys = head_keys
        self.decoder = decoder

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """As the parent; refuses to run under one of Flower's DP wrappers: the pooled head is not
        a weighted average of clipped updates, so the wrapper's noise would not cover it."""
        wrapper = dp_wrapper_driving(self)
        if wrapper is not None:
            raise DPCompositionError(
                f"{type(wrapper).__name__} clips and noises averaged updates; SummedStatisticsFedAvg solves "
                "the head from the pooled released statistics, which that noise does not cover. Its "
                "participants' releases are already record-level epsilon-DP: drop the wrapper, or wrap "
                "ReliabilityWeightedFedAvg(method='uniform') instead."
            )
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sum the valid releases (reliability-weighted) and solve the pooled head; see the class."""
        replies = list(replies)
        if replies and all(_has_error(m) for m in replies):
            self.reliability_history.append(RoundReport(server_round, excluded={
                sender_id(m, p): "error reply" for p, m in enumerate(replies)}))
            return None, None
        if not any(carries_release(m) for m in replies):
            self._warn_once("no-release", (
                "[ppcdl] SummedStatisticsFedAvg: no reply carries an 'fm-release' (ordinary clients, or "
                "FM clients without share_statistics=True): aggregating the replies' parameters as "
                "ReliabilityWeightedFedAvg does instead of summing statistics"))
            log(INFO, "[ppcdl] round %d: no released statistics; parameter aggregation", server_round)
            return super().aggregate_train(server_round, replies)
        try:
            return self._aggregate_statistics(server_round, replies)
        except Exception as err:  # noqa: BLE001 - untrusted input must never end the run
            log(WARNING, "[ppcdl] round %d: summing the statistics failed (%s: %s); global model unchanged",
                server_round, type(err).__name__, err)
            self.reliability_history.append(RoundReport(server_round))
            return None, None

    def _aggregate_statistics(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        uploads, releases = self._release_uploads(server_round, replies)
        result = self._reliability.weigh(server_round, uploads)
        report = self._reliability.history[-1]
        kept = [p for p in range(len(uploads)) if p not in result.excluded]
        keys = list(self._sent.keys()) if self._sent is not None else None
        if not kept or keys is None:
            why = "no valid release" if keys is not None else "configure_train was not called (the body to keep)"
            log(WARNING, "[ppcdl] round %d: %s; the global model stays as it was", server_round, why)
            return None, self._summary(replies, report, [])
        chosen = [r for r in (releases[p] for p in kept) if r is not None]
        counts = np.array([r.num_examples for r in chosen], dtype=np.float64)
        shares = result.sample_weights[kept]
        if report.undecidable is not None:
            combined, keep = median_release(chosen), np.ones(len(kept))
            report.aggregate = "median"
            report.undecidable += f"; aggregate: the head solved from the entry-wise median of {len(kept)} releases"
            log(WARNING, "[ppcdl] round %d: %s (bounded influence)", server_round, report.undecidable)
        else:
            # keep-fractions in [0, 1]: reliability only removes statistics, never amplifies them; a claim
            # the count cap reduced counts its statistics scaled down to the capped count
            cap = self.options.count_cap
            clip = np.minimum(1.0, cap * float(np.median(counts)) / counts) if cap is not None else np.ones(len(kept))
            ratio = result.weights[kept] / np.maximum(shares, 1e-300)
            keep = clip * (ratio / ratio.max()) if ratio.max() > 0 else np.zeros(len(kept))
            if not np.any(keep > 0):
                log(WARNING, "[ppcdl] round %d: every release got weight 0; the global model stays as it was", server_round)
                return None, self._summary(replies, report, [])
            combined = combine_releases(chosen, keep)
            report.aggregate = "weighted"
            effective = keep * counts / float((keep * counts).sum())
            report.weights = {uploads[p].node_id: float(w) for p, w in zip(kept, effective, strict=True)}
            report.down_weighted = [n for n, w in report.weights.items() if w < 0.5 * report.fedavg_share[n]]
        weight, bias = linear_head_parameters(combined.solve(decoder=self.decoder), combined)
        weight_key, bias_key = self.head_keys or (keys[-2], keys[-1])
        assert self._sent is not None
        out = {k: self._sent[k] for k in keys}
        for key, value in ((weight_key, weight), (bias_key, bias)):
            sent = self._sent[key].numpy()
            if value.shape != sent.shape:
                raise ValueError(f"the pooled head {key!r} has shape {value.shape}, the model's is {sent.shape}")
            out[key] = Array(value.astype(sent.dtype))
        report.model_updated = True
        included = [p for p, k in zip(kept, keep, strict=True) if k > 0]
        return ArrayRecord(out), self._summary(replies, report, included)

    def _release_uploads(self, server_round: int, replies: list[Message]) -> tuple[list[Upload], list[Release | None]]:
        """One :class:`Upload` per reply (its release's known-law view, or the reason it is rejected),
        and the parsed releases (None where rejected)."""
        uploads: list[Upload] = []
        releases: list[Release | None] = []
        for pos, msg in enumerate(replies):
            node = sender_id(msg, pos)
            label = reported_partition(msg)
            if label is not None:
                self._reliability.labels[node] = label
            release = None
            reason = f"error reply ({msg.error.reason})" if _has_error(msg) else None
            if reason is None:
                try:
                    release = parse_release(msg, self.expected_release)
                    count = _count(msg.content, self.weighted_by_key)
                    if not isinstance(count, str) and count != release.num_examples:
                        raise ValueError(f"{self.weighted_by_key}={count!r} differs from the release's n={release.num_examples}")
                except ValueError as err:
                    reason, release = f"bad or missing {wire.FM_RELEASE}: {err}", None
            uploads.append(Upload(node, None, 0 if release is None else release.num_examples, reason))
            releases.append(release)
        good = [p for p, r in enumerate(releases) if r is not None]
        excluded: dict[int, str] = {}
        _, _, kept = consistent_releases([r for r in (releases[p] for p in good) if r is not None],
                                         [uploads[p].node_id for p in good], good, excluded, self.expected_release is None)
        for p in good:
            release = releases[p]
            if p not in kept or release is None:
                uploads[p].reason = excluded.get(uploads[p].node_id, "disagrees with the round's majority")
            else:
                uploads[p].view = release_view(release)
        return uploads, releases

    def _summary(self, replies: list[Message], report: RoundReport, included: list[int]) -> MetricRecord:
        metrics = MetricRecord()
        if included:
            try:
                metrics = self.train_metrics_aggr_fn([replies[p].content for p in included], self.weighted_by_key)
            except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
                log(INFO, "aggregate_train: client metrics not aggregated (%s)", exc)
                metrics = MetricRecord()
        for key, value in self._reliability.metrics(report, len(included)).items():
            metrics[key] = value
        if self.per_node_metrics:
            for node, weight in report.weights.items():
                metrics[f"{self.options.metrics_prefix}weight/{node}"] = float(weight)
        return metrics
