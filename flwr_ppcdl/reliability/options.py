"""`ReliabilityOptions`: every option of reliability-weighted aggregation, declared and validated once.

The estimator (:func:`~flwr_ppcdl.reliability.estimate_reliability`), the round bookkeeping
(:class:`~flwr_ppcdl.reliability.ReliabilityAggregator`) and every Flower adapter
(``ReliabilityWeightedFedAvg`` for both API generations, ``SummedStatisticsFedAvg``) take this one
frozen object; keyword overrides (``ReliabilityWeightedFedAvg(sharpness=4.0)``) go through
:meth:`ReliabilityOptions.with_overrides`, so a misspelt or invalid option fails at construction with
a ``ValueError``/``TypeError`` naming it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

METHODS: tuple[str, ...] = ("calibrated", "truth_discovery", "server_data", "fedavg", "uniform")
SAMPLE_WEIGHTINGS: tuple[str, ...] = ("linear", "sqrt", "uniform")
DEFAULT_TOLERANCE: dict[str, float] = {"truth_discovery": 1.5, "server_data": 1.2}
"""Default ``tolerance`` per method (``tolerance=None``); see :class:`ReliabilityOptions`."""

ServerLossFn = Callable[[list[NDArray[Any]]], float]


@dataclass(frozen=True)
class ReliabilityOptions:
    """Options of reliability-weighted aggregation (all validated in ``__post_init__``).

    Parameters
    ----------
    method : {"calibrated", "truth_discovery", "server_data", "fedavg", "uniform"}
        Reliability estimator. ``"calibrated"`` (default, :mod:`flwr_ppcdl.reliability.calibrated`):
        FedAvg's weights unless the evidence of unreliability is significant at
        ``false_alarm_rate``. ``"truth_discovery"``: the legacy rule relative to the median distance
        (:mod:`flwr_ppcdl.reliability.truth_discovery`), kept for comparison. ``"server_data"``:
        losses on server-held records. ``"fedavg"`` and ``"uniform"`` are baselines.
    false_alarm_rate : float in (0, 0.5), default 0.03
        Calibrated: probability that an honest participant's evidence passes the threshold in a
        round (Gaussian null, see the estimator's module docstring).
    shrink_width : float, default 1.0
        Calibrated: the weight factor is ``exp(-((M - t)_+)^2 / (2 shrink_width^2))`` for
        accumulated evidence ``M`` and threshold ``t``.
    sharpness : float, default 2.0
        Legacy truth discovery and server data: decay rate of ``exp(-sharpness * max(z - tolerance, 0))``,
        ``z`` = distance over the median distance (truth discovery) or loss over the best loss.
    tolerance : float or None, default None
        None picks the method's default (:data:`DEFAULT_TOLERANCE`). Truth discovery (1.5):
        distances up to ``tolerance`` times the median carry no penalty. Server data (1.2): losses up
        to ``tolerance`` times the best upload's loss carry no penalty; 1.2 rather than 1.5 because a
        random- or flipped-label model's server loss is only 1.2-2x the best honest one's, while
        1.1 cut honest non-IID minorities to about half their share
        (``benchmarks/reliability_measure.py``).
    alignment : bool, default True
        Legacy truth discovery: gate by agreement with the leave-one-out estimate (whole-layer
        cosine during the iterations, then the per-unit alignment gate).
    sample_weighting : {"linear", "sqrt", "uniform"}, default "linear"
        How claimed counts enter (``linear`` = FedAvg). Combined multiplicatively with reliability.
    count_cap : float or None, default 1000.0
        Claimed counts above ``count_cap`` times the median claim are capped (with a warning);
        wide enough never to touch honest unequal counts such as ``[10, 10, 80]``
        (:mod:`flwr_ppcdl.reliability.counts`). None disables the cap.
    max_num_examples : float or None, default None
        Public absolute maximum of a claimed count (e.g. the size of the data set a partition plan
        splits); an upload claiming more is excluded.
    max_share : float or None, default None
        No single participant gets more than this share (water-filling), whenever at least
        ``1 / max_share`` participants have positive weight. Off by default: it changes honest
        unequal participants' FedAvg weights ([10, 10, 80] would not give [.1, .1, .8]).
    max_abs : float, default 1e12
        Replies with entries above this magnitude are excluded.
    max_coordinates : int or None, default 20_000
        Score on a fresh uniform random sample of at most this many coordinates (the aggregate
        always uses every coordinate). None scores on all coordinates.
    max_iter, tol : int, float
        Legacy truth-discovery iteration limit and convergence threshold on the weights.
    alignment_units : int, default 64
        At most this many units (groups of consecutive output rows, axis 0) per layer for the
        per-unit statistics (calibrated) or the per-unit alignment gate (legacy; 1 turns it off).
        Rows are merged so that a unit has on average >= 8 scored coordinates.
    alignment_relax : float in (0, 1], default 0.5
        Legacy: the per-unit gate is ``clip(excess / (alignment_relax * typical), 0, 1)``.
    memory_rate : float or None, default 0.1
        Weight of the newest round when accumulating across rounds per node: evidence
        (calibrated; a bias-corrected exponentially weighted mean, the plain mean over the first
        rounds, :class:`~flwr_ppcdl.reliability.memory.EvidenceMemory`) or reliability (legacy;
        :class:`~flwr_ppcdl.reliability.memory.ReliabilityMemory`, formerly 0.5). None disables memory.
    use_deltas : bool, default True
        Score deltas to the global model sent in ``configure_train`` rather than raw parameters.
    seed : int or None, default None
        Randomness of the coordinate sample (None: fresh OS entropy, unpredictable to uploaders).
    server_loss_fn : callable, optional
        ``f(parameters: list[ndarray]) -> float`` on server-held data (lower is better); the
        strategies need it for ``method="server_data"`` (the estimator itself takes the losses).
        The arrays may be read-only zero-copy views of the reply.
    metrics_prefix : str, default "reliability/"
        Prefix of the per-round metrics the strategies add to the training MetricRecord.
    """

    method: str = "calibrated"
    false_alarm_rate: float = 0.03
    shrink_width: float = 1.0
    sharpness: float = 2.0
    tolerance: float | None = None
    alignment: bool = True
    sample_weighting: str = "linear"
    count_cap: float | None = 1000.0
    max_num_examples: float | None = None
    max_share: float | None = None
    max_abs: float = 1e12
    max_coordinates: int | None = 20_000
    max_iter: int = 50
    tol: float = 1e-7
    alignment_units: int = 64
    alignment_relax: float = 0.5
    memory_rate: float | None = 0.1
    use_deltas: bool = True
    seed: int | None = None
    server_loss_fn: ServerLossFn | None = None
    metrics_prefix: str = "reliability/"

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("sample_weighting", self.sample_weighting, SAMPLE_WEIGHTINGS)
        _number("false_alarm_rate", self.false_alarm_rate, low=0.0, low_open=True, high=0.49)
        _number("shrink_width", self.shrink_width, low=0.0, low_open=True)
        _number("sharpness", self.sharpness, low=0.0, low_open=True)
        if self.tolerance is not None:
            _number("tolerance", self.tolerance, low=0.0)
        if self.count_cap is not None:
            _number("count_cap", self.count_cap, low=1.0)
        if self.max_num_examples is not None:
            _number("max_num_examples", self.max_num_examples, low=0.0, low_open=True)
        if self.max_share is not None:
            _number("max_share", self.max_share, low=0.0, low_open=True, high=1.0)
        _number("max_abs", self.max_abs, low=0.0, low_open=True)
        if self.max_coordinates is not None:
            _integer("max_coordinates", self.max_coordinates, low=1)
        _integer("max_iter", self.max_iter, low=1)
        _number("tol", self.tol, low=0.0, low_open=True)
        _integer("alignment_units", self.alignment_units, low=1)
        _number("alignment_relax", self.alignment_relax, low=0.0, low_open=True, high=1.0)
        if self.memory_rate is not None:
            _number("memory_rate", self.memory_rate, low=0.0, low_open=True, high=1.0)
        if self.seed is not None:
            _integer("seed", self.seed, low=0)
        for name in ("alignment", "use_deltas"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.server_loss_fn is not None and not callable(self.server_loss_fn):
            raise ValueError(f"server_loss_fn={self.server_loss_fn!r} is not callable")
        if not isinstance(self.metrics_prefix, str):
            raise TypeError(f"metrics_prefix={self.metrics_prefix!r} must be a string")

    @property
    def effective_tolerance(self) -> float:
        """``tolerance``, or the method's default when it is None."""
        return self.tolerance if self.tolerance is not None else DEFAULT_TOLERANCE.get(self.method, 1.5)

    def with_overrides(self, **overrides: Any) -> ReliabilityOptions:
        """A copy with ``overrides`` applied (validated); unknown names raise ``TypeError``."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown reliability option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def resolve(cls, options: ReliabilityOptions | None = None, **overrides: Any) -> ReliabilityOptions:
        """``options`` (or the defaults) with ``overrides`` applied."""
        if options is not None and not isinstance(options, ReliabilityOptions):
            raise TypeError(f"options must be a ReliabilityOptions or None; got {type(options).__name__}")
        return (options if options is not None else cls()).with_overrides(**overrides)

    def summary(self) -> dict[str, Any]:
        """The options as a plain dict (the loss function by name), for logs and result files."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        fn = out.pop("server_loss_fn")
        out["server_loss_fn"] = None if fn is None else getattr(fn, "__name__", type(fn).__name__)
        return out


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")


def _number(name: str, value: object, *, low: float, low_open: bool = False, high: float | None = None) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
        raise ValueError(f"{name}={value!r} must be a finite number {bound}")


def _integer(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
