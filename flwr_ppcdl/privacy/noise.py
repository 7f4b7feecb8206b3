"""Laplace samplers for the functional mechanism.

Three samplers add ``Lap(b)`` noise (``b >= l1_bound / ε``) to a float64 vector whose L1 sensitivity
is at most ``l1_bound``:

* :class:`DiscreteGridLaplace` (``"discrete"``, the default) -- hardened. The vector is snapped to a
  public power-of-two grid, and *exact* discrete Laplace noise is added to the integer grid indices
  with rational arithmetic (Canonne, Kamath, Steinke 2020). The floating-point attack on the textbook
  Laplace sampler (Mironov 2012), which reads the secret off the low-order bits of ``x + Lap(b)``,
  has nothing to read: the output is an exact integer times a public constant.
* :class:`OpenDPLaplace` (``"opendp"``) -- OpenDP's vetted ``make_laplace``; it cannot be seeded.
* :class:`NumpyLaplace` (``"numpy"``) -- ``numpy.random.Generator.laplace``: fast, **not hardened**
  against Mironov's attack; for experiments only.

References
----------
* I. Mironov, "On significance of the least significant bits for differential privacy", ACM CCS 2012.
* C. Canonne, G. Kamath, T. Steinke, "The discrete Gaussian for differential privacy", NeurIPS 2020
  (arXiv 2004.00010), Algorithms 1 and 2 (``Bernoulli(exp(-γ))`` and discrete Laplace).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.privacy.validation import check_epsilon

RandBelow = Callable[[int], int]
"""``randbelow(n)`` returns a uniform integer in ``{0, ..., n-1}``."""

GRID_BITS: int = 30
"""The grid step is ``2**(floor(log2(b)) - GRID_BITS)``: about a billionth of the noise scale."""

SCALE_DENOMINATOR_BITS: int = 20
"""The integer noise scale is rounded *up* to a multiple of ``2**-SCALE_DENOMINATOR_BITS``."""


SAMPLERS: tuple[str, ...] = ("discrete", "opendp", "numpy")


class PrivacyLeakWarning(UserWarning):
    """A configuration weakens or removes the differential-privacy guarantee."""


class NoiseSampler(Protocol):
    """What the mechanism needs from a sampler: its scale, what it spends, and ``perturb``."""

    name: str
    scale: float
    epsilon_spent: float
    size: int

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return the noisy copy of the flat float64 vector ``values`` (length ``size``)."""
        ...


def make_sampler(
    name: str, *, l1_bound: float, epsilon: float, size: int, rng: np.random.Generator | None
) -> NoiseSampler:
    """The Laplace sampler called ``name`` (one of :data:`SAMPLERS`), calibrated to ``l1_bound / ε``.

    ``rng=None`` draws from the operating system's CSPRNG (``"discrete"``) or fresh OS entropy
    (``"numpy"``); a ``Generator`` makes ``"discrete"``/``"numpy"`` reproducible (tests only).
    ``"opendp"`` always uses OpenDP's own CSPRNG.
    """
    if name == "discrete":
        randbelow = os_randbelow if rng is None else generator_randbelow(rng)
        return DiscreteGridLaplace(l1_bound=l1_bound, epsilon=epsilon, size=size, randbelow=randbelow)
    if name == "opendp":
        return OpenDPLaplace(l1_bound=l1_bound, epsilon=epsilon, size=size)
    if name == "numpy":
        return NumpyLaplace(
            l1_bound=l1_bound, epsilon=epsilon, size=size, rng=rng if rng is not None else np.random.default_rng()
        )
    raise ValueError(f"sampler must be one of {SAMPLERS}; got {name!r}")


def os_randbelow(n: int) -> int:
    """Uniform integer in ``{0, ..., n-1}`` from the operating system's CSPRNG (``secrets``)."""
    return secrets.randbelow(n)


def generator_randbelow(rng: np.random.Generator) -> RandBelow:
    """``randbelow`` backed by a numpy ``Generator`` (reproducible when seeded).

    Exact for integers of any size (rejection sampling over 32-bit words beyond 2**62). The stream
    is only as unpredictable as the bit generator: PCG64 is *not* cryptographically secure, so a
    seeded release is for tests and reproducible experiments; production use passes ``seed=None``.
    """

    def randbelow(n: int) -> int:
        if n <= 0:
            raise ValueError(f"randbelow needs n >= 1; got {n}")
        if n <= 2**62:
            return int(rng.integers(n))
        bits = n.bit_length()
        words = (bits + 31) // 32
        while True:
            value = 0
            for word in rng.integers(0, 2**32, size=words, dtype=np.uint64):
                value = (value << 32) | int(word)
            value >>= words * 32 - bits
            if value < n:
                return value

    return randbelow


def _bernoulli_exp_neg_unit(numerator: int, denominator: int, randbelow: RandBelow) -> bool:
    """Exact ``Bernoulli(exp(-γ))`` for rational ``γ = numerator/denominator`` in ``[0, 1]``.

    CKS 2020, Algorithm 1: draw ``A_k ~ Bernoulli(γ/k)`` for ``k = 1, 2, ...`` until the first 0 and
    return whether that happened at an odd ``k``. ``P(odd) = Σ (-γ)^j / j! = exp(-γ)``.
    """
    k = 1
    while randbelow(denominator * k) < numerator:
        k += 1
    return k % 2 == 1


def bernoulli_exp_neg(gamma: Fraction, randbelow: RandBelow) -> bool:
    """Exact ``Bernoulli(exp(-γ))`` for a rational ``γ >= 0`` (CKS 2020, Algorithm 1)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0; got {gamma}")
    whole = math.floor(gamma)
    for _ in range(whole):
        if not _bernoulli_exp_neg_unit(1, 1, randbelow):
            return False
    rest = gamma - whole
    return _bernoulli_exp_neg_unit(rest.numerator, rest.denominator, randbelow)


def discrete_laplace(scale: Fraction, randbelow: RandBelow) -> int:
    """One exact draw of the discrete Laplace distribution with rational scale ``t/s > 0``.

    ``P(Z = z) ∝ exp(-|z| / scale)`` on the integers (CKS 2020, Algorithm 2). Uses only integer
    arithmetic and ``randbelow``, so no floating-point rounding shapes the distribution. Adding it to
    an integer query of L1 sensitivity ``Δ`` coordinate-wise is ``(Δ/scale)``-DP.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0; got {scale}")
    t, s = scale.numerator, scale.denominator
    while True:
        u = randbelow(t)
        if not _bernoulli_exp_neg_unit(u, t, randbelow):
            continue
        v = 0  # Geometric(1 - exp(-1)) via repeated exact Bernoulli(exp(-1)) trials.
        while _bernoulli_exp_neg_unit(1, 1, randbelow):
            v += 1
        y = (u + t * v) // s  # (u + t v) ~ Geometric(1 - exp(-1/t)); the division rescales to t/s.
        negative = randbelow(2) == 1
        if negative and y == 0:
            continue  # reject -0 so that 0 is not counted twice
        return -y if negative else y


def discrete_laplace_variance(scale: Fraction | float) -> float:
    """Variance of the discrete Laplace distribution of the given scale: ``2p/(1-p)^2``, ``p = e^{-1/scale}``."""
    p = math.exp(-1.0 / float(scale))
    return 2.0 * p / (1.0 - p) ** 2


class DiscreteGridLaplace:
    """Hardened Laplace mechanism for a float64 vector: snap to a grid, add exact discrete Laplace.

    Calibration (public; depends only on ``l1_bound``, ``ε`` and the vector length ``m``):

    * grid step ``g = 2**(floor(log2(l1_bound/ε)) - 30)``;
    * each coordinate ``v_i`` is mapped to the integer ``k_i = round(v_i / g)``. Rounding moves a
      coordinate by at most ``g/2``, so between neighbouring datasets ``||k - k'||_1 <= (l1_bound +
      m·g) / g``;
    * integer noise ``Z_i`` ~ discrete Laplace with scale ``T >= (l1_bound + m·g) / (ε·g)`` (rounded up
      to a multiple of ``2**-20``), so releasing ``k + Z`` is ``ε``-DP by the discrete Laplace
      mechanism;
    * the output ``(k + Z)·g`` (a float) is post-processing of that integer release.

    Guarantee: ``ε``-DP (pure) for any input vector whose L1 distance between neighbouring datasets
    is at most ``l1_bound`` *in the floats actually passed* (the caller adds any floating-point
    summation slack to ``l1_bound``). The effective Laplace scale ``T·g`` exceeds ``l1_bound/ε`` by a
    relative ``m·2**-30``-ish amount; the grid adds at most ``g/2`` of deterministic rounding.

    Parameters
    ----------
    l1_bound:
        Upper bound on the L1 sensitivity of the vector, positive and finite.
    epsilon:
        Privacy parameter, positive and finite.
    size:
        Length ``m`` of the vectors that will be perturbed.
    randbelow:
        Source of uniform integers: :func:`os_randbelow` (CSPRNG) or :func:`generator_randbelow`.
    """

    name = "discrete"

    def __init__(self, *, l1_bound: float, epsilon: float, size: int, randbelow: RandBelow) -> None:
        _check_calibration(l1_bound, epsilon, size)
        self.size = size
        self._randbelow = randbelow
        nominal = l1_bound / epsilon
        self.grid_exponent = math.frexp(nominal)[1] - 1 - GRID_BITS  # floor(log2(nominal)) - 30
        self.grid = math.ldexp(1.0, self.grid_exponent)
        bound = Fraction(l1_bound) + size * Fraction(self.grid)
        exact_scale = bound / (Fraction(epsilon) * Fraction(self.grid))
        denominator = 2**SCALE_DENOMINATOR_BITS
        self.integer_scale = Fraction(math.ceil(exact_scale * denominator), denominator)
        self.scale = float(self.integer_scale * Fraction(self.grid))
        self.epsilon_spent = float(epsilon)

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``(round(v/g) + Z)·g`` for the flat float64 vector ``values`` (length ``size``)."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        indices = np.rint(np.ldexp(flat, -self.grid_exponent))  # exact: division by a power of two
        noisy = [int(k) + discrete_laplace(self.integer_scale, self._randbelow) for k in indices]
        # Post-processing of the exact integers: k*g is exact below 2**53, a rounding above.
        return np.ldexp(np.asarray([float(k) for k in noisy], dtype=np.float64), self.grid_exponent)


class OpenDPLaplace:
    """OpenDP's ``make_laplace`` on a float vector domain with the L1 metric.

    The scale is found by ``opendp.binary_search_param`` so that OpenDP's own privacy map at
    ``d_in = l1_bound`` is at most ``ε``; :attr:`epsilon_spent` is the map's value (``<= ε``). OpenDP
    samples with its own CSPRNG and cannot be seeded. Guarantee: as OpenDP states for
    ``make_laplace`` (pure ``ε``-DP, robust to floating point), for inputs whose L1 distance between
    neighbours is at most ``l1_bound``.
    """

    name = "opendp"

    def __init__(self, *, l1_bound: float, epsilon: float, size: int) -> None:
        _check_calibration(l1_bound, epsilon, size)
        import opendp.prelude as dp

        dp.enable_features("contrib")
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=size)
        metric = dp.l1_distance(T=float)

        def build(scale: float) -> dp.Measurement:
            return dp.m.make_laplace(domain, metric, scale)

        nominal = float(l1_bound) / float(epsilon)
        try:  # OpenDP's map is within a hair of d_in/scale: search a narrow bracket first (fast)
            scale = dp.binary_search_param(
                build,
                d_in=float(l1_bound),
                d_out=float(epsilon),
                bounds=(0.999 * nominal, 1.01 * nominal),
            )
        except Exception:  # bracket missed: let OpenDP search the whole range
            scale = dp.binary_search_param(build, d_in=float(l1_bound), d_out=float(epsilon))
        self.scale = float(scale)
        self._measurement = build(self.scale)
        self.epsilon_spent = float(self._measurement.map(float(l1_bound)))
        if self.epsilon_spent > epsilon:  # binary_search_param guarantees this; keep it checked
            raise RuntimeError(f"OpenDP calibration spent {self.epsilon_spent} > epsilon {epsilon}")
        self.size = size

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return OpenDP's Laplace release of the flat float64 vector ``values``."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        return np.asarray(self._measurement(flat.tolist()), dtype=np.float64)


class NumpyLaplace:
    """Textbook Laplace noise from ``numpy.random.Generator.laplace`` -- NOT hardened.

    Scale ``l1_bound / ε``. Mathematically ``ε``-DP, but the floating-point implementation is open to
    Mironov's (2012) least-significant-bit attack, and a seeded PCG64 stream is predictable. Opt-in,
    for fast experiments; constructing it emits :class:`PrivacyLeakWarning`.
    """

    name = "numpy"

    def __init__(
        self, *, l1_bound: float, epsilon: float, size: int, rng: np.random.Generator
    ) -> None:
        _check_calibration(l1_bound, epsilon, size)
        warnings.warn(
            "sampler='numpy' uses numpy's floating-point Laplace sampler, which is not hardened "
            "against the floating-point attack of Mironov (2012); use sampler='discrete' or "
            "'opendp' for real data",
            PrivacyLeakWarning,
            stacklevel=3,
        )
        self.scale = float(l1_bound) / float(epsilon)
        self.epsilon_spent = float(epsilon)
        self.size = size
        self._rng = rng

    def perturb(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``values + Lap(scale)`` drawn from the injected generator."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size != self.size:
            raise ValueError(f"expected {self.size} values; got {flat.size}")
        return flat + self._rng.laplace(0.0, self.scale, size=flat.size)


def _check_calibration(l1_bound: float, epsilon: float, size: int) -> None:
    if not (math.isfinite(l1_bound) and l1_bound > 0):
        raise ValueError(f"l1_bound must be positive and finite; got {l1_bound!r}")
    check_epsilon(epsilon, allow_inf=False)
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
