"""Tiny numpy clients for the strategy tests (Message API and legacy NumPyClient).

Linear least-squares regression: each node holds a seeded shard of y = X @ w_true + noise;
a node's index (partition-id) decides whether its targets are replaced by noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from flwr_ppcdl.app.grid import InProcessGrid

DIM = 5
W_TRUE = np.linspace(-1.0, 1.0, DIM)


def shard(partition_id: int, unreliable: bool, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Seeded data of one node; unreliable nodes get random targets."""
    rng = np.random.default_rng(100 + partition_id)
    x = rng.normal(size=(n, DIM))
    y = x @ W_TRUE + 0.05 * rng.normal(size=n)
    if unreliable:
        y = rng.normal(scale=3.0, size=n)
    return x, y


def local_step(w: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float = 0.1, steps: int = 5) -> np.ndarray:
    """A few full-batch gradient steps on the squared loss."""
    w = w.copy()
    for _ in range(steps):
        w -= lr * x.T @ (x @ w - y) / len(y)
    return w


def make_message_app(unreliable_ids: frozenset[int] = frozenset()) -> ClientApp:
    """Message-API ClientApp; partitions in ``unreliable_ids`` get random targets."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        x, y = shard(pid, pid in unreliable_ids)
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        w_new = local_step(w, x, y)
        content = RecordDict(
            {
                "arrays": ArrayRecord([w_new]),
                "metrics": MetricRecord({"num-examples": len(y), "partition-id": pid}),
            }
        )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        x, y = shard(pid, False)
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        mse = float(np.mean((x @ w - y) ** 2))
        content = RecordDict({"metrics": MetricRecord({"num-examples": len(y), "mse": mse})})
        return Message(content, reply_to=msg)

    return app


class LinearNumPyClient(NumPyClient):
    """Legacy client for the same task."""

    def __init__(self, partition_id: int, unreliable: bool) -> None:
        self.partition_id = partition_id
        self.x, self.y = shard(partition_id, unreliable)

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [np.zeros(DIM)]

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        return [local_step(parameters[0], self.x, self.y)], len(self.y), {"partition-id": self.partition_id}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        mse = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return mse, len(self.y), {"mse": mse}


def make_legacy_app(unreliable_ids: frozenset[int] = frozenset()) -> ClientApp:
    """Legacy ClientApp built from ``LinearNumPyClient``."""

    def client_fn(context: Context) -> Any:
        pid = int(context.node_config["partition-id"])
        return LinearNumPyClient(pid, pid in unreliable_ids).to_client()

    return ClientApp(client_fn=client_fn)


def instruction(node_id: int) -> Message:
    """A train instruction to ``node_id`` as the grid would deliver it, for forging its reply."""
    InProcessGrid(lambda m, c: m, node_ids=[node_id])  # sets Flower's task identity if unset
    ins = Message(RecordDict({"config": ConfigRecord()}), node_id, "train")
    ins.metadata.__dict__["_message_id"] = f"m{node_id}"
    ins.metadata.__dict__["_src_node_id"] = 0
    return ins
