"""The release format's noise law, in one place: how every released coordinate is perturbed.

A release (:meth:`~flwr_ppcdl.privacy.FunctionalMechanism.release`) is the vector ``[upper(G), C]``
-- the Gram matrix's upper triangle with its diagonal, ``D(D+1)/2`` coordinates, then every entry of
the cross term -- plus ONE independent noise draw per coordinate; the lower triangle mirrors the
upper one. Everything that knows something about that noise reads it here:

* :func:`release_sampler` -- the calibration of one release (the float slack added to the
  sensitivity, the sampler of the law): the mechanism draws from it, and
  :func:`expected_calibration` rebuilds it, without drawing, from public values only, so the
  server knows the exact noise scale, ε and δ an honest release must carry;
* :func:`entry_noise` -- the per-entry law of a release's statistics (standard deviation, scale,
  family) and the bounds its noise stays within, each with a stated failure probability: the
  release checks (:mod:`.release_checks`) and the server's noise law (the variance the reliability
  estimator subtracts, :mod:`flwr_ppcdl.strategies.releases`) read it.

The bounds (``failure`` = probability that an honest release's noise exceeds them):

* per entry, jointly over all ``m`` coordinates (union bound): Laplace ``P(|e| > u) <= e^{-u/b}``,
  so ``u = b ln(m / failure)``; Gaussian (the continuous one, and the discrete Gaussian, which is
  ``σ``-subgaussian: Canonne, Kamath, Steinke 2020, Corollary 9) ``P(|e| > u) <= 2 e^{-u²/2σ²}``, so
  ``u = σ sqrt(2 ln(2m / failure))``;
* the spectral norm of the ``D x D`` symmetric noise matrix ``E``: Gaussian, through a 1/4-net of
  the sphere (``<= 9^D`` points; ``||E|| <= 2 max_x |xᵀEx|`` for symmetric ``E``, and ``xᵀEx`` is
  subgaussian with variance proxy ``<= 2σ²``): ``||E|| <= 4σ sqrt(D ln 9 + ln(2 / failure))``;
  Laplace, through Gershgorin (``||E|| <= max_i Σ_j |E_ij|``, a row being ``D`` independent
  ``|Lap(b)|``, i.e. ``Gamma(D, b)``, with the Chernoff bound ``P(Gamma(D,1) >= x) <=
  exp(-(x - D - D ln(x/D)))``, union over the rows).

The hardened samplers round to a public grid ``g <= 2^-30`` of the scale and their integer noise is
stochastically below ``g + |continuous draw|``; every bound adds :data:`GRID_SLACK` of the scale for it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from flwr_ppcdl.privacy.bounding import summation_slack
from flwr_ppcdl.privacy.calibration import gaussian_l2_bound
from flwr_ppcdl.privacy.gaussian import make_gaussian_sampler
from flwr_ppcdl.privacy.noise import PrivacyLeakWarning, make_sampler

if TYPE_CHECKING:
    from flwr_ppcdl.privacy.release import Release

GRID_SLACK: float = 2.0**-27
"""Relative slack added to every bound for the hardened samplers' grid (rounding ``<= g/2`` and the
discrete draw's ``<= g`` excess over a continuous one, ``g <= 2^-30`` of the scale)."""


def release_coordinates(dimension: int, cross_size: int) -> int:
    """How many independent noise draws a release holds: ``D(D+1)/2`` Gram entries plus the cross term."""
    return dimension * (dimension + 1) // 2 + cross_size


def release_sampler(
    noise: str,
    sampler: str,
    *,
    epsilon: float,
    delta: float,
    sensitivity: float,
    num_examples: int,
    coordinates: int,
    rng: np.random.Generator | None,
) -> Any:
    """The sampler one release draws from: the calibration of the release format.

    Laplace: ``l1_bound = Δ₁ + summation_slack(n, m)`` (:func:`~flwr_ppcdl.privacy.summation_slack`);
    Gaussian: ``l2_bound = Δ₂ + summation_slack_l2(n, m)``. The sampler's ``scale``,
    ``epsilon_spent`` (and, Gaussian, ``delta_spent`` and ``rho``) are what the release records.
    Building it draws nothing; ``rng`` is used by ``perturb`` only (``None``: the OS CSPRNG).
    """
    if noise == "gaussian":
        return make_gaussian_sampler(
            sampler,
            l2_bound=gaussian_l2_bound(sensitivity, num_examples, coordinates),
            epsilon=epsilon,
            delta=delta,
            size=coordinates,
            rng=rng,
        )
    return make_sampler(
        sampler, l1_bound=sensitivity + summation_slack(num_examples, coordinates), epsilon=epsilon, size=coordinates, rng=rng
    )


@dataclass(frozen=True)
class Calibration:
    """What an honest release of a given public configuration records about its noise."""

    scale: float
    epsilon: float
    delta: float
    rho: float | None


@lru_cache(maxsize=4096)
def expected_calibration(
    noise: str, sampler: str, epsilon: float, delta: float, sensitivity: float, num_examples: int, coordinates: int
) -> Calibration:
    """The noise scale, ε and δ an honest release of this public configuration records.

    :func:`release_sampler` built without drawing (its not-hardened warning silenced: nothing is
    released). ``epsilon = inf``: no noise (scale 0, δ 0). Cached: an honest participant's release
    is checked every round with the same values (one entry per participant; a Gaussian entry costs
    one accountant call, about 40 ms).
    """
    if math.isinf(epsilon):
        return Calibration(scale=0.0, epsilon=math.inf, delta=0.0, rho=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        built = release_sampler(
            noise, sampler, epsilon=epsilon, delta=delta, sensitivity=sensitivity,
            num_examples=num_examples, coordinates=coordinates, rng=None,
        )
    return Calibration(
        scale=float(built.scale),
        epsilon=float(built.epsilon_spent),
        delta=float(getattr(built, "delta_spent", 0.0)),
        rho=getattr(built, "rho", None),
    )


@dataclass(frozen=True)
class EntryNoise:
    """The noise law of one release's statistics: one independent draw per released coordinate.

    Attributes
    ----------
    law : {"laplace", "gaussian", "none", "sum"}
        The family of every draw (``"none"``: an exact release; ``"sum"``: a weighted sum of
        several participants' releases, whose bounds are not those of one draw).
    scale : float
        Laplace ``b`` or Gaussian ``σ`` of one draw (0 without noise).
    sd : float
        Standard deviation of every entry's noise (the release's ``noise_sd``): what the server's
        noise law (first-order variances of class means, target moments, solutions) reads.
    dimension, coordinates : int
        ``D`` (the Gram matrix is ``D x D``) and the number of independent draws ``m``.
    """

    law: str
    scale: float
    sd: float
    dimension: int
    coordinates: int

    def entry_bound(self, failure: float) -> float:
        """A bound that every entry's noise stays within, jointly, except with probability ``failure``."""
        log_inverse = math.log(self.coordinates / _check_failure(failure))
        if self.law == "laplace":
            return self.scale * (log_inverse + GRID_SLACK)
        if self.law == "gaussian":
            return self.scale * (math.sqrt(2.0 * (log_inverse + math.log(2.0))) + GRID_SLACK)
        return self._none_or_refuse()

    def spectral_bound(self, failure: float) -> float:
        """A bound on the spectral norm of the Gram matrix's noise, except with probability ``failure``."""
        dim, log_inverse = self.dimension, math.log(1.0 / _check_failure(failure))
        if self.law == "laplace":  # Gershgorin: a row is Gamma(D, b); union over D rows
            return self.scale * (_gamma_chernoff(dim, log_inverse + math.log(dim)) + dim * GRID_SLACK)
        if self.law == "gaussian":
            return self.scale * (4.0 * math.sqrt(dim * math.log(9.0) + math.log(2.0) + log_inverse) + dim * GRID_SLACK)
        return self._none_or_refuse()

    def _none_or_refuse(self) -> float:
        if self.law == "none":
            return 0.0
        raise ValueError(f"noise bounds hold for one participant's release (law 'laplace' or 'gaussian'), not for law {self.law!r}")


def entry_noise(release: Release) -> EntryNoise:
    """The noise law of ``release``'s statistics (the release format, see the module docstring)."""
    if release.sampler == "combined":
        law = "sum"
    elif release.noise_scale == 0.0:
        law = "none"
    else:
        law = release.noise
    dim = release.dimension
    return EntryNoise(
        law=law,
        scale=float(release.noise_scale),
        sd=float(release.noise_sd),
        dimension=dim,
        coordinates=release_coordinates(dim, int(np.prod(release.cross_shape))),
    )


def _check_failure(failure: float) -> float:
    if not (0.0 < float(failure) < 1.0):
        raise ValueError(f"failure={failure!r} must be a probability in (0, 1)")
    return float(failure)


def _gamma_chernoff(shape: int, log_inverse: float) -> float:
    """Smallest ``x >= shape`` with ``x - shape - shape ln(x / shape) >= log_inverse`` (bisection):
    ``P(Gamma(shape, 1) >= x) <= exp(-log_inverse)`` by the Chernoff bound."""
    k = float(shape)

    def exponent(x: float) -> float:
        return x - k - k * math.log(x / k)

    lo, hi = k, 2.0 * k + log_inverse + 1.0
    while exponent(hi) < log_inverse:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if exponent(mid) >= log_inverse:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    return hi
