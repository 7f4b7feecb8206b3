"""Composition with Flower's differential-privacy wrappers (both API generations).

Flower's fixed- and adaptive-clipping wrappers (``DifferentialPrivacy{Server,Client}Side{Fixed,
Adaptive}Clipping``, legacy ``DPFedAvg{Fixed,Adaptive}``) add Gaussian noise of standard deviation
``noise_multiplier * clipping_norm / num_sampled_clients`` to the aggregate. That calibration assumes
each client moves the aggregate by at most ``clipping_norm / num_sampled_clients``: every client
weighs at most ``1 / num_sampled_clients``. A reliability-weighted strategy may give one client up
to ``max_share`` (0.5): the guarantee the wrapper states would then be overstated by up to
``max_share * num_sampled_clients``.

The strategies therefore cap every client's weight at ``1 / num_sampled_clients`` when such a
wrapper drives them (found on the call stack: the wrappers call the inner strategy directly), and do
not hand the weight they take away to the other clients: it stays on the global model the round
started from (DP-FedAvg's fixed-denominator estimator). Each client's clipped update then moves the
aggregate by at most ``clipping_norm / num_sampled_clients`` and the wrapper's noise gives exactly
the guarantee it states; down-weighting an unreliable client shortens the step instead of
amplifying the others.
"""

from __future__ import annotations

import inspect
from typing import Any

_WRAPPER_MODULES = (
    "flwr.serverapp.strategy.dp_fixed_clipping",
    "flwr.serverapp.strategy.dp_adaptive_clipping",
    "flwr.server.strategy.dp_fixed_clipping",
    "flwr.server.strategy.dp_adaptive_clipping",
    "flwr.server.strategy.dpfedavg_fixed",
    "flwr.server.strategy.dpfedavg_adaptive",
)


def is_flower_dp_wrapper(obj: Any) -> bool:
    """Whether ``obj`` is one of Flower's DP strategy wrappers (any generation)."""
    return type(obj).__module__ in _WRAPPER_MODULES and hasattr(obj, "num_sampled_clients")


def _wraps(owner: Any, strategy: Any) -> bool:
    """Whether ``strategy`` is reachable from ``owner`` through ``.strategy``/``.inner`` links."""
    seen: set[int] = set()
    current = owner
    while current is not None and id(current) not in seen:
        if current is strategy:
            return True
        seen.add(id(current))
        current = getattr(current, "strategy", None) or getattr(current, "inner", None)
    return False


def dp_wrapper_driving(strategy: Any, depth: int = 12) -> Any | None:
    """The Flower DP wrapper around ``strategy`` that is calling it now, if any.

    Walks at most ``depth`` frames up the call stack.
    """
    frame = inspect.currentframe()
    try:
        current = frame.f_back if frame is not None else None
        for _ in range(depth):
            if current is None:
                return None
            owner = current.f_locals.get("self")
            if owner is not None and owner is not strategy and is_flower_dp_wrapper(owner) and _wraps(owner, strategy):
                return owner
            current = current.f_back
        return None
    finally:
        del frame


def dp_weight_cap(strategy: Any, explicit: float | None) -> tuple[float | None, str | None]:
    """The weight cap in force: ``explicit``, or ``1 / num_sampled_clients`` of a driving DP
    wrapper (the smaller when both), and a description of where it comes from."""
    wrapper = dp_wrapper_driving(strategy)
    if wrapper is None:
        return explicit, None if explicit is None else "weight_cap"
    try:
        sampled = int(wrapper.num_sampled_clients)
    except (TypeError, ValueError):
        return explicit, None
    implied = 1.0 / max(sampled, 1)
    cap = implied if explicit is None else min(explicit, implied)
    return cap, f"{type(wrapper).__name__}(num_sampled_clients={sampled})"
