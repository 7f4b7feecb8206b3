"""Validation of uploads: which replies cannot be aggregated, and why (pure numpy; no Flower).

A reply is untrusted input. :func:`validate_updates` names, per upload, the first reason it cannot
be aggregated (unreadable or non-numeric arrays, shapes that differ from the global model's,
NaN/Inf, absurd magnitudes, a claimed example count that is not a positive number); the caller
excludes those uploads with a warning naming the node.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def validate_updates(updates: Sequence[Sequence[Any]], num_examples: Sequence[Any] | NDArray[Any], *, max_abs: float = 1e12,
                     expected_shapes: Sequence[tuple[int, ...]] | None = None) -> dict[int, str]:
    """Index -> the first reason each upload cannot be aggregated: ``updates`` (one list of arrays per
    participant), ``num_examples`` (claimed counts), ``max_abs`` (an entry above it is absurd),
    ``expected_shapes`` (required layer shapes; without it the most common signature)."""
    reasons: dict[int, str] = {}
    if len(num_examples) != len(updates):
        raise ValueError(f"num_examples has {len(num_examples)} entries but there are {len(updates)} updates")
    signatures: list[tuple[tuple[int, ...], ...] | None] = []
    for k, upd in enumerate(updates):
        sig: tuple[tuple[int, ...], ...] | None = None
        try:
            arrays = [np.asarray(a) for a in upd]
            if not all(np.issubdtype(a.dtype, np.number) for a in arrays):
                reasons[k] = "non-numeric dtype"
            elif any(np.issubdtype(a.dtype, np.complexfloating) for a in arrays):
                reasons[k] = "complex dtype"
            else:
                sig = tuple(a.shape for a in arrays)
        except (TypeError, ValueError) as exc:
            reasons[k] = f"unreadable arrays ({exc})"
        signatures.append(sig)
    common = Counter(sig for sig in signatures if sig is not None).most_common(1)
    reference = tuple(tuple(s) for s in expected_shapes) if expected_shapes is not None else (common[0][0] if common else ())
    for k, upd in enumerate(updates):
        if k in reasons:
            continue
        if signatures[k] != reference:
            reasons[k] = f"shapes {signatures[k]} differ from expected {reference}"
            continue
        problems = ((layer, p) for layer, a in enumerate(upd) if (p := _value_problem(np.asarray(a), max_abs)) is not None)
        if (found := next(problems, None)) is not None:  # the first array that cannot be aggregated
            reasons[k] = f"{found[1]} in array {found[0]}"
            continue
        try:
            n = float(num_examples[k])
        except (TypeError, ValueError):
            reasons[k] = f"example count {num_examples[k]!r} is not a number"
            continue
        if not math.isfinite(n) or n <= 0:
            reasons[k] = f"example count {num_examples[k]!r} is not positive"
    return reasons


def _value_problem(arr: NDArray[Any], max_abs: float) -> str | None:
    """Why ``arr`` cannot be aggregated (non-finite or absurd entries), or None. Fast path (float32/float64): one
    einsum pass (no BLAS threads woken) computes ``s = x . x``, NaN/Inf whenever an entry is, with ``max|x_i| <=
    sqrt(s)``: a finite ``s`` with ``sqrt(s)`` (with a rounding margin) within ``max_abs`` proves the array clean.
    Only arrays that fail this screen take the exact ``max(|x|)`` pass, which names the problem. No copy is made."""
    if not arr.size:
        return None
    if arr.dtype in (np.float32, np.float64):
        flat = arr.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            sq = float(np.einsum("i,i->", flat, flat))
        if math.isfinite(sq) and math.sqrt(sq) * (1.0 + 1e-3) <= max_abs:
            return None
    with np.errstate(over="ignore", invalid="ignore"):
        peak = float(np.max(np.abs(arr)))
    if not math.isfinite(peak):
        return "non-finite values (NaN/Inf)"
    if peak > max_abs:
        return f"absurd magnitude (> {max_abs:g})"
    return None
