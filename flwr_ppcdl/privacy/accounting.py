"""Privacy accounting for releases that are either pure ``ε``-DP or ``ρ``-zCDP (pure functions).

A release of the functional mechanism is one of

* **pure** ``ε``-DP (the Laplace samplers of :mod:`.noise`);
* **zCDP**: ``ρ``-zero-concentrated DP (Bun & Steinke 2016) -- the Gaussian samplers of
  :mod:`.gaussian`, with ``ρ = Δ₂² / (2σ²)`` -- reported as ``(ε, δ)`` at the ``δ`` it was
  calibrated for.

:func:`compose` bounds the total ``(ε, δ)`` of several releases on the same records by the smaller
of two valid routes:

(a) **basic composition**: ``(Σ ε_i, Σ δ_i)``, usable when ``Σ δ_i <= target δ``;
(b) **zCDP composition**: ``ρ = Σ ρ_i``, where a pure ``ε_i`` release counts as ``ρ_i = ε_i² / 2``
    (Bun & Steinke 2016, Proposition 3.3), converted to ``(ε, target δ)`` by ``dp-accounting``'s
    :class:`RdpAccountant` (``ρ``-zCDP is ``(α, αρ)``-RDP for every ``α > 1``; the accountant's
    conversion is the improved one of Canonne, Kamath, Steinke 2020, Proposition 12, minimised over
    its grid of orders -- every order gives a valid bound, so the grid only costs tightness).

Both routes are sound, so their minimum is. The conversion is never hand-written here: every
``ρ → ε`` goes through :func:`zcdp_epsilon`, i.e. through the accountant.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("pure", "zcdp")


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    return float(value)


def check_epsilon(epsilon: object) -> float:
    """Return ``epsilon`` as a float if it is positive and finite; raise naming the value otherwise."""
    value = _check_real("epsilon", epsilon)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"epsilon must be positive and finite; got {epsilon!r}")
    return value


def check_delta(delta: object) -> float:
    """Return ``delta`` as a float if ``0 < delta < 1``; raise naming the value otherwise."""
    value = _check_real("delta", delta)
    if not (0.0 < value < 1.0):  # also rejects NaN
        raise ValueError(f"delta must lie in the open interval (0, 1); got {delta!r}")
    return value


def check_rho(rho: object) -> float:
    """Return ``rho`` as a float if it is ``>= 0`` and finite; raise naming the value otherwise."""
    value = _check_real("rho", rho)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"rho must be >= 0 and finite; got {rho!r}")
    return value


def zcdp_epsilon(rho: float, delta: float) -> float:
    """``ε`` such that ``ρ``-zCDP implies ``(ε, δ)``-DP, from ``dp-accounting``'s RDP accountant.

    Composes one ``ZCDpEvent(rho)`` into a fresh :class:`dp_accounting.rdp.RdpAccountant` (default
    orders) and returns ``get_epsilon(delta)``. For a Gaussian mechanism with noise multiplier
    ``z = σ/Δ₂`` this equals the accountant's value for ``GaussianDpEvent(z)`` with ``ρ = 1/(2z²)``
    (the RDP curves are identical; checked by the tests).
    """
    import dp_accounting

    rho_ = check_rho(rho)
    delta_ = check_delta(delta)
    if rho_ == 0.0:
        return 0.0
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.ZCDpEvent(rho_))
    return float(accountant.get_epsilon(delta_))


@dataclass(frozen=True)
class Guarantee:
    """The privacy guarantee of one release.

    Attributes
    ----------
    kind:
        ``"pure"`` (``ε``-DP, ``delta == 0``, ``rho is None``) or ``"zcdp"``: the release satisfies
        ``rho``-zCDP *and* ``(epsilon, delta)``-DP. :meth:`zcdp` sets ``epsilon`` to the
        accountant's conversion of ``rho`` at ``delta``; a mechanism with a tighter exact
        ``(ε, δ)`` (the analytic Gaussian) may record that smaller ``ε`` with its ``rho``.
    epsilon:
        Pure: the ``ε``. zCDP: the ``ε`` at ``delta`` (see ``kind``).
    delta:
        0 for pure; the ``δ`` the zCDP release was calibrated for.
    rho:
        zCDP parameter (``None`` for pure; a pure release counts as ``ε²/2`` in :meth:`as_rho`).
    """

    kind: str
    epsilon: float
    delta: float = 0.0
    rho: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if self.kind == "pure":
            if self.delta != 0.0 or self.rho is not None:
                raise ValueError(
                    f"a pure guarantee has delta 0 and no rho; got delta={self.delta!r}, "
                    f"rho={self.rho!r}"
                )
            value = _check_real("epsilon", self.epsilon)
            if math.isnan(value) or value < 0:
                raise ValueError(f"epsilon must be >= 0 (inf: no privacy); got {self.epsilon!r}")
        else:
            if self.rho is None:
                raise ValueError("a zcdp guarantee needs rho")
            check_rho(self.rho)
            check_delta(self.delta)
            value = _check_real("epsilon", self.epsilon)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"epsilon must be >= 0 and finite; got {self.epsilon!r}")

    @classmethod
    def pure(cls, epsilon: float) -> Guarantee:
        """``ε``-DP (``float('inf')`` records a release without noise)."""
        return cls(kind="pure", epsilon=float(epsilon))

    @classmethod
    def zcdp(cls, rho: float, delta: float) -> Guarantee:
        """``ρ``-zCDP, reported at ``δ`` with ``ε = zcdp_epsilon(ρ, δ)``."""
        return cls(
            kind="zcdp", epsilon=zcdp_epsilon(rho, delta), delta=float(delta), rho=float(rho)
        )

    def as_rho(self) -> float:
        """zCDP parameter of this release: ``rho``, or ``ε²/2`` for a pure release."""
        if self.kind == "pure":
            return self.epsilon * self.epsilon / 2.0
        assert self.rho is not None
        return self.rho


@dataclass(frozen=True)
class Composition:
    """Total guarantee of several releases: ``(epsilon, delta)``-DP, found by ``route``."""

    epsilon: float
    delta: float
    route: str  # "basic" or "zcdp"
    rho: float  # Σ ρ_i (informative; a pure release counts ε_i²/2)


def compose(guarantees: Iterable[Guarantee], delta: float) -> Composition:
    """Total ``(ε, δ)`` of releases on the same records, at most ``delta`` (see the module docstring).

    Returns the route with the smaller ``ε``: basic composition ``(Σε_i, Σδ_i)`` if ``Σδ_i <= delta``
    (its ``delta`` field is ``Σδ_i``, so several pure releases stay pure), and zCDP composition
    ``(zcdp_epsilon(Σρ_i, delta), delta)``. Ties go to basic composition. An empty list is
    ``(0, 0)``; a release without noise (pure ``ε = inf``) makes the total infinite.
    """
    target = check_delta(delta)
    entries = list(guarantees)
    for entry in entries:
        if not isinstance(entry, Guarantee):
            raise TypeError(f"compose takes Guarantee objects; got {type(entry).__name__}")
    if not entries:
        return Composition(epsilon=0.0, delta=0.0, route="basic", rho=0.0)
    total_rho = math.fsum(entry.as_rho() for entry in entries)
    basic_eps = math.fsum(entry.epsilon for entry in entries)
    basic_delta = math.fsum(entry.delta for entry in entries)
    if math.isinf(total_rho) or math.isinf(basic_eps):
        return Composition(epsilon=math.inf, delta=basic_delta, route="basic", rho=math.inf)
    zcdp_eps = zcdp_epsilon(total_rho, target)
    if basic_delta <= target and basic_eps <= zcdp_eps:
        return Composition(epsilon=basic_eps, delta=basic_delta, route="basic", rho=total_rho)
    return Composition(epsilon=zcdp_eps, delta=target, route="zcdp", rho=total_rho)
