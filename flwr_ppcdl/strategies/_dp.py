"""Composition with Flower's differential-privacy wrappers (both API generations).

Flower's fixed- and adaptive-clipping wrappers (``DifferentialPrivacy{Server,Client}Side{Fixed,
Adaptive}Clipping``, legacy ``DPFedAvg{Fixed,Adaptive}``) add Gaussian noise of standard deviation
``noise_multiplier * clipping_norm / num_sampled_clients`` to the aggregate. That calibration is a
client-level guarantee only if replacing one client's (clipped) update moves the aggregate by at
most ``clipping_norm / num_sampled_clients``.

Capping every weight at ``1 / num_sampled_clients`` is not enough for a reliability-weighted
average: its weights are computed from *every* upload, so replacing one client's update can move
every other client's weight too (the calibrated estimator re-fits the honest majority; server-data
scores and claimed counts are relative to the round). One client's influence is then bounded only
by ``clipping_norm`` -- up to ``num_sampled_clients`` times what the wrapper's noise covers -- and the
stated guarantee would be overstated by that factor.

So, under one of these wrappers (found on the call stack: they call the inner strategy directly):

* with ``method="uniform"`` the weights do not depend on the data: each valid reply weighs exactly
  ``1 / num_sampled_clients`` and the weight of missing or excluded replies stays on the global model
  the round started from (DP-FedAvg's fixed denominator; exclusion looks at one reply alone). One
  client then moves the aggregate by at most ``clipping_norm / num_sampled_clients``: the wrapper's
  guarantee holds exactly as stated;
* any data-dependent weighting (the calibrated estimator, server data, claimed counts) is refused with an
  error that says why, at the first ``configure_train``, before anything is sent.

Flower's accounted mode (``accountant=...``) refuses every strategy that overrides
``aggregate_train``, this one included, in the wrapper's constructor.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from flwr_ppcdl.reliability import ReliabilityAggregator, RoundOutcome, Upload, weighted_sum

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


class DPCompositionError(ValueError):
    """A Flower DP wrapper drives a strategy whose weights depend on the uploads (see module)."""


def dp_weight_cap(strategy: Any, explicit: float | None, method: str) -> tuple[float | None, str | None]:
    """The weight cap in force, and where it comes from.

    Without a driving DP wrapper: ``explicit`` (may be None). With one: ``1 / num_sampled_clients``
    (or ``explicit`` when smaller) if ``method == "uniform"``; :class:`DPCompositionError` otherwise.
    """
    wrapper = dp_wrapper_driving(strategy)
    if wrapper is None:
        return explicit, None if explicit is None else "weight_cap"
    name = type(wrapper).__name__
    try:
        sampled = int(wrapper.num_sampled_clients)
    except (TypeError, ValueError):
        raise DPCompositionError(f"{name} has no usable num_sampled_clients") from None
    if method != "uniform":
        raise DPCompositionError(
            f"{name} sizes its noise for clients that each weigh 1/num_sampled_clients = 1/{sampled}, a "
            f"weighting fixed in advance. {type(strategy).__name__}(method={method!r}) computes every "
            f"client's weight from all the uploads, so replacing one client's update can move every "
            f"weight and that client's influence on the aggregate is bounded only by the clipping norm, "
            f"{sampled}x what the noise covers: the client-level guarantee would be overstated. Use "
            f"{type(strategy).__name__}(method='uniform') inside {name} (fixed weights 1/{sampled}; bad "
            f"replies still excluded), or drop the wrapper (functional-mechanism clients already give "
            f"record-level epsilon-DP)."
        )
    implied = 1.0 / max(sampled, 1)
    cap = implied if explicit is None else min(explicit, implied)
    return cap, f"{name}(num_sampled_clients={sampled})"


def cap_weights(aggregator: ReliabilityAggregator, server_round: int, outcome: RoundOutcome, uploads: Sequence[Upload],
                cap: float, source: str | None, *, uniform: bool, needs: str) -> RoundOutcome:
    """Re-aggregate ``outcome`` with every weight at most ``cap`` (from ``source``, :func:`dp_weight_cap`);
    what the cap removes stays on the global model. ``uniform``: the shares start equal (exactly
    data-independent, no memory prior either). Without the arrays sent this round (``needs`` names the
    call that records them) there is no update. Both API generations' adapters call this."""
    reference = aggregator.global_arrays
    report = aggregator.history[-1]
    log = logging.getLogger("flwr")
    if reference is None:
        log.warning("round %d: a weight cap needs %s; no update", server_round, needs)
        return RoundOutcome(None, outcome.metrics, [])
    included = outcome.included
    raw = np.ones(len(included)) if uniform else np.array([report.weights.get(uploads[p].node_id, 0.0) for p in included])
    capped = np.minimum(raw / raw.sum(), cap)
    kept = max(0.0, 1.0 - float(capped.sum()))
    arrays = weighted_sum([list(uploads[p].arrays or []) for p in included] + [reference], np.append(capped, kept))
    for p, w in zip(included, capped, strict=True):
        report.weights[uploads[p].node_id] = float(w)
    if kept > 1e-12:
        log.info("round %d: weights capped at %.4g (%s); %.3f of the step stays on the global model",
                 server_round, cap, source, kept)
    return RoundOutcome(arrays, aggregator.metrics(report, len(included)), included)
