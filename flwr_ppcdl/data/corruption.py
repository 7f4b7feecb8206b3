"""Unreliable participants: who they are and how their local data is corrupted.

Corruption simulates low-quality participants (not attackers who see the protocol). Functions here
never modify their inputs; they return new arrays and a record of what changed, so tests and
reports can state exactly which field was touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CORRUPTION_KINDS",
    "DEFAULT_FLIP_SEED",
    "Corruption",
    "choose_unreliable",
    "corrupt",
    "corrupt_if_unreliable",
    "derangement",
]

#: The kinds :func:`corrupt` understands.
CORRUPTION_KINDS = ("random-labels", "flipped-labels", "feature-noise", "random-targets")
#: Seed of the default label derangement, shared by every unreliable participant.
DEFAULT_FLIP_SEED = 0


def choose_unreliable(
    num_partitions: int,
    fraction: float | None = None,
    ids: list[int] | tuple[int, ...] | None = None,
    seed: int = 0,
) -> list[int]:
    """Choose which participants are unreliable.

    Parameters
    ----------
    num_partitions : int
        Number of participants ``N`` (ids ``0..N-1``).
    fraction : float, optional
        Fraction in ``[0, 1]``; ``floor(fraction * N + 0.5)`` participants (round half up) are drawn
        uniformly without replacement with ``np.random.default_rng(seed)``.
    ids : sequence of int, optional
        Explicit ids instead of ``fraction`` (exactly one of the two must be given).
    seed : int
        Seed of the draw (``fraction`` only).

    Returns
    -------
    list of int
        Sorted, distinct participant ids.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if (fraction is None) == (ids is None):
        raise ValueError("give exactly one of fraction and ids")
    if ids is not None:
        chosen = sorted({int(i) for i in ids})
        if len(chosen) != len(ids):
            raise ValueError(f"ids contain duplicates: {list(ids)}")
        bad = [i for i in chosen if not 0 <= i < num_partitions]
        if bad:
            raise ValueError(f"ids {bad} out of range [0, {num_partitions})")
        return chosen
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    count = int(np.floor(fraction * num_partitions + 0.5))
    picked = np.random.default_rng(seed).choice(num_partitions, size=count, replace=False)
    return sorted(int(i) for i in picked)


def derangement(num_classes: int, seed: int = DEFAULT_FLIP_SEED) -> np.ndarray:
    """A seeded permutation of ``0..K-1`` with no fixed point (label ``k`` -> ``perm[k] != k``).

    Drawn by rejection from ``np.random.default_rng(seed).permutation`` (about ``e`` tries on
    average), so it is uniform over derangements and the same for a given ``(K, seed)``.
    """
    if num_classes < 2:
        raise ValueError(f"a derangement needs num_classes >= 2, got {num_classes}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(num_classes)
        if not np.any(perm == np.arange(num_classes)):
            return perm.astype(np.int64)


@dataclass(frozen=True)
class Corruption:
    """The result of :func:`corrupt`.

    Attributes
    ----------
    features, targets : np.ndarray
        New arrays (the inputs are never modified; the untouched field is a copy).
    kind : str
        The corruption kind.
    field : str
        ``"features"`` or ``"targets"``: the only field that may differ from the input
        (``"none"`` for a reliable participant, see :func:`corrupt_if_unreliable`).
    changed : np.ndarray
        ``(n,)`` bool: which records differ from the input in ``field`` (a random label may equal
        the true one, so not every record need change).
    """

    features: np.ndarray
    targets: np.ndarray
    kind: str
    field: str
    changed: np.ndarray


def corrupt(
    features: np.ndarray,
    targets: np.ndarray,
    kind: str,
    *,
    rng: np.random.Generator,
    num_classes: int | None = None,
    permutation: np.ndarray | None = None,
    noise_std: float = 0.0,
    feature_range: tuple[float, float] | None = None,
    target_range: tuple[float, float] | None = None,
) -> Corruption:
    """Return a corrupted copy of one participant's data.

    Parameters
    ----------
    features : np.ndarray
        ``(n, ...)`` records.
    targets : np.ndarray
        ``(n,)`` labels or regression targets.
    kind : str
        - ``"random-labels"``: each label redrawn uniformly from ``0..num_classes-1``;
        - ``"flipped-labels"``: label ``k`` becomes ``permutation[k]`` (default
          :func:`derangement` ``(num_classes)``, the same for every participant);
        - ``"feature-noise"``: features plus ``N(0, noise_std^2)`` noise (``noise_std`` is a
          public constant in feature units), then clipped to ``feature_range`` if given;
          returned as float32 (float64 if the input is float64);
        - ``"random-targets"``: regression targets redrawn uniformly from ``target_range``
          (the public target range, e.g. ``CENSUS_TARGET_RANGE``).
    rng : np.random.Generator
        Source of randomness (injected; no global state).
    num_classes, permutation, noise_std, feature_range, target_range
        Kind-specific settings, see above.

    Returns
    -------
    Corruption
    """
    if kind not in CORRUPTION_KINDS:
        raise ValueError(f"kind must be one of {CORRUPTION_KINDS}, got {kind!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    x = np.array(features, copy=True)
    y = np.array(targets, copy=True)
    if len(x) != len(y):
        raise ValueError(f"features and targets differ in length: {len(x)} != {len(y)}")
    n = len(y)

    if kind in ("random-labels", "flipped-labels"):
        if num_classes is None or num_classes < 2:
            raise ValueError(f"{kind} needs num_classes >= 2, got {num_classes!r}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"{kind} needs integer labels, got dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}]")
        if kind == "random-labels":
            new = rng.integers(0, num_classes, size=n).astype(y.dtype)
        else:
            perm = derangement(num_classes) if permutation is None else np.asarray(permutation)
            if sorted(perm.tolist()) != list(range(num_classes)):
                raise ValueError(f"permutation must permute 0..{num_classes - 1}, got {perm}")
            new = perm[y].astype(y.dtype)
        return Corruption(x, new, kind, "targets", new != targets)

    if kind == "random-targets":
        if target_range is None:
            raise ValueError("random-targets needs the public target_range=(low, high)")
        low, high = (float(v) for v in target_range)
        if not low < high:
            raise ValueError(f"target_range must have low < high, got {target_range!r}")
        new = rng.uniform(low, high, size=n)
        return Corruption(x, new, kind, "targets", new != targets)

    # feature-noise
    if not noise_std > 0 or not np.isfinite(noise_std):
        raise ValueError(f"feature-noise needs a positive finite noise_std, got {noise_std!r}")
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    noisy = x.astype(dtype) + rng.normal(0.0, noise_std, size=x.shape).astype(dtype)
    if feature_range is not None:
        noisy = np.clip(noisy, feature_range[0], feature_range[1])
    changed = np.any((noisy != features).reshape(n, -1), axis=1)
    return Corruption(noisy, y, kind, "features", changed)


def corrupt_if_unreliable(
    partition_id: int,
    unreliable: list[int] | tuple[int, ...],
    features: np.ndarray,
    targets: np.ndarray,
    kind: str,
    *,
    seed: int = 0,
    **options: Any,
) -> Corruption:
    """Corrupt one participant's data if its id is in ``unreliable``; otherwise copy it unchanged.

    The randomness of participant ``k`` comes from ``np.random.default_rng([seed, k])``, so a
    participant's corruption does not depend on how many others there are or on their order.

    Parameters
    ----------
    partition_id : int
        This participant's id.
    unreliable : sequence of int
        Ids of the unreliable participants (:func:`choose_unreliable`).
    features, targets : np.ndarray
        This participant's data (not modified).
    kind : str
        See :func:`corrupt`.
    seed : int
        Base seed.
    **options
        Passed to :func:`corrupt` (``num_classes``, ``noise_std``, ``target_range``, ...).

    Returns
    -------
    Corruption
        For a reliable participant: copies, ``field="none"`` and ``changed`` all False.
    """
    if partition_id not in unreliable:
        n = len(targets)
        return Corruption(
            np.array(features, copy=True),
            np.array(targets, copy=True),
            kind,
            "none",
            np.zeros(n, dtype=bool),
        )
    rng = np.random.default_rng([seed, partition_id])
    return corrupt(features, targets, kind, rng=rng, **options)
