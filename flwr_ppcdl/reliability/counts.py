"""Claimed example counts: untrusted, so only plausible counts steer the weights (pure numpy).

Honest unequal counts keep FedAvg's weights (``[10, 10, 80]`` gives ``[.1, .1, .8]``); three layers stop a
liar: a public absolute maximum (``max_num_examples``: a claim above it excludes the upload), a wide
relative cap (``count_cap`` times the median claim, with a warning), and -- in the calibrated estimator
(:mod:`.estimate`) -- a participant the model doubts counts at most the median claim, with or without a
server-side maximum.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def plausible_counts(counts: FloatArray, valid: NDArray[np.bool_], *, max_num_examples: float | None,
                     count_cap: float | None) -> tuple[FloatArray, dict[int, str], dict[int, str]]:
    """Apply the absolute maximum and the relative cap to the valid claims. Returns the counts to weigh with
    (0 where excluded or invalid), the positions whose claim exceeds ``max_num_examples`` (with the reason)
    and those whose claim was capped (with a message naming the claim)."""
    out = np.where(valid, counts, 0.0).astype(np.float64)
    excluded: dict[int, str] = {}
    capped: dict[int, str] = {}
    if max_num_examples is not None:
        for pos in np.flatnonzero(valid & (out > max_num_examples)):
            excluded[int(pos)] = f"claimed example count {out[pos]:g} is above the public maximum {max_num_examples:g}"
            out[pos] = 0.0
    live = valid & (out > 0)
    if count_cap is not None and np.count_nonzero(live) >= 2:
        cap = count_cap * float(np.median(out[live]))
        for pos in np.flatnonzero(live & (out > cap)):
            capped[int(pos)] = f"claimed example count {out[pos]:g} capped at {cap:g} ({count_cap:g} x the median claim)"
            out[pos] = cap
    return out, excluded, capped
