"""`SummedStatisticsFedAvg`: pool the participants' released statistics instead of averaging models.

The paper's protocol shares model parameters; each participant's parameters are the minimiser of
its own noisy objective, and averaging them pays each participant's repair (regularisation) separately.
The released statistics are already differentially private, so the server may also sum them
(post-processing, no extra privacy cost) and solve the pooled objective once - measured on census2000
at epsilon = 1: R^2 .054 against .032 for parameter averaging (`benchmarks/protocol_comparison.py`).

Participants opt in with ``TrainerConfig(share_statistics=True)``: their train replies then carry a
``ConfigRecord`` ``wire.FM_RELEASE`` (the release as JSON) next to the usual ``arrays``/``metrics``, which
plain FedAvg ignores. Reliability: :func:`~flwr_ppcdl.reliability.estimate_reliability` scores what
:func:`release_scoring_view` extracts from each release (the cross term per example for
classification, the solution for regression) with its known noise law, and the statistics are
summed with keep-fractions
``c_k = r_k / max_j r_j``, ``r_k = w_k / p_k`` (``p_k`` = FedAvg's sample share): equal reliability
gives the plain sum, and no participant's noisy statistics are ever scaled up (measured: scaling
up, ``c_k = r_k``, amplified the noise of a few small participants at 100-1,000 participants).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwr_ppcdl import wire
from flwr_ppcdl.privacy import Release, combine_releases, linear_head_parameters
from flwr_ppcdl.reliability import (
    EvidenceMemory,
    ReliabilityOptions,
    RoundReport,
    estimate_reliability,
)
from flwr_ppcdl.reliability.noise_law import class_means, solution_noise_variance

log = logging.getLogger("flwr")


def release_noise_variance(release: Release) -> list[np.ndarray]:
    """The known noise variance of every entry of ``release.solve()`` (one array: the scored layer)."""
    rep = release.repaired()
    pinv = (rep.eigvecs / rep.eigvals) @ rep.eigvecs.T
    return [solution_noise_variance(release.task, pinv, release.solve(), release.noise_scale, release.num_classes)]


def release_scoring_view(release: Release) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What the reliability estimator scores for one release, and its exact noise variance.

    Classification: the participant's class means of the features (:func:`class_means`: K x d, one
    row per class, read from the cross term and the Gram matrix's bias column, with their noise
    variance) -- random labels collapse the rows, flipped labels permute them, label skew does not
    move them (features given the class are alike across participants), and no inverse of the noisy
    Gram matrix amplifies the noise (scoring the solutions ``K C~ G~^-1`` instead hid flipped labels
    at epsilon = 1, ``benchmarks/reliability_calibrated.py``).
    Regression: the solution ``w`` with its first-order noise variance (:func:`release_noise_variance`).
    """
    if release.task == "classification":
        means, variance = class_means(
            np.asarray(release.statistics["cross"], dtype=np.float64),
            np.asarray(release.statistics["gram"], dtype=np.float64),
            float(release.num_examples), float(release.noise_scale),
        )
        return [means], [variance]
    return [np.asarray(release.solve())], release_noise_variance(release)


def parse_release(msg: Message) -> Release:
    """The release a participant shared in its reply (raises with a reason when malformed)."""
    records = msg.content.config_records
    if wire.FM_RELEASE not in records:
        raise KeyError(f"no ConfigRecord {wire.FM_RELEASE!r} (participant did not share its statistics)")
    return wire.decode_release(records[wire.FM_RELEASE][wire.RELEASE_JSON])


class SummedStatisticsFedAvg(FedAvg):
    """FedAvg for the body and the metrics; the head is solved from the summed released statistics.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`flwr.serverapp.strategy.FedAvg`.
    reliability
        Weight the statistics by reliability (truth discovery on the participants' own solutions);
        ``False`` sums them plainly.
    options, **option_overrides
        The reliability options (:class:`~flwr_ppcdl.reliability.ReliabilityOptions`), as for
        ``ReliabilityWeightedFedAvg``.
    head_keys
        Names of the head's weight and bias in the ArrayRecord (default: its last two arrays).
    """

    def __init__(
        self,
        *args: Any,
        reliability: bool = True,
        options: ReliabilityOptions | None = None,
        head_keys: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        option_names = set(ReliabilityOptions.__dataclass_fields__)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in option_names}
        super().__init__(*args, **kwargs)
        self.reliability = reliability
        self.options = ReliabilityOptions.resolve(options, **overrides)
        self.head_keys = head_keys
        self.reliability_history: list[RoundReport] = []
        self._evidence = EvidenceMemory(self.options.memory_rate) if self.options.memory_rate is not None else None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        good = [m for m in replies if not m.has_error()]
        releases: list[Release] = []
        nodes: list[int] = []
        excluded: dict[int, str] = {}
        for msg in good:
            node = int(msg.metadata.src_node_id)
            try:
                releases.append(parse_release(msg))
                nodes.append(node)
            except (KeyError, ValueError, TypeError) as err:
                excluded[node] = f"bad or missing {wire.FM_RELEASE}: {err}"
                log.warning("[ppcdl] node %s excluded from the summed statistics: %s", node, err)
        try:
            arrays, metrics = super().aggregate_train(server_round, good)
        except Exception as err:  # noqa: BLE001 - an untrusted reply must not crash the run
            log.warning("[ppcdl] FedAvg part of the aggregation failed (%s); keeping the sent arrays", err)
            arrays, metrics = getattr(self, "_sent", None), None
        if not releases or arrays is None:
            self.reliability_history.append(RoundReport(server_round, excluded=excluded))
            return arrays, metrics
        try:
            releases, nodes = _consistent(releases, nodes, excluded)
            counts = np.array([r.num_examples for r in releases], dtype=np.float64)
            shares = counts / counts.sum()
            evidence: dict[int, float] = {}
            undecidable = None
            if self.reliability and len(releases) > 1:
                weights, evidence, undecidable = self._reliability_weights(releases, nodes, counts)
            else:
                weights = shares
            # keep-fractions in [0, 1]: reliability only removes statistics, it never amplifies a
            # participant's (noisy) statistics above what it released
            ratio = weights / shares
            combined = combine_releases(releases, ratio / ratio.max())
            weight, bias = linear_head_parameters(combined.solve(), combined)
        except (ValueError, np.linalg.LinAlgError) as err:
            log.warning("[ppcdl] summing the statistics failed (%s); using FedAvg's head", err)
            self.reliability_history.append(RoundReport(server_round, excluded=excluded))
            return arrays, metrics
        keys = list(arrays.keys())
        weight_key, bias_key = self.head_keys or (keys[-2], keys[-1])
        arrays[weight_key] = Array(weight.astype(arrays[weight_key].numpy().dtype))
        arrays[bias_key] = Array(bias.astype(arrays[bias_key].numpy().dtype))
        self.reliability_history.append(
            RoundReport(
                server_round,
                weights=dict(zip(nodes, map(float, weights), strict=True)),
                fedavg_share=dict(zip(nodes, map(float, shares), strict=True)),
                excluded=excluded,
                model_updated=True,
                evidence=evidence,
                undecidable=undecidable,
            )
        )
        return arrays, metrics

    def _reliability_weights(
        self, releases: list[Release], nodes: list[int], counts: np.ndarray
    ) -> tuple[np.ndarray, dict[int, float], str | None]:
        """Weights from the participants' own solutions; the calibrated estimator also gets their noise law."""
        calibrated = self.options.method == "calibrated"
        if calibrated:
            views = [release_scoring_view(r) for r in releases]
            local, noise = [v[0] for v in views], [v[1] for v in views]
        else:  # the legacy estimator scores the participants' own solutions
            local, noise = [[np.asarray(r.solve())] for r in releases], None
        memory = self._evidence if calibrated else None
        result = estimate_reliability(
            local, counts, self.options, noise_variance=noise,
            prior_evidence=None if memory is None else memory.prior(nodes),
            prior_rounds=None if memory is None else memory.seen(nodes),
        )
        if result.undecidable is not None:
            log.warning("[ppcdl] reliability: %s", result.undecidable)
        evidence = {n: float(e) for n, e in zip(nodes, result.evidence, strict=True) if np.isfinite(e)}
        if memory is not None:
            memory.update(list(evidence), list(evidence.values()))
        if result.weights.sum() <= 0:  # nothing valid to score: the plain sum
            return counts / counts.sum(), evidence, result.undecidable
        return result.weights, evidence, result.undecidable


def _consistent(releases: list[Release], nodes: list[int], excluded: dict[int, str]) -> tuple[list[Release], list[int]]:
    """Keep the releases that agree with the majority's shape/bounds; exclude the others by node."""
    signature = [(r.task, r.num_classes, r.num_features, r.feature_bound, r.target_bound, r.neighbouring) for r in releases]
    majority = max(set(signature), key=signature.count)
    keep_r, keep_n = [], []
    for release, node, sig in zip(releases, nodes, signature, strict=True):
        if sig == majority:
            keep_r.append(release)
            keep_n.append(node)
        else:
            excluded[node] = f"release {sig} disagrees with the majority {majority}"
    return keep_r, keep_n
