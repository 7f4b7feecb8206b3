"""Per-participant privacy ledger: every release's ``(ε, δ)`` and their composition.

Every access to private data that releases something is charged here *before* the release happens,
so a refused charge means nothing was released. An entry is either pure ``ε``-DP (``delta = 0``, the
Laplace samplers) or ``ρ``-zCDP reported as ``(ε, δ)``-DP (the Gaussian samplers). The total is
:func:`flwr_ppcdl.privacy.accounting.compose` of the entries: the smaller of basic composition
``(Σε, Σδ)`` and zCDP composition (``Σρ``, a pure entry counting ``ε²/2``) converted at the
ledger's ``δ``; pure entries alone stay pure (``Σε``, ``δ = 0``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from flwr_ppcdl.privacy.accounting import Composition, Guarantee, check_delta, compose
from flwr_ppcdl.privacy.sensitivity import NEIGHBOURING_RELATIONS
from flwr_ppcdl.privacy.validation import check_epsilon


class BudgetExceededError(RuntimeError):
    """A charge would take the ledger's total ε above its ``max_epsilon``; nothing was recorded."""


@dataclass(frozen=True)
class LedgerEntry:
    """One charged release.

    Attributes
    ----------
    epsilon:
        ε spent: pure ε-DP when ``delta == 0`` (``inf`` for a noise-free release), otherwise the ε of
        ``(epsilon, delta)``-DP.
    mechanism:
        What produced the release, e.g. ``"functional-mechanism/classification/discrete"``.
    released:
        Human-readable description of the released vectors.
    neighbouring:
        Neighbouring relation the ε refers to (``"replace-one"`` or ``"add-remove-one"``).
    note:
        Free text.
    delta:
        0 for a pure-ε release; the ``δ`` of a zCDP (Gaussian) release.
    rho:
        zCDP parameter of a Gaussian release (``None`` for a pure one).
    """

    epsilon: float
    mechanism: str
    released: str
    neighbouring: str
    note: str = ""
    delta: float = 0.0
    rho: float | None = None

    def guarantee(self) -> Guarantee:
        """The entry as a :class:`~flwr_ppcdl.privacy.accounting.Guarantee` (pure or zCDP)."""
        if self.rho is None and self.delta == 0.0:
            return Guarantee.pure(self.epsilon)
        return Guarantee(kind="zcdp", epsilon=self.epsilon, delta=self.delta, rho=self.rho)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-safe except that ``inf`` stays a float)."""
        return {
            "epsilon": self.epsilon,
            "mechanism": self.mechanism,
            "released": self.released,
            "neighbouring": self.neighbouring,
            "note": self.note,
            "delta": self.delta,
            "rho": self.rho,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            epsilon=float(data["epsilon"]),
            mechanism=str(data["mechanism"]),
            released=str(data["released"]),
            neighbouring=str(data["neighbouring"]),
            note=str(data.get("note", "")),
            delta=float(data.get("delta", 0.0)),
            rho=None if data.get("rho") is None else float(data["rho"]),
        )


class PrivacyLedger:
    """Accumulates a participant's releases and composes their guarantees (module docstring).

    All entries must use the same neighbouring relation (mixing them would make the total
    meaningless; convert first: ε under add/remove-one is 2ε under replace-one).

    Parameters
    ----------
    max_epsilon:
        Optional budget on :attr:`total_epsilon`. A charge that would take the total above it raises
        :class:`BudgetExceededError` and records nothing.
    delta:
        The ``δ`` at which totals are reported and the budget is checked, in ``(0, 1)``. ``None``
        (default): the sum of the entries' ``δ`` (0 while every entry is pure, so pure releases
        compose to pure ``Σε``).
    """

    def __init__(self, max_epsilon: float | None = None, delta: float | None = None) -> None:
        if max_epsilon is not None:
            if isinstance(max_epsilon, bool) or not isinstance(max_epsilon, numbers.Real):
                raise TypeError(f"max_epsilon must be a real number or None; got {max_epsilon!r}")
            if math.isnan(float(max_epsilon)) or float(max_epsilon) < 0:
                raise ValueError(f"max_epsilon must be >= 0; got {max_epsilon!r}")
        self.max_epsilon: float | None = None if max_epsilon is None else float(max_epsilon)
        self.delta: float | None = None if delta is None else check_delta(delta)
        self._entries: list[LedgerEntry] = []

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """The recorded charges, oldest first."""
        return tuple(self._entries)

    def total(self) -> Composition:
        """The composed ``(ε, δ)`` of every recorded charge (``(0, 0)`` when empty)."""
        return self._compose(self._entries)

    @property
    def total_epsilon(self) -> float:
        """ε of :meth:`total` (pure ``Σε`` while every entry is pure; 0.0 when empty)."""
        return self.total().epsilon

    @property
    def total_delta(self) -> float:
        """δ of :meth:`total` (0.0 while every entry is pure)."""
        return self.total().delta

    def _compose(self, entries: list[LedgerEntry]) -> Composition:
        guarantees = [entry.guarantee() for entry in entries]
        target = self.delta if self.delta is not None else math.fsum(g.delta for g in guarantees)
        if target == 0.0:  # every entry pure: basic composition, still pure
            total = math.fsum(g.epsilon for g in guarantees)
            rho = math.fsum(g.as_rho() for g in guarantees)
            return Composition(epsilon=total, delta=0.0, route="basic", rho=rho)
        return compose(guarantees, min(target, 1.0 - 2.0**-53))

    def projected(self, epsilon: float, *, delta: float = 0.0, rho: float | None = None) -> Composition:
        """The total after a charge of ``(epsilon, delta, rho)``, without recording anything."""
        entry = LedgerEntry(float(epsilon), "projected", "", "", delta=float(delta), rho=rho)
        return self._compose([*self._entries, entry])

    def charge(
        self,
        epsilon: float,
        *,
        mechanism: str,
        released: str,
        neighbouring: str,
        note: str = "",
        delta: float = 0.0,
        rho: float | None = None,
    ) -> LedgerEntry:
        """Record a release; raises before recording if the budget would be exceeded.

        ``delta = 0`` and ``rho = None`` record a pure ``epsilon``-DP release; otherwise the release
        is ``rho``-zCDP and ``(epsilon, delta)``-DP (both required).

        Raises
        ------
        TypeError, ValueError
            ``epsilon`` is not a positive real (``inf`` allowed for a pure release), ``delta`` is
            not in ``(0, 1)`` or ``rho`` is missing for a zCDP release, or ``neighbouring`` is
            unknown or differs from the relation of earlier entries.
        BudgetExceededError
            The composed total would exceed ``max_epsilon``.
        """
        check_epsilon(epsilon)
        entry = LedgerEntry(float(epsilon), mechanism, released, neighbouring, note, float(delta), rho)
        entry.guarantee()  # validates delta / rho (raises naming the value)
        if neighbouring not in NEIGHBOURING_RELATIONS:
            raise ValueError(
                f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {neighbouring!r}"
            )
        if self._entries and self._entries[0].neighbouring != neighbouring:
            raise ValueError(
                f"ledger holds {self._entries[0].neighbouring!r} charges; got {neighbouring!r}"
            )
        total = self._compose([*self._entries, entry])
        if self.max_epsilon is not None and total.epsilon > self.max_epsilon:
            raise BudgetExceededError(
                f"charging epsilon={epsilon!r} (delta={delta!r}) would bring the total to "
                f"epsilon={total.epsilon!r} (delta={total.delta!r}), above "
                f"max_epsilon={self.max_epsilon!r} (spent so far {self.total_epsilon!r})"
            )
        self._entries.append(entry)
        return entry

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints / Flower ``Context.state``."""
        return {
            "max_epsilon": self.max_epsilon,
            "delta": self.delta,
            "entries": [entry.to_dict() for entry in self._entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict` (a ledger saved before ``delta`` existed reads as pure)."""
        ledger = cls(max_epsilon=data.get("max_epsilon"), delta=data.get("delta"))
        ledger._entries = [LedgerEntry.from_dict(item) for item in data.get("entries", [])]
        return ledger

    def __repr__(self) -> str:
        total = self.total()
        return (
            f"PrivacyLedger(total_epsilon={total.epsilon!r}, total_delta={total.delta!r}, "
            f"max_epsilon={self.max_epsilon!r}, entries={len(self._entries)})"
        )
