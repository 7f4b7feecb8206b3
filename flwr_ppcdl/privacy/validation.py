"""The one place where the privacy core validates its inputs (public parameters and records).

Every public entry point of :mod:`flwr_ppcdl` that takes an ε (the mechanism, the trainer's
configuration, the run settings, the ledger) calls :func:`check_epsilon`, so an ε is accepted or
refused with the same rule and the same message everywhere.

Errors name the offending value. Record validators (features, labels, targets) name the value and
its position too: they run inside the participant's process, on its own records, and raise
:class:`RecordError`, whose :attr:`RecordError.public` text names the problem only. Whatever crosses
the wire uses that text, never ``str(error)`` (see :func:`flwr_ppcdl.clients.errors.public_error`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


MIN_EPSILON: float = 1e-9
"""Smallest finite ε any sampler is asked to draw for.

Below it the noise scale ``Δ/ε`` leaves the range where float64 arithmetic stays exact enough and
finite: at ``ε = 1e-320`` (a subnormal) ``Δ/ε`` overflows to ``inf`` (numpy's sampler releases
non-finite statistics, the discrete sampler's exact arithmetic raises ``OverflowError``). At
``ε = 1e-9`` the noise is already ``10^9·Δ``: the release carries no information at all.
"""

MAX_FINITE_EPSILON: float = 1e9
"""Largest finite ε accepted (``float("inf")`` means "no noise" and is separate).

Above it the discrete sampler's public grid ``2^(⌊log2(Δ/ε)⌋ - 30)`` becomes subnormal and the
statistics overflow when mapped onto it (``ε = 1e300``). Nothing private happens above ``ε = 1e9``.
"""


def check_epsilon(value: object, name: str = "epsilon", *, allow_inf: bool = True) -> float:
    """Return ``value`` as a float ε in ``[MIN_EPSILON, MAX_FINITE_EPSILON]`` (or ``inf``), or raise.

    ``float("inf")`` means "no noise" and is accepted unless ``allow_inf=False``. Finite values
    outside ``[MIN_EPSILON, MAX_FINITE_EPSILON]`` are refused because no sampler can draw noise for
    them in float64 (:data:`MIN_EPSILON`, :data:`MAX_FINITE_EPSILON`); this runs before any record
    is read or any ε is charged.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} of type {type(value).__name__}")
    result = float(value)
    if math.isnan(result) or result <= 0:
        hint = " (float('inf') for no noise)" if allow_inf else ""
        raise ValueError(f"{name} must be > 0{hint}; got {value!r}")
    if math.isinf(result):
        if not allow_inf:
            raise ValueError(f"{name} must be finite here; got {value!r}")
        return result
    if result < MIN_EPSILON:
        raise ValueError(
            f"{name}={value!r} is too small to sample: the noise scale sensitivity/{name} would "
            f"leave float64's range (smallest accepted {name}: {MIN_EPSILON:g})"
        )
    if result > MAX_FINITE_EPSILON:
        hint = "; use float('inf') for no noise" if allow_inf else ""
        raise ValueError(
            f"{name}={value!r} is too large to sample: the noise grid would leave float64's range "
            f"(largest accepted finite {name}: {MAX_FINITE_EPSILON:g}{hint})"
        )
    return result


def check_finite_real(name: str, value: object, *, allow_zero: bool) -> float:
    """Return ``value`` as a finite float that is > 0 (or >= 0 with ``allow_zero``), or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} of type {type(value).__name__}")
    result = float(value)
    if not (math.isfinite(result) and (result >= 0 if allow_zero else result > 0)):
        wanted = ">= 0 and finite" if allow_zero else "positive and finite"
        raise ValueError(f"{name} must be {wanted}; got {value!r}")
    return result


def check_positive_finite(name: str, value: object) -> float:
    """``value`` as a float > 0 and finite."""
    return check_finite_real(name, value, allow_zero=False)


def check_nonnegative_finite(name: str, value: object) -> float:
    """``value`` as a float >= 0 and finite."""
    return check_finite_real(name, value, allow_zero=True)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; a ValueError naming both otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return str(value)


# --------------------------------------------------------------------------- records


class RecordError(ValueError):
    """A participant's records break a public rule (a label out of range, a NaN feature...).

    ``str(error)`` names the offending value and its position, for the participant's own log.
    :attr:`public` names the rule only: it is the only text about this error that may leave the
    participant (error replies, the server's ``result.json``).

    Parameters
    ----------
    message
        The full, local message (value and position).
    public
        The same problem without any record's value or position.
    """

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def _first_bad_index(mask: NDArray[np.bool_]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def as_feature_matrix(features: ArrayLike) -> FloatArray:
    """Convert once to a finite float64 ``(n, d)`` copy, with the offending value in every error."""
    raw = np.asarray(features)
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"features must be a real numeric array; got dtype {raw.dtype}")
    if raw.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d); got shape {raw.shape}")
    if raw.shape[0] == 0:
        raise ValueError(f"features is empty: got shape {raw.shape} (need at least one record)")
    if raw.shape[1] == 0:
        raise ValueError(f"features has no columns: got shape {raw.shape}")
    x = np.array(raw, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = _first_bad_index(bad)
        raise RecordError(
            f"features must be finite; got {x[row, col]} at row {row}, column {col}",
            "features must be finite; a record has a non-finite feature",
        )
    return x


def as_record_vector(values: ArrayLike, name: str, n: int) -> NDArray[Any]:
    """A 1-D array with one entry per record (``n`` of them)."""
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry per record; got shape {raw.shape}")
    if raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} entries but features has {n} rows")
    return raw


def check_labels(raw: NDArray[Any], num_classes: int) -> NDArray[np.int64]:
    """Integer labels in ``[0, num_classes)`` as int64."""
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordError(
                f"labels must be integers in [0, {num_classes}); got {raw[i]} at index {i}",
                f"labels must be integers in [0, {num_classes}); a record's label is not an integer",
            )
    elif raw.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers in [0, {num_classes}); got dtype {raw.dtype}")
    out_of_range = (raw < 0) | (raw >= num_classes)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise RecordError(
            f"labels must be integers in [0, {num_classes}); got {raw[i].item()} at index {i}",
            f"labels must be integers in [0, {num_classes}); a record's label is out of range",
        )
    return raw.astype(np.int64)


def check_targets(raw: NDArray[Any]) -> FloatArray:
    """Finite real regression targets as float64."""
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"regression targets must be real numbers; got dtype {raw.dtype}")
    y = np.array(raw, dtype=np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise RecordError(
            f"regression targets must be finite; got {y[i]} at index {i}",
            "regression targets must be finite; a record's target is not finite",
        )
    return y
