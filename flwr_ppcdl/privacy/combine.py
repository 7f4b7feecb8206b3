"""Post-processing across participants: combine released statistics.

It reads only what :meth:`FunctionalMechanism.release` already released, so it costs no
privacy. Each participant's records are in its own release only (disjoint data), so a combination
of releases is ``(max_k epsilon_k, max_k delta_k)``-DP for every record (parallel composition), the
same per-record guarantee each participant already has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from flwr_ppcdl.privacy.release import Release

_MUST_AGREE = (
    "task",
    "num_classes",
    "num_features",
    "feature_bound",
    "target_bound",
    "neighbouring",
    "repair_keep",
    "noise",
    "repair_multiplier",
)


def combine_releases(releases: Sequence[Release], coefficients: ArrayLike | None = None) -> Release:
    """Weighted sum ``sum_k c_k * statistics_k`` of several participants' releases, as one release.

    Summing the noisy Gram matrices and cross terms estimates the statistics of the pooled data;
    the noise of the sum has per-coordinate standard deviation ``noise_sd = sqrt(sum_k c_k^2 sd_k^2)``
    (independent draws), which the repair rule (:meth:`Release.repaired`) and the decoders read.
    ``noise_scale`` is combined the same way (``sqrt(sum_k c_k^2 b_k^2)``). A sum of Gaussian
    releases is Gaussian; a sum of Laplace releases is not Laplace, but only its sd is used.

    Parameters
    ----------
    releases
        Releases with the same task, classes, dimensions, bounds, neighbouring relation, noise law
        and repair rule.
    coefficients
        Non-negative ``c_k`` (default: all 1, the plain sum). A reliability weighting passes
        ``c_k = w_k / p_k`` (weight over the participant's sample share), so equal quality gives the sum.

    Returns
    -------
    Release
        ``epsilon``, ``delta`` and ``sensitivity`` are the maxima over the inputs (per-record
        guarantee under parallel composition); ``num_examples`` is ``round(sum_k c_k n_k)`` (at
        least 1).
    """
    if len(releases) == 0:
        raise ValueError("combine_releases needs at least one release")
    for i, release in enumerate(releases):
        if not isinstance(release, Release):
            raise TypeError(f"releases[{i}] must be a Release; got {type(release).__name__}")
    first = releases[0]
    for i, release in enumerate(releases[1:], start=1):
        for name in _MUST_AGREE:
            if getattr(release, name) != getattr(first, name):
                raise ValueError(
                    f"releases[{i}].{name} = {getattr(release, name)!r} differs from "
                    f"releases[0].{name} = {getattr(first, name)!r}"
                )
    coef = np.ones(len(releases)) if coefficients is None else np.asarray(coefficients, dtype=np.float64)
    if coef.shape != (len(releases),):
        raise ValueError(f"coefficients must have shape ({len(releases)},); got {coef.shape}")
    if not np.all(np.isfinite(coef)) or np.any(coef < 0) or not np.any(coef > 0):
        raise ValueError(f"coefficients must be finite, >= 0 and not all 0; got {coef.tolist()}")
    statistics = {
        key: sum(c * r.statistics[key] for c, r in zip(coef, releases, strict=True) if c > 0)
        for key in first.statistics
    }
    pairs = list(zip(coef, releases, strict=True))
    noise = math.sqrt(math.fsum(c * c * r.noise_scale**2 for c, r in pairs))
    noise_sd = math.sqrt(math.fsum(c * c * r.noise_sd**2 for c, r in pairs))
    return Release(
        task=first.task,
        num_classes=first.num_classes,
        epsilon=max(r.epsilon for r in releases),
        sensitivity=max(r.sensitivity for r in releases),
        noise_scale=noise,
        neighbouring=first.neighbouring,
        num_examples=max(1, int(round(float(sum(c * r.num_examples for c, r in zip(coef, releases, strict=True)))))),
        num_features=first.num_features,
        feature_bound=first.feature_bound,
        target_bound=first.target_bound,
        statistics={k: np.asarray(v, dtype=np.float64) for k, v in statistics.items()},
        sampler="combined",
        repair_keep=first.repair_keep,
        noise=first.noise,
        delta=max(r.delta for r in releases),
        noise_sd=noise_sd,
        repair_multiplier=first.repair_multiplier,
    )
