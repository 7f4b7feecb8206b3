"""Per-participant privacy ledger: pure-ε basic composition.

Every access to private data that releases something is charged here *before* the release happens,
so a refused charge means nothing was released.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

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
        Pure-DP ε spent (``inf`` for a noise-free release).
    mechanism:
        What produced the release, e.g. ``"functional-mechanism/classification/discrete"``.
    released:
        Human-readable description of the released vectors.
    neighbouring:
        Neighbouring relation the ε refers to (``"replace-one"`` or ``"add-remove-one"``).
    note:
        Free text.
    """

    epsilon: float
    mechanism: str
    released: str
    neighbouring: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-safe except that ``inf`` stays a float)."""
        return {
            "epsilon": self.epsilon,
            "mechanism": self.mechanism,
            "released": self.released,
            "neighbouring": self.neighbouring,
            "note": self.note,
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
        )


class PrivacyLedger:
    """Accumulates pure-DP ε under basic composition (``ε_total = Σ ε_i``).

    All entries must use the same neighbouring relation (mixing them would make the sum
    meaningless; convert first: ε under add/remove-one is 2ε under replace-one).

    Parameters
    ----------
    max_epsilon:
        Optional budget. A charge that would make the total exceed it raises
        :class:`BudgetExceededError` and records nothing.
    """

    def __init__(self, max_epsilon: float | None = None) -> None:
        if max_epsilon is not None:
            if isinstance(max_epsilon, bool) or not isinstance(max_epsilon, numbers.Real):
                raise TypeError(f"max_epsilon must be a real number or None; got {max_epsilon!r}")
            if math.isnan(float(max_epsilon)) or float(max_epsilon) < 0:
                raise ValueError(f"max_epsilon must be >= 0; got {max_epsilon!r}")
        self.max_epsilon: float | None = None if max_epsilon is None else float(max_epsilon)
        self._entries: list[LedgerEntry] = []

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """The recorded charges, oldest first."""
        return tuple(self._entries)

    @property
    def total_epsilon(self) -> float:
        """Basic composition of every recorded charge (0.0 when empty)."""
        return math.fsum(entry.epsilon for entry in self._entries)

    def charge(
        self,
        epsilon: float,
        *,
        mechanism: str,
        released: str,
        neighbouring: str,
        note: str = "",
    ) -> LedgerEntry:
        """Record a release of ``epsilon``-DP; raises before recording if the budget would be exceeded.

        Raises
        ------
        TypeError, ValueError
            ``epsilon`` is not a positive real (``inf`` allowed), or ``neighbouring`` is unknown or
            differs from the relation of earlier entries.
        BudgetExceededError
            ``total_epsilon + epsilon > max_epsilon``.
        """
        check_epsilon(epsilon)
        if neighbouring not in NEIGHBOURING_RELATIONS:
            raise ValueError(
                f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {neighbouring!r}"
            )
        if self._entries and self._entries[0].neighbouring != neighbouring:
            raise ValueError(
                f"ledger holds {self._entries[0].neighbouring!r} charges; got {neighbouring!r}"
            )
        total = self.total_epsilon + float(epsilon)
        if self.max_epsilon is not None and total > self.max_epsilon:
            raise BudgetExceededError(
                f"charging epsilon={epsilon!r} would bring the total to {total!r}, above "
                f"max_epsilon={self.max_epsilon!r} (spent so far {self.total_epsilon!r})"
            )
        entry = LedgerEntry(float(epsilon), mechanism, released, neighbouring, note)
        self._entries.append(entry)
        return entry

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints / Flower ``Context.state``."""
        return {
            "max_epsilon": self.max_epsilon,
            "entries": [entry.to_dict() for entry in self._entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`."""
        ledger = cls(max_epsilon=data.get("max_epsilon"))
        ledger._entries = [LedgerEntry.from_dict(item) for item in data.get("entries", [])]
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(total_epsilon={self.total_epsilon!r}, "
            f"max_epsilon={self.max_epsilon!r}, entries={len(self._entries)})"
        )
