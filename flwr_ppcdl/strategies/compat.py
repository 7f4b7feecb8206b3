"""Reliability-weighted FedAvg for Flower's legacy strategy API (``flwr.server.strategy``).

For projects built on ``NumPyClient``. Same reliability core and options as
:class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`.
"""

from __future__ import annotations

from dataclasses import fields
from logging import INFO
from typing import Any

from flwr.common import (
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

from flwr_ppcdl.reliability import ReliabilityAggregator, ReliabilityOptions, RoundReport, Upload

from ._arrays import npy_view

__all__ = ["ReliabilityWeightedFedAvg"]


class ReliabilityWeightedFedAvg(FedAvg):
    """Legacy-API FedAvg whose weights combine sample counts with estimated reliability.

    Accepts every keyword argument of :class:`flwr.server.strategy.FedAvg` plus the reliability
    options (``options=ReliabilityOptions(...)`` and/or the options as keywords), exactly as
    :class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`.

    Node ids are the clients' ``ClientProxy.node_id`` (falling back to ``int(cid)``).
    ``reliability_history`` holds one :class:`~flwr_ppcdl.reliability.RoundReport` per round.
    """

    def __init__(self, *, options: ReliabilityOptions | None = None, **kwargs: Any) -> None:
        known = {f.name for f in fields(ReliabilityOptions)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in known}
        super().__init__(**kwargs)
        self._reliability = ReliabilityAggregator(ReliabilityOptions.resolve(options, **overrides))

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
        """Configure training as FedAvg does, remembering the global parameters sent."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._reliability.remember_global(parameters_to_ndarrays(parameters))
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
        uploads = [_to_upload(proxy, res) for proxy, res in results]
        log(INFO, "aggregate_fit: %d results, %d failures", len(results), len(failures))
        outcome = self._reliability.aggregate(server_round, uploads)
        self._reliability.history[-1].failures = len(failures)
        metrics: dict[str, Scalar] = {}
        if outcome.included and self.fit_metrics_aggregation_fn is not None:
            try:
                fit_metrics = [(results[p][1].num_examples, results[p][1].metrics) for p in outcome.included]
                metrics.update(self.fit_metrics_aggregation_fn(fit_metrics))
            except Exception as exc:  # noqa: BLE001 - client metrics are untrusted input
                log(INFO, "aggregate_fit: client metrics not aggregated (%s)", exc)
        metrics.update(outcome.metrics)
        if outcome.arrays is None:
            return None, metrics
        return ndarrays_to_parameters(outcome.arrays), metrics


def _to_upload(proxy: ClientProxy, res: FitRes) -> Upload:
    """Convert one legacy result; never raises (untrusted input)."""
    node_id = getattr(proxy, "node_id", None)
    if node_id is None:
        try:
            node_id = int(proxy.cid)
        except (TypeError, ValueError):
            node_id = abs(hash(proxy.cid)) % (2**62)
    try:
        arrays = _parameters_view(res.parameters)
    except Exception as exc:  # noqa: BLE001
        return Upload(int(node_id), None, 0, f"unreadable parameters ({type(exc).__name__}: {exc})")
    count = res.num_examples
    if isinstance(count, bool) or not isinstance(count, (int, float)):
        return Upload(int(node_id), arrays, 0, f"num_examples is not a number: {count!r}")
    return Upload(int(node_id), arrays, count)


def _parameters_view(parameters: Parameters) -> list[Any]:
    """Read-only zero-copy views of ``.npy`` tensors; ``parameters_to_ndarrays`` otherwise."""
    if parameters.tensor_type == "numpy.ndarray":
        try:
            return [npy_view(t) for t in parameters.tensors]
        except ValueError:
            pass  # let np.load report what is wrong with the bytes
    return parameters_to_ndarrays(parameters)
