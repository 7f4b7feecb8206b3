"""Seeded synthetic uploads and releases shared by the reliability tests (no test in this file)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SHAPES = [(10, 17), (10,)]
C, P = 6, 12  # class rows x entries per row


def honest_round(seed: int, k: int = 10, drift: float = 0.05, noise: float = 0.02, heavy: bool = False):
    """Near convergence: global ``theta``; honest uploads = theta + a small common drift + noise
    (``heavy``: each participant's noise scaled by an inverse-gamma factor, heavy-tailed heterogeneity)."""
    rng = np.random.default_rng(seed)
    theta = [rng.normal(size=s) for s in SHAPES]
    direction = [drift * rng.normal(size=s) / np.sqrt(np.prod(s)) for s in SHAPES]
    ups = []
    for _ in range(k):
        scale = np.sqrt(1.0 / rng.gamma(2.0, 0.5)) if heavy else 1.0
        ups.append([t + d + scale * noise * rng.normal(size=s) / np.sqrt(np.prod(s))
                    for t, d, s in zip(theta, direction, SHAPES, strict=True)])
    counts = rng.integers(500, 2000, size=k).astype(float)
    return theta, ups, counts


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def unflat(vector: np.ndarray) -> list[np.ndarray]:
    sizes = np.cumsum([int(np.prod(s)) for s in SHAPES])[:-1]
    return [part.reshape(s) for part, s in zip(np.split(vector, sizes), SHAPES, strict=True)]


def honest_mean_and_spread(ups) -> tuple[np.ndarray, float]:
    """The honest uploads' mean and their RMS distance to it (the "honest spread")."""
    honest = np.stack([flat(u) for u in ups])
    mean = honest.mean(axis=0)
    return mean, float(np.sqrt(np.mean(np.sum((honest - mean) ** 2, axis=1))))


def class_rows(rng: np.random.Generator, k: int, sd: np.ndarray, perm: dict[int, np.ndarray] | None = None):
    """K participants' class-row means: a common truth plus noise of the stated sd; some rows permuted."""
    truth = rng.normal(size=(C, P))
    stack = []
    for i in range(k):
        rows = truth[(perm or {}).get(i, np.arange(C))]
        stack.append(rows + sd[i] * rng.normal(size=(C, P)))
    noise = np.stack([np.full((C, P), s * s) for s in sd])
    return np.stack(stack).reshape(k, -1), noise.reshape(k, -1)


def class_releases(rng: np.random.Generator, sizes: np.ndarray, epsilon: float,
                   relabel: Callable[[int, np.ndarray, np.random.Generator], np.ndarray]):
    """Ten FM classification releases (Gaussian, 5 classes, 6 features) under Dirichlet(0.3) label skew;
    ``relabel(i, y, rng)`` gives the labels participant i releases with (its corruption, or ``y``)."""
    from flwr_ppcdl.privacy import FunctionalMechanism

    d, classes = 6, 5
    centres = rng.normal(size=(classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) * 2.0
    fm = FunctionalMechanism(task="classification", num_classes=classes, epsilon=epsilon, noise="gaussian", delta=1e-5,
                             sampler="numpy", insecure_noise_seed=int(rng.integers(1 << 30)))
    out = []
    for i, n in enumerate(sizes):
        y = rng.choice(classes, size=int(n), p=rng.dirichlet(np.full(classes, 0.3)))
        x = centres[y] + rng.normal(scale=0.15, size=(int(n), d))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)
        out.append(fm.release(x, relabel(i, y, rng)))
    return out, np.asarray(sizes, dtype=float)


def label_skewed_releases(rng: np.random.Generator, flipped: set[int]):
    """Epsilon = 1; the ``flipped`` participants relabel with one shared derangement and hold the largest
    data sets (4,000 records against 1,500: 16,000 of 25,000 when the last four flip)."""
    perm = np.roll(np.arange(5), 1)
    sizes = np.array([1500, 1500, 1500, 1500, 1500, 1500, 4000, 4000, 4000, 4000])
    return class_releases(rng, sizes, 1.0, lambda i, y, _: perm[y] if i in flipped else y)
