"""An in-process Flower ``Grid`` that drives a real ClientApp without Ray (sweeps, benchmarks, tests).

``InProcessGrid`` implements :class:`flwr.serverapp.Grid`: ``send_and_receive`` hands each
message (content deep-copied, as over the wire) to the ClientApp for its destination node,
in order, and returns the replies. An exception in the ClientApp becomes an error reply,
as in Flower's runtimes. Use it to run ``strategy.start(grid, ...)`` fast and
deterministically; keep a few tests on Flower's real runtimes to prove the wiring.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from flwr_ppcdl import wire

__all__ = ["InProcessGrid"]

_SERVER_NODE_ID = 0
_CLIENT_APP_EXCEPTION = 1  # mirrors flwr's ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class InProcessGrid(Grid):
    """A ``Grid`` whose nodes are ClientApp handlers called in this process.

    Parameters
    ----------
    client_app : ClientApp or callable
        Called as ``client_app(message, context)`` for every message; returns the reply.
    num_nodes : int
        Number of nodes (ignored when ``node_ids`` is given).
    node_ids : sequence of int, optional
        Explicit node ids; default ``1001, 1002, ...``.
    node_config : callable, optional
        ``f(index, node_id) -> dict`` giving each node's ``context.node_config``; the default
        is ``{"partition-id": index, "num-partitions": num_nodes}``, as in simulations.
    run_config : dict, optional
        ``context.run_config`` for every node.
    run_id : int, default 1
        Run id put in contexts and message metadata.

    Attributes
    ----------
    contexts : dict[int, Context]
        One persistent context per node (``context.state`` survives across rounds).
    sent : list[Message]
        Every message delivered (for assertions in tests).
    """

    def __init__(
        self,
        client_app: ClientApp | Callable[[Message, Context], Message],
        num_nodes: int = 2,
        *,
        node_ids: Sequence[int] | None = None,
        node_config: Callable[[int, int], dict[str, Any]] | None = None,
        run_config: dict[str, Any] | None = None,
        run_id: int = 1,
    ) -> None:
        ids = list(node_ids) if node_ids is not None else [1001 + i for i in range(num_nodes)]
        if not ids:
            raise ValueError(f"InProcessGrid needs at least one node (num_nodes={num_nodes!r})")
        if len(set(ids)) != len(ids):
            raise ValueError(f"node_ids must be unique, got {ids!r}")
        self.client_app = client_app
        self._node_ids = ids
        self._run = Run.create_empty(run_id)
        self.contexts: dict[int, Context] = {}
        for index, nid in enumerate(ids):
            cfg: dict[str, Any] = (
                node_config(index, nid)
                if node_config is not None
                else {wire.NODE_PARTITION_ID: index, wire.NODE_NUM_PARTITIONS: len(ids)}
            )
            self.contexts[nid] = Context(
                run_id=run_id,
                node_id=nid,
                node_config=cfg,  # type: ignore[arg-type]
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
        _ensure_task_identity(run_id)
        self.sent: list[Message] = []
        self._pending: dict[str, Message] = {}

    # -- Grid API -------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """Run information."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create an instruction message (prefer the ``Message`` constructor)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Node ids of this grid."""
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver messages now; replies wait to be pulled."""
        ids = []
        for msg in messages:
            reply = self._deliver(msg)
            self._pending[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies to the given message ids."""
        return [self._pending.pop(mid) for mid in list(message_ids) if mid in self._pending]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver every message to its node's ClientApp, in order; return the replies."""
        return list(self.pull_messages(self.push_messages(messages)))

    # -- internals ------------------------------------------------------------------------
    def _deliver(self, msg: Message) -> Message:
        dst = msg.metadata.dst_node_id
        if dst not in self.contexts:
            raise ValueError(f"message for unknown node {dst!r}; nodes are {self._node_ids}")
        # A fresh message per node with copied content, as if it had crossed the wire.
        delivered = Message(
            copy.deepcopy(msg.content),
            dst,
            msg.metadata.message_type,
            ttl=msg.metadata.ttl,
            group_id=msg.metadata.group_id,
        )
        message_id = uuid.uuid4().hex
        delivered.metadata.__dict__["_message_id"] = message_id
        delivered.metadata.__dict__["_src_node_id"] = _SERVER_NODE_ID
        delivered.metadata.__dict__["_run_id"] = self._run.run_id
        msg.metadata.__dict__["_message_id"] = message_id
        self.sent.append(delivered)
        try:
            reply = self.client_app(delivered, self.contexts[dst])
        except Exception as exc:  # noqa: BLE001 - mirrors the runtimes: errors become replies
            reply = Message(Error(_CLIENT_APP_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=delivered)
        return reply


def _ensure_task_identity(run_id: int) -> None:
    """Flower 1.42 stamps new messages with the process's task identity; outside a Flower
    runtime nobody sets it, so set it (only the parts that are unset)."""
    for name, value in (("run_id", run_id), ("node_id", _SERVER_NODE_ID), ("task_id", 0)):
        try:
            getattr(TaskIdentity, name)
        except RuntimeError:
            setattr(TaskIdentity, name, value)
