"""Reliability-weighted FedAvg for Flower's Message API (``flwr.serverapp.strategy``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from flwr_ppcdl.reliability import ReliabilityAggregator, ReliabilityOptions, RoundReport, Upload

from ._arrays import npy_view


class ReliabilityWeightedFedAvg(FedAvg):
    """FedAvg whose weights combine sample counts with estimated reliability.

    Takes every argument of :class:`flwr.serverapp.strategy.FedAvg` plus the reliability options
    (keyword-only): either ``options=ReliabilityOptions(...)`` or the options themselves as keywords
    (``sharpness=4.0``), or both (keywords override). Every option is documented once, in
    :class:`~flwr_ppcdl.reliability.ReliabilityOptions`. Works with any ClientApp that replies with
    one ArrayRecord and one MetricRecord holding ``weighted_by_key``; composes with Flower's DP
    wrappers (``DifferentialPrivacyServerSideFixedClipping(strategy, ...)``).

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
        self._global_keys: list[str] | None = None

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
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure training as FedAvg does, remembering the global arrays sent."""
        messages = super().configure_train(server_round, arrays, config, grid)
        self._global_keys = list(arrays.keys())
        self._reliability.remember_global(arrays.to_numpy_ndarrays())
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Reliability-weighted average of the valid replies; bad replies are excluded."""
        replies = list(replies)
        uploads = [self._to_upload(msg) for msg in replies]
        n_err = sum(1 for u in uploads if u.reason is not None and u.reason.startswith("error reply"))
        log(INFO, "aggregate_train: received %d replies (%d with errors)", len(replies), n_err)
        outcome = self._reliability.aggregate(server_round, uploads)
        metrics = MetricRecord()
        if outcome.included:
            try:
                contents = [replies[p].content for p in outcome.included]
                metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
            except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
                log(INFO, "aggregate_train: client metrics not aggregated (%s)", exc)
                metrics = MetricRecord()
        for key, value in outcome.metrics.items():
            metrics[key] = value
        if outcome.arrays is None:
            return None, metrics
        keys = self._global_keys or [str(i) for i in range(len(outcome.arrays))]
        record = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(keys, outcome.arrays, strict=True)})
        return record, metrics

    def _to_upload(self, msg: Message) -> Upload:
        """Convert one reply; never raises (untrusted input)."""
        try:
            node_id = int(msg.metadata.src_node_id)
        except Exception:  # noqa: BLE001
            node_id = -1
        try:
            if msg.has_error():
                return Upload(node_id, None, 0, f"error reply ({msg.error.reason})")
            content = msg.content
            if self.arrayrecord_key in content.array_records:
                record = content.array_records[self.arrayrecord_key]
            elif len(content.array_records) == 1:
                record = next(iter(content.array_records.values()))
            else:
                return Upload(node_id, None, 0, f"expected one ArrayRecord, got {len(content.array_records)}")
            keys = self._global_keys
            if keys is not None and set(record.keys()) != set(keys):
                missing = sorted(set(keys) - set(record.keys()))
                extra = sorted(set(record.keys()) - set(keys))
                return Upload(node_id, None, 0, f"array keys differ (missing {missing}, unexpected {extra})")
            order = keys if keys is not None else list(record.keys())
            arrays = [_array_view(record[k]) for k in order]
            count: Any = None
            for metric_record in content.metric_records.values():
                if self.weighted_by_key in metric_record:
                    count = metric_record[self.weighted_by_key]
                    break
            if count is None:
                return Upload(node_id, arrays, 0, f"missing metric {self.weighted_by_key!r}")
            if isinstance(count, list) or isinstance(count, bool):
                return Upload(node_id, arrays, 0, f"metric {self.weighted_by_key!r} is not a number: {count!r}")
            return Upload(node_id, arrays, count)
        except Exception as exc:  # noqa: BLE001 - a malformed reply must not crash the run
            return Upload(node_id, None, 0, f"malformed reply ({type(exc).__name__}: {exc})")


def _array_view(array: Array) -> np.ndarray:
    """Read-only numpy view of an uploaded ``Array`` (no copy); ``Array.numpy()`` otherwise."""
    if array.stype == "numpy.ndarray":
        try:
            return npy_view(array.data)
        except ValueError:
            pass  # let np.load report what is wrong with the bytes
    return array.numpy()
