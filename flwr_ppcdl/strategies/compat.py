"""Reliability-weighted FedAvg for Flower's legacy strategy API (``flwr.server.strategy``).

For projects built on ``NumPyClient``. Same reliability core and options as
:class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import fields
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from flwr_ppcdl import wire
from flwr_ppcdl.reliability import (
    ReliabilityAggregator,
    ReliabilityOptions,
    RoundReport,
    Upload,
)

from ._arrays import as_sent_dtype, npy_view
from ._dp import cap_weights, dp_weight_cap
from .message_api import check_frozen_keys, check_weight_cap
from .releases import attach_release_views, read_release

__all__ = ["ReliabilityWeightedFedAvg"]


class ReliabilityWeightedFedAvg(FedAvg):
    """Legacy-API FedAvg whose weights combine sample counts with estimated reliability.

    Accepts every keyword argument of :class:`flwr.server.strategy.FedAvg` plus the reliability
    options (``options=ReliabilityOptions(...)`` and/or the options as keywords), exactly as
    :class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`, and:

    frozen_keys : collection of int, optional
        Positions (in the ``Parameters`` list) of arrays the server keeps as it sent them; never
        read from results.
    per_node_metrics : bool, default False
        Add ``{prefix}weight/<node id>`` per node to the fit metrics.
    weight_cap : float in (0, 1], optional
        As in the Message-API class (under Flower's DP wrappers: ``method="uniform"`` only).
    expected_release, score_releases
        As in the Message-API class: a result whose metrics carry the participant's release
        (``wire.FM_RELEASE``, what :class:`~flwr_ppcdl.clients.FunctionalMechanismNumPyClient` sends
        with ``share_statistics=True``) is also scored on that release's known-law view.

    Node ids are the clients' ``ClientProxy.node_id`` (falling back to ``int(cid)``; a proxy with
    neither, e.g. a test double, counts as its own node). ``reliability_history`` holds one
    :class:`~flwr_ppcdl.reliability.RoundReport` per round.
    """

    def __init__(
        self,
        *,
        options: ReliabilityOptions | None = None,
        frozen_keys: Collection[int] | None = None,
        per_node_metrics: bool = False,
        weight_cap: float | None = None,
        expected_release: wire.ReleaseExpectation | None = None,
        score_releases: bool = True,
        **kwargs: Any,
    ) -> None:
        known = {f.name for f in fields(ReliabilityOptions)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in known}
        super().__init__(**kwargs)
        self._reliability = ReliabilityAggregator(ReliabilityOptions.resolve(options, **overrides))
        frozen = check_frozen_keys(frozen_keys)
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in frozen):
            raise ValueError(f"frozen_keys are positions (ints >= 0) in the legacy API; got {sorted(map(repr, frozen))}")
        self.frozen_keys: frozenset[int] = frozen
        self.per_node_metrics = bool(per_node_metrics)
        self.weight_cap = check_weight_cap(weight_cap)
        self.expected_release = expected_release
        self.score_releases = bool(score_releases)
        self._sent: list[Any] | None = None

    @property
    def options(self) -> ReliabilityOptions:
        """The reliability options in force."""
        return self._reliability.options

    def __repr__(self) -> str:
        """Short description."""
        return f"ReliabilityWeightedFedAvg(accept_failures={self.accept_failures}, {self._reliability.options.summary()})"

    @property
    def reliability_history(self) -> list[RoundReport]:
        """Per-round weights, reliability factors and exclusions."""
        return self._reliability.history

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Configure training as FedAvg does, remembering the global parameters sent (refuses a
        data-dependent weighting under Flower's DP wrappers, as the Message-API class does)."""
        dp_weight_cap(self, self.weight_cap, self.options.method)
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._sent = parameters_to_ndarrays(parameters)
        self._reliability.remember_global([a for i, a in enumerate(self._sent) if i not in self.frozen_keys])
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Reliability-weighted average of the valid results; bad results are excluded."""
        if not results:
            return None, {}
        if not self.accept_failures and failures:
            return None, {}
        frozen = self.frozen_keys if self._sent is not None else frozenset()
        dtypes = None if self._sent is None else [a.dtype for i, a in enumerate(self._sent) if i not in frozen]
        uploads = [_to_upload(proxy, res, pos, frozen, dtypes) for pos, (proxy, res) in enumerate(results)]
        if self.score_releases and self.options.method == "calibrated":
            attach_release_views(uploads, _shared_releases(results, uploads, self.expected_release), self.expected_release)
        log(INFO, "aggregate_fit: %d results, %d failures", len(results), len(failures))
        outcome = self._reliability.aggregate(server_round, uploads)
        report = self._reliability.history[-1]
        report.failures = len(failures)
        arrays = outcome.arrays
        cap, source = dp_weight_cap(self, self.weight_cap, self.options.method)
        if cap is not None and arrays is not None and report.aggregate == "weighted":
            arrays = cap_weights(self._reliability, server_round, outcome, uploads, cap, source,
                                 uniform=self.options.method == "uniform", needs="configure_fit (the parameters sent)").arrays
        metrics: dict[str, Scalar] = {}
        if outcome.included and self.fit_metrics_aggregation_fn is not None:
            try:
                fit_metrics = [(results[p][1].num_examples, results[p][1].metrics) for p in outcome.included]
                metrics.update(self.fit_metrics_aggregation_fn(fit_metrics))
            except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
                log(INFO, "aggregate_fit: client metrics not aggregated (%s)", exc)
        metrics.update(self._reliability.metrics(report, len(outcome.included)))
        if self.per_node_metrics:
            prefix = self.options.metrics_prefix
            metrics.update({f"{prefix}weight/{node}": float(w) for node, w in report.weights.items()})
        if arrays is None:
            return None, metrics
        if dtypes is not None:  # the dtypes the server sent, whatever the replies' were
            arrays = [as_sent_dtype(np.asarray(a), dtype) for a, dtype in zip(arrays, dtypes, strict=True)]
        if frozen:
            assert self._sent is not None
            values = iter(arrays)
            arrays = [self._sent[i] if i in frozen else next(values) for i in range(len(self._sent))]
        return ndarrays_to_parameters(arrays), metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """FedAvg's weighted loss, without results whose count is not positive or whose loss is not
        finite (excluded with a warning, where FedAvg would divide by zero or average a NaN)."""
        good = []
        for proxy, res in results:
            n, loss = res.num_examples, res.loss
            if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 < n < math.inf or not math.isfinite(loss):
                log(WARNING, "aggregate_evaluate: excluded result of node %s (num_examples=%r, loss=%r)",
                    _node_id(proxy, -1), n, loss)
            else:
                good.append((proxy, res))
        if results and not good:
            return None, {}
        return super().aggregate_evaluate(server_round, good, failures)


def _node_id(proxy: Any, pos: int) -> int:
    """``proxy.node_id``, else ``int(proxy.cid)``, else ``-(pos + 1)`` (its own node)."""
    node_id = getattr(proxy, "node_id", None)
    if isinstance(node_id, (int, np.integer)) and not isinstance(node_id, bool):
        return int(node_id)
    cid = getattr(proxy, "cid", None)
    if isinstance(cid, str) and cid.strip().lstrip("-").isdigit():
        return int(cid)
    return -(pos + 1)


def _to_upload(
    proxy: ClientProxy, res: FitRes, pos: int, frozen: frozenset[int], dtypes: list[Any] | None = None
) -> Upload:
    """Convert one legacy result (in the ``dtypes`` sent, when known); never raises (untrusted input)."""
    node_id = _node_id(proxy, pos)
    try:
        arrays = _parameters_view(res.parameters)
        if frozen:
            arrays = [a for i, a in enumerate(arrays) if i not in frozen]
        if dtypes is not None and len(arrays) == len(dtypes):  # a count mismatch is the aggregator's to report
            arrays = [as_sent_dtype(a, dtype) for a, dtype in zip(arrays, dtypes, strict=True)]
    except Exception as exc:  # noqa: BLE001
        return Upload(node_id, None, 0, f"unreadable parameters ({type(exc).__name__}: {exc})")
    count = res.num_examples
    if isinstance(count, bool) or not isinstance(count, (int, float)):
        return Upload(node_id, arrays, 0, f"num_examples is not a number: {count!r}")
    return Upload(node_id, arrays, count)


def _shared_releases(
    results: list[tuple[ClientProxy, FitRes]], uploads: list[Upload], expected: wire.ReleaseExpectation | None
) -> dict[int, Any]:
    """Position -> the release each accepted result shared in its metrics (``wire.FM_RELEASE``, JSON
    text: legacy metrics allow strings); a bad one rejects its upload, with the reason."""
    out: dict[int, Any] = {}
    for pos, ((_, res), up) in enumerate(zip(results, uploads, strict=True)):
        try:
            text = None if up.reason is not None else (res.metrics or {}).get(wire.FM_RELEASE)
            if text is not None:
                out[pos] = read_release(text, up.num_examples, expected)
        except Exception as exc:  # noqa: BLE001 - untrusted content
            up.reason = f"bad {wire.FM_RELEASE}: {exc}"
    return out


def _parameters_view(parameters: Parameters) -> list[Any]:
    """Read-only zero-copy views of ``.npy`` tensors; ``parameters_to_ndarrays`` otherwise."""
    if parameters.tensor_type == "numpy.ndarray":
        try:
            return [npy_view(t) for t in parameters.tensors]
        except ValueError:
            pass  # let np.load report what is wrong with the bytes
    return parameters_to_ndarrays(parameters)
