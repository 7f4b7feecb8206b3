"""`ReliabilityOptions`: every option of reliability-weighted aggregation, declared and validated once.

Every adapter takes this frozen object or its fields as keywords (:meth:`ReliabilityOptions.with_overrides`):
a misspelt or invalid option fails at construction naming it, and an option the chosen method does not
use is refused rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

METHODS: tuple[str, ...] = ("calibrated", "server_data", "fedavg", "uniform")
ServerLossFn = Callable[[list[NDArray[Any]]], float]

_ONLY_FOR: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("false_alarm_rate", "memory_rate", "max_coordinates", "seed"), ("calibrated", "server_data")),
    "server_loss_fn": ("server_data",),
}
"""Options that only some methods read: setting one for another method is refused."""


@dataclass(frozen=True)
class ReliabilityOptions:
    """Options of reliability-weighted aggregation (all validated in ``__post_init__``).

    Parameters
    ----------
    method : {"calibrated", "server_data", "fedavg", "uniform"}
        ``"calibrated"`` (default; ``docs/reliability.md``): FedAvg's weight times the posterior
        probability that the participant is honest under one statistical model, calibrated at the
        round's number of participants. ``"server_data"``: the same estimator, each of its flags put to
        records the server holds (``server_loss_fn``): a flagged participant gets its FedAvg share back
        where adding its upload to the aggregate lowers the server's loss more than adding a trusted one's
        does, beyond chance, in two consecutive verdicts (docs/reliability.md §4).
        ``"fedavg"`` (claimed counts) and ``"uniform"`` (equal weights) are baselines.
    false_alarm_rate : float in (0, 0.5), default 0.02
        Calibrated: the probability that an honest participant's evidence of one round passes the
        decision threshold (its posterior probability of being honest falls below 1/2); also the
        round-level rate at which an honest participant's influence is bounded. 2 %: with the memory and
        the posterior's soft edge, honest participants then keep >= 0.8x their FedAvg share in about
        96-97 % of participant-rounds (95 % at 3 %, tuning seeds).
    memory_rate : float in [0, 1) or None, default 0.5
        Calibrated: the fraction of a node's suspicion (positive log-odds, never credit) and of its
        one-sided statistics' running sums carried into the next round. None or 0: no memory.
    max_coordinates : int or None, default 20_000
        Calibrated: score on a fresh random sample of at most this many coordinates (the aggregate
        always uses every coordinate). None scores every coordinate.
    seed : int or None, default None
        Calibrated: randomness of the coordinate sample (None: fresh OS entropy, unpredictable to
        uploaders).
    server_loss_fn : callable, optional
        Server data: ``f(parameters: list[ndarray]) -> float``, the loss of a model (arrays in the
        uploads' order) on server-held records (lower is better); in a round with a flag, called for
        the aggregate and once per valid upload, none otherwise.
    count_cap : float or None, default 1000.0
        Claimed counts above ``count_cap`` times the median claim are capped (with a warning); wide
        enough never to touch honest unequal counts such as ``[10, 10, 80]``. None disables it.
    max_num_examples : float or None, default None
        Public absolute maximum of a claimed count (e.g. the size of the data set a partition plan
        splits); an upload claiming more is excluded.
    max_share : float or None, default None
        No single participant gets more than this share (water-filling) whenever at least
        ``1 / max_share`` participants have positive weight. Off by default: it changes honest
        unequal participants' FedAvg weights.
    max_abs : float, default 1e12
        Replies with entries above this magnitude are excluded.
    use_deltas : bool, default True
        Score deltas to the global model sent in ``configure_train`` rather than raw parameters.
    metrics_prefix : str, default "reliability/"
        Prefix of the per-round metrics the strategies add to the training MetricRecord.
    """

    method: str = "calibrated"
    false_alarm_rate: float = 0.02
    memory_rate: float | None = 0.5
    max_coordinates: int | None = 20_000
    seed: int | None = None
    server_loss_fn: ServerLossFn | None = None
    count_cap: float | None = 1000.0
    max_num_examples: float | None = None
    max_share: float | None = None
    max_abs: float = 1e12
    use_deltas: bool = True
    metrics_prefix: str = "reliability/"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        defaults = {f.name: f.default for f in fields(self)}
        for name, methods in _ONLY_FOR.items():
            value = getattr(self, name)
            if self.method not in methods and value is not None and value != defaults[name]:
                raise ValueError(f"{name}={value!r} is not used by method={self.method!r} (only by {list(methods)}); "
                                 "remove it")
        _number("false_alarm_rate", self.false_alarm_rate, low=0.0, low_open=True, high=0.49)
        for name, low, low_open, high in (("memory_rate", 0.0, False, 0.999),
                                          ("count_cap", 1.0, False, None), ("max_num_examples", 0.0, True, None), ("max_share", 0.0, True, 1.0)):
            if getattr(self, name) is not None:  # None: off, or the method's default
                _number(name, getattr(self, name), low=low, low_open=low_open, high=high)
        _number("max_abs", self.max_abs, low=0.0, low_open=True)
        for name, low in (("max_coordinates", 1), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
                raise ValueError(f"{name}={value!r} must be an integer >= {low} or None")
        for name, kind, what in (("use_deltas", (bool, np.bool_), "True or False"), ("metrics_prefix", str, "a string")):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name}={getattr(self, name)!r} must be {what}")
        if self.server_loss_fn is not None and not callable(self.server_loss_fn):
            raise ValueError(f"server_loss_fn={self.server_loss_fn!r} is not callable")

    def with_overrides(self, **overrides: Any) -> ReliabilityOptions:
        """A copy with ``overrides`` applied (validated); unknown names raise ``TypeError``.

        Switching ``method`` drops the options the new method does not use (their defaults return).
        """
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        if unknown := sorted(set(overrides) - known):
            raise TypeError(f"unknown reliability option(s) {unknown}; known: {sorted(known)}")
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        method = overrides.get("method", self.method)
        if method != self.method:
            current.update({name: self.__dataclass_fields__[name].default for name, methods in _ONLY_FOR.items() if method not in methods and name not in overrides})
        current.update(overrides)
        return dataclasses.replace(self, **{k: v for k, v in current.items() if k in known})

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


def _number(name: str, value: object, *, low: float, low_open: bool = False, high: float | None = None) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
        raise ValueError(f"{name}={value!r} must be a finite number {bound}")
