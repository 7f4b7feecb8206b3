"""Reliability-weighted FedAvg for Flower's Message API (``flwr.serverapp.strategy``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from flwr_ppcdl import wire
from flwr_ppcdl.reliability import (
    ReliabilityAggregator,
    ReliabilityOptions,
    RoundOutcome,
    RoundReport,
    Upload,
)

from ._arrays import array_view, as_sent_dtype
from ._dp import cap_weights, dp_weight_cap
from .releases import attach_release_views, carries_release, read_release


class ReliabilityWeightedFedAvg(FedAvg):
    """FedAvg whose weights combine sample counts with estimated reliability.

    Takes every argument of :class:`flwr.serverapp.strategy.FedAvg` plus the reliability options
    (keyword-only): either ``options=ReliabilityOptions(...)`` or the options themselves as keywords
    (``sharpness=4.0``), or both (keywords override). Every option is documented once, in
    :class:`~flwr_ppcdl.reliability.ReliabilityOptions`. Works with any ClientApp that replies with
    one ArrayRecord and one MetricRecord holding ``weighted_by_key``.

    Like FedAvg it returns ``(None, None)`` when no reply carries content, keeps the arrays' names,
    dtypes and shapes (with or without a prior ``configure_train``), and adds only a fixed set of
    summary metrics (``{prefix}num-included``, ``num-excluded``, ``num-down-weighted``, ``min``,
    ``median``, ``max``). Unlike FedAvg it never lets one reply end the run: replies that cannot be
    aggregated (errors, NaN, wrong shapes or keys, a missing or non-positive count, a second reply of
    the same node) are excluded with a warning naming the node.

    Parameters
    ----------
    frozen_keys : collection of str, optional
        Names of arrays the server keeps exactly as it sent them (e.g. a frozen public body): they
        are never read from replies, and a reply may omit them. Only the other arrays are weighted
        and averaged.
    per_node_metrics : bool, default False
        Also add ``{prefix}weight/<node id>`` per node to the training metrics.
    weight_cap : float in (0, 1], optional
        No node weighs more than this; the weight taken away stays on the global model the round
        started from (fixed denominator). Under one of Flower's DP wrappers the strategy needs
        ``method="uniform"`` and then weighs each valid reply ``1 / num_sampled_clients`` (any other
        method is refused with the reason: :mod:`flwr_ppcdl.strategies._dp`).
    expected_release : wire.ReleaseExpectation, optional
        The run's public configuration (task, ``d``, ``K``, ε, bounds) that every shared release
        must match. Replies of functional-mechanism clients with ``share_statistics=True`` carry
        their release (``wire.FM_RELEASE``); the calibrated estimator then also tests its scoring view
        (class means, or target moments) under its known noise law, beside the parameters, each test
        at half the false-alarm rate (:class:`~flwr_ppcdl.reliability.ScoredView`). A reply whose
        release is malformed, disagrees with its claimed count, or (without an expectation) with
        the round's majority is excluded with the reason. Replies without a release are scored on
        their parameters alone.
    score_releases : bool, default True
        ``False`` ignores shared releases (parameters only, as for plain clients).

    Attributes
    ----------
    reliability_history : list of RoundReport
        One :class:`~flwr_ppcdl.reliability.RoundReport` per aggregated round (weights,
        reliability, FedAvg share, exclusions, ...), node ids as ints.
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        *,
        options: ReliabilityOptions | None = None,
        frozen_keys: Collection[str] | None = None,
        per_node_metrics: bool = False,
        weight_cap: float | None = None,
        expected_release: wire.ReleaseExpectation | None = None,
        score_releases: bool = True,
        **option_overrides: Any,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self._reliability = ReliabilityAggregator(ReliabilityOptions.resolve(options, **option_overrides))
        self.frozen_keys: frozenset[str] = check_frozen_keys(frozen_keys)
        self.per_node_metrics = bool(per_node_metrics)
        self.weight_cap = check_weight_cap(weight_cap)
        self.expected_release = expected_release
        self.score_releases = bool(score_releases)
        self._sent: ArrayRecord | None = None
        self._warned: set[str] = set()

    @property
    def options(self) -> ReliabilityOptions:
        """The reliability options in force."""
        return self._reliability.options

    @property
    def reliability_history(self) -> list[RoundReport]:
        """Per-round weights, reliability factors and exclusions (see class docstring)."""
        return self._reliability.history

    def summary(self) -> None:
        """Log the configuration."""
        log(INFO, "\t├──> Reliability weighting: %s", self._reliability.options.summary())
        if self.frozen_keys:
            log(INFO, "\t├──> Kept as sent (frozen, never read from replies): %s", sorted(self.frozen_keys))
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure training as FedAvg does, remembering the global arrays sent.

        Under one of Flower's DP wrappers with a data-dependent weighting this refuses the
        combination (``DPCompositionError``, a ``ValueError`` saying why; see ``_dp``).
        """
        dp_weight_cap(self, self.weight_cap, self.options.method)
        messages = super().configure_train(server_round, arrays, config, grid)
        self._sent = arrays
        self._reliability.remember_global([arrays[k].numpy() for k in self._trainable(list(arrays.keys()))])
        return messages

    # -- aggregation --------------------------------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Reliability-weighted average of the valid replies; bad replies are excluded."""
        replies = list(replies)
        keys = self._reference_keys(replies)
        uploads = [self._to_upload(msg, pos, keys) for pos, msg in enumerate(replies)]
        if self.score_releases and self.options.method == "calibrated":
            attach_release_views(uploads, self._shared_releases(replies, uploads), self.expected_release)
        self._learn_labels(replies, uploads)
        n_err = sum(1 for msg in replies if _has_error(msg))
        log(INFO, "aggregate_train: received %d replies (%d with errors)", len(replies), n_err)
        if not replies:
            self._reliability.history.append(RoundReport(server_round))
            return None, None
        outcome = self._reliability.aggregate(server_round, uploads)
        if n_err == len(replies):  # nothing but errors: FedAvg's answer
            return None, None
        cap, source = dp_weight_cap(self, self.weight_cap, self.options.method)
        if cap is not None and outcome.arrays is not None and self._reliability.history[-1].aggregate == "weighted":
            outcome = cap_weights(self._reliability, server_round, outcome, uploads, cap, source,
                                  uniform=self.options.method == "uniform", needs="configure_train (the arrays sent)")
        metrics = self._train_metrics(replies, outcome)
        if outcome.arrays is None or keys is None:
            return None, metrics
        return self._record(keys, outcome.arrays), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """FedAvg's weighted average of the evaluation metrics, without the replies that lack a
        positive ``weighted_by_key`` in exactly one MetricRecord (excluded with a warning, where
        FedAvg would raise and end the run)."""
        good = []
        for msg in replies:
            if _has_error(msg):
                continue
            problem = metric_problem(msg.content, self.weighted_by_key)
            if problem is None:
                good.append(msg.content)
            else:
                log(WARNING, "aggregate_evaluate: excluded reply from node %s: %s", self._label_of(msg), problem)
        if not good:
            return None
        try:
            return self.evaluate_metrics_aggr_fn(good, self.weighted_by_key)
        except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
            log(WARNING, "aggregate_evaluate: metrics not aggregated (%s: %s)", type(exc).__name__, exc)
            return None

    # -- helpers ------------------------------------------------------------------------------------

    def _trainable(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.frozen_keys] if self._sent is not None or not self.frozen_keys else keys

    def _reference_keys(self, replies: list[Message]) -> list[str] | None:
        """The arrays' names, in order: those sent in ``configure_train``, else the first good reply's."""
        if self._sent is not None:
            return list(self._sent.keys())
        for msg in replies:
            try:
                if not _has_error(msg):
                    record = self._array_record(msg.content)
                    if record is not None:
                        if self.frozen_keys:
                            self._warn_once("frozen", "frozen_keys need configure_train (the arrays sent); "
                                            "without it they are averaged like the others")
                        return list(record.keys())
            except Exception:  # noqa: BLE001 - untrusted
                continue
        return None

    def _array_record(self, content: RecordDict) -> ArrayRecord | None:
        records = content.array_records
        if self.arrayrecord_key in records:
            return records[self.arrayrecord_key]
        return next(iter(records.values())) if len(records) == 1 else None

    def _to_upload(self, msg: Message, pos: int, keys: list[str] | None) -> Upload:
        """Convert one reply; never raises (untrusted input)."""
        node_id = sender_id(msg, pos)
        try:
            if _has_error(msg):
                return Upload(node_id, None, 0, f"error reply ({msg.error.reason})")
            content = msg.content
            record = self._array_record(content)
            if record is None:
                return Upload(node_id, None, 0, f"expected one ArrayRecord, got {len(content.array_records)}")
            order = self._trainable(keys if keys is not None else list(record.keys()))
            allowed = set(keys if keys is not None else order)
            missing = sorted(set(order) - set(record.keys()))
            extra = sorted(set(record.keys()) - allowed)
            if missing or extra:
                return Upload(node_id, None, 0, f"array keys differ (missing {missing}, unexpected {extra})")
            arrays = [self._as_sent(k, _array_view(record[k])) for k in order]
            count = _count(content, self.weighted_by_key)
            if isinstance(count, str):
                return Upload(node_id, arrays, 0, count)
            return Upload(node_id, arrays, count)
        except Exception as exc:  # noqa: BLE001 - a malformed reply must not crash the run
            return Upload(node_id, None, 0, f"malformed reply ({type(exc).__name__}: {exc})")

    def _as_sent(self, key: str, array: np.ndarray) -> np.ndarray:
        """An upload or the aggregate in the dtype the server sent for ``key`` (kept as sent)."""
        return array if self._sent is None else as_sent_dtype(array, self._sent[key].dtype)

    def _shared_releases(self, replies: list[Message], uploads: list[Upload]) -> dict[int, Any]:
        """Position -> the release each accepted reply shared; a bad one rejects its upload (reason set)."""
        out: dict[int, Any] = {}
        for pos, (msg, up) in enumerate(zip(replies, uploads, strict=True)):
            if up.reason is not None or not carries_release(msg):
                continue
            try:
                text = msg.content.config_records[wire.FM_RELEASE].get(wire.RELEASE_JSON)
                out[pos] = read_release(text, up.num_examples, self.expected_release)
            except Exception as exc:  # noqa: BLE001 - untrusted content
                up.reason = f"bad {wire.FM_RELEASE}: {exc}"
        return out

    def _record(self, keys: list[str], aggregated: list[Any]) -> ArrayRecord:
        """The new global ArrayRecord: frozen arrays as sent, the others aggregated, in ``keys`` order."""
        values = iter(aggregated)
        trainable = set(self._trainable(keys))
        out: dict[str, Array] = {}
        for key in keys:
            if key in trainable:
                out[key] = Array(self._as_sent(key, np.asarray(next(values))))
            else:
                assert self._sent is not None
                out[key] = self._sent[key]
        return ArrayRecord(out)

    def _train_metrics(self, replies: list[Message], outcome: RoundOutcome) -> MetricRecord:
        metrics = MetricRecord()
        if outcome.included:
            try:
                metrics = self.train_metrics_aggr_fn([replies[p].content for p in outcome.included], self.weighted_by_key)
            except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
                log(INFO, "aggregate_train: client metrics not aggregated (%s)", exc)
                metrics = MetricRecord()
        for key, value in outcome.metrics.items():
            metrics[key] = value
        if self.per_node_metrics:
            prefix = self.options.metrics_prefix
            for node, weight in self._reliability.history[-1].weights.items():
                metrics[f"{prefix}weight/{node}"] = float(weight)
        return metrics

    def _learn_labels(self, replies: list[Message], uploads: list[Upload]) -> None:
        """Name nodes in logs by the partition id their replies report (display only, never trusted)."""
        for msg, up in zip(replies, uploads, strict=True):
            label = reported_partition(msg)
            if label is not None:
                self._reliability.labels[up.node_id] = label

    def _label_of(self, msg: Message) -> str:
        label = reported_partition(msg)
        return label if label is not None else str(sender_id(msg, -1))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log(WARNING, "%s", text)


# -- shared by the Message-API strategies -----------------------------------------------------------


def check_frozen_keys(keys: Collection[Any] | None) -> frozenset[Any]:
    """``frozen_keys`` as a frozenset (a lone string is refused: it is not a collection of names)."""
    if keys is None:
        return frozenset()
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"frozen_keys must be a collection of array names, not the string {keys!r}")
    return frozenset(keys)


def check_weight_cap(cap: float | None) -> float | None:
    """``weight_cap`` validated: a number in (0, 1] or None."""
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < float(cap) <= 1.0:
        raise ValueError(f"weight_cap={cap!r} must be a number in (0, 1] or None")
    return float(cap)


def sender_id(msg: Any, pos: int) -> int:
    """The reply's ``src_node_id``; a reply without an integer one (a test double) gets ``-(pos + 1)``,
    so that replies without distinct sender ids are never taken for one node's repeats."""
    raw = getattr(getattr(msg, "metadata", None), "src_node_id", None)
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, (bool, np.bool_)):
        return int(raw)
    return -(pos + 1)


def reported_partition(msg: Any) -> str | None:
    """``"p<id>"`` from the reply's ``partition-id`` metric, if it carries one (display only)."""
    try:
        if _has_error(msg):
            return None
        for record in msg.content.metric_records.values():
            value = record.get(wire.PARTITION_ID)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
                return f"p{int(value)}"
    except Exception:  # noqa: BLE001 - untrusted
        return None
    return None


def metric_problem(content: RecordDict, key: str) -> str | None:
    """Why a reply's metrics cannot weigh it (None when they can): exactly one MetricRecord with a
    positive finite number under ``key``."""
    try:
        records = list(content.metric_records.values())
    except Exception as exc:  # noqa: BLE001
        return f"unreadable metrics ({exc})"
    if len(records) != 1:
        return f"expected one MetricRecord, got {len(records)}"
    value = records[0].get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        return f"metric {key!r} must be a positive finite number; got {value!r}"
    return None


def _count(content: RecordDict, key: str) -> Any:
    """The claimed count, or a string saying why there is none."""
    for metric_record in content.metric_records.values():
        if key in metric_record:
            count = metric_record[key]
            if isinstance(count, (list, bool)):
                return f"metric {key!r} is not a number: {count!r}"
            return count
    return f"missing metric {key!r}"


def _has_error(msg: Any) -> bool:
    return bool(msg.has_error())


def _array_view(array: Array) -> np.ndarray:
    """Read-only numpy view of an uploaded ``Array`` (no copy; :func:`._arrays.array_view`);
    ``Array.numpy()`` where the bytes are not a plain ``.npy`` (it reports what is wrong with them)."""
    try:
        return array_view(array)
    except ValueError:
        return array.numpy()
