"""`RecordingStrategy`: what the server saw in each round, assembled in one place.

It wraps any Message-API strategy (as Flower's DP wrappers wrap) and forwards configuration and
aggregation unchanged; it only reads reply metadata and metrics (node id, partition id, ``fm-epsilon``,
``num-examples``), the inner strategy's weight history, and the server's own evaluation.

With a ``fedavg`` strategy (the App passes FedAvg of the run's protocol) it also aggregates the
same replies a second time, so that every round can be compared with what FedAvg would have made of
exactly those replies (post-processing of what was uploaded: no privacy cost). The FedAvg aggregation never
changes the run: its output is only evaluated, and an error in it is recorded, not raised.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from flwr_ppcdl import wire
from flwr_ppcdl.app.console import LOG, muted


@dataclass
class RoundRecord:
    """What the server saw in one round (public: replies' metadata and its own evaluation)."""

    round: int
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    replies: int = 0
    failures: int = 0
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> reply metrics
    weights: dict[str, float] = field(default_factory=dict)  # node id -> aggregation weight
    errors: list[str] = field(default_factory=list)  # the first error replies' reasons (up to 3)
    fedavg_metrics: dict[str, float] = field(default_factory=dict)  # FedAvg of the same replies

    @property
    def successes(self) -> int:
        """Replies that carried content (not errors)."""
        return self.replies - self.failures


class RecordingStrategy(Strategy):
    """Wraps a strategy and records every round (see the module docstring).

    Attributes
    ----------
    rounds : dict[int, RoundRecord]
    node_partition : dict[str, int]
        Node id -> the partition id its replies reported (bookkeeping, never trusted).
    """

    def __init__(self, inner: Strategy, fedavg: Strategy | None = None) -> None:
        self.inner = inner
        self.fedavg = fedavg
        self.fedavg_arrays: dict[int, ArrayRecord] = {}  # round -> FedAvg of that round's replies
        self.rounds: dict[int, RoundRecord] = {}
        self.node_partition: dict[str, int] = {}
        self._round_started = time.perf_counter()

    def _record(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord(server_round))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._round_started = time.perf_counter()
        if self.fedavg is not None:  # it keeps what was sent (a frozen body) as the inner does
            with muted():
                list(self.fedavg.configure_train(server_round, arrays, config, grid))
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self._record(server_round)
        record.replies = len(replies)
        record.failures = sum(1 for m in replies if m.has_error())
        for msg in replies:
            if msg.has_error():
                if len(record.errors) < 3:
                    record.errors.append(f"node {msg.metadata.src_node_id}: {msg.error.reason}")
                continue
            node = str(msg.metadata.src_node_id)
            try:
                metrics = msg.content[wire.METRICS]
                record.nodes[node] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            except (KeyError, TypeError, ValueError):
                record.nodes[node] = {}
            if wire.PARTITION_ID in record.nodes[node]:
                self.node_partition[node] = int(record.nodes[node][wire.PARTITION_ID])
        result = self.inner.aggregate_train(server_round, replies)
        record.weights = self._weights(record)
        if self.fedavg is not None:
            try:
                with muted():  # its warnings about these replies were the inner strategy's to give
                    arrays, _ = self.fedavg.aggregate_train(server_round, replies)
                if arrays is not None:
                    self.fedavg_arrays[server_round] = arrays
            except Exception as err:  # noqa: BLE001 - a comparison must never end the run
                LOG.debug("[ppcdl] round %d: the FedAvg aggregation of the same replies failed (%s: %s)", server_round, type(err).__name__, err)
        return result

    def record_evaluation(self, server_round: int, metrics: dict[str, float]) -> RoundRecord:
        """Attach the server's evaluation after round ``server_round`` and the round's wall time."""
        record = self._record(server_round)
        record.metrics = dict(metrics)
        record.seconds = time.perf_counter() - self._round_started
        return record

    def _weights(self, record: RoundRecord) -> dict[str, float]:
        history = getattr(self.inner, "reliability_history", None)
        if history:
            return {str(node): float(w) for node, w in history[-1].weights.items()}
        if type(self.inner) is FedAvg:  # plain FedAvg: weights are the sample shares
            total = sum(m.get(wire.NUM_EXAMPLES, 0.0) for m in record.nodes.values())
            return {k: m.get(wire.NUM_EXAMPLES, 0.0) / total for k, m in record.nodes.items()} if total else {}
        return {}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
