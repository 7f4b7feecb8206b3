"""Reliability-weighted FedAvg for Flower's legacy strategy API (``flwr.server.strategy``).

For projects built on ``NumPyClient``. Same reliability core and options as
:class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`.
"""

from __future__ import annotations

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

from ._aggregator import ReliabilityAggregator, ServerLossFn, Upload
from ._arrays import npy_view

__all__ = ["ReliabilityWeightedFedAvg"]


class ReliabilityWeightedFedAvg(FedAvg):
    """Legacy-API FedAvg whose weights combine sample counts with estimated reliability.

    Accepts every keyword argument of :class:`flwr.server.strategy.FedAvg` plus the
    reliability options of :class:`flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`
    (``method``, ``sharpness``, ``tolerance``, ``alignment``, ``sample_weighting``,
    ``count_cap``, ``max_share``, ``max_abs``, ``max_coordinates``, ``memory_rate``, ``use_deltas``,
    ``server_loss_fn``, ``metrics_prefix``), with the same defaults.

    Node ids are the clients' ``ClientProxy.node_id`` (falling back to ``int(cid)``).
    ``reliability_history`` holds one entry per round, as in the Message-API strategy.
    """

    def __init__(
        self,
        *,
        method: str = "truth_discovery",
        sharpness: float = 2.0,
        tolerance: float | None = None,
        alignment: bool = True,
        sample_weighting: str = "linear",
        count_cap: float | None = 10.0,
        max_share: float | None = 0.5,
        max_abs: float = 1e12,
        max_coordinates: int | None = 50_000,
        memory_rate: float | None = 0.5,
        use_deltas: bool = True,
        server_loss_fn: ServerLossFn | None = None,
        metrics_prefix: str = "reliability/",
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self._reliability = ReliabilityAggregator(
            method=method,
            sharpness=sharpness,
            tolerance=tolerance,
            alignment=alignment,
            sample_weighting=sample_weighting,
            count_cap=count_cap,
            max_share=max_share,
            max_abs=max_abs,
            max_coordinates=max_coordinates,
            memory_rate=memory_rate,
            use_deltas=use_deltas,
            server_loss_fn=server_loss_fn,
            metrics_prefix=metrics_prefix,
        )

    def __repr__(self) -> str:
        """Short description."""
        return f"ReliabilityWeightedFedAvg(accept_failures={self.accept_failures}, {self._reliability.options})"

    @property
    def reliability_history(self) -> list[dict[str, Any]]:
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
        self._reliability.history[-1]["failures"] = len(failures)
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
