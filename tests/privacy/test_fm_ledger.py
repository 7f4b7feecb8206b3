"""PrivacyLedger: basic composition, refusal before recording, round trip."""

from __future__ import annotations

import json
import math

import pytest

from flwr_ppcdl.privacy import BudgetExceededError, LedgerEntry, PrivacyLedger


def _charge(ledger: PrivacyLedger, epsilon: float, **kwargs: str) -> LedgerEntry:
    defaults = {"mechanism": "fm", "released": "gram + cross", "neighbouring": "replace-one"}
    return ledger.charge(epsilon, **{**defaults, **kwargs})


def test_totals_use_basic_composition() -> None:
    ledger = PrivacyLedger()
    assert ledger.total_epsilon == 0.0
    for eps in (0.1, 0.2, 0.7):
        _charge(ledger, eps)
    assert ledger.total_epsilon == pytest.approx(1.0, abs=1e-15)
    assert [e.epsilon for e in ledger.entries] == [0.1, 0.2, 0.7]


def test_budget_exceeded_records_nothing() -> None:
    ledger = PrivacyLedger(max_epsilon=1.0)
    _charge(ledger, 0.6)
    with pytest.raises(BudgetExceededError, match="0.5"):
        _charge(ledger, 0.5)
    assert ledger.total_epsilon == 0.6 and len(ledger.entries) == 1
    _charge(ledger, 0.4)  # exactly at the budget is allowed
    assert ledger.total_epsilon == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad", "error"),
    [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("1", TypeError)],
)
def test_bad_charges_name_the_value(bad: object, error: type) -> None:
    ledger = PrivacyLedger()
    with pytest.raises(error, match=repr(bad) if isinstance(bad, str) else str(bad)):
        _charge(ledger, bad)  # type: ignore[arg-type]
    assert ledger.entries == ()


def test_mixed_neighbouring_relations_are_refused() -> None:
    ledger = PrivacyLedger()
    _charge(ledger, 1.0)
    with pytest.raises(ValueError, match="'add-remove-one'"):
        _charge(ledger, 1.0, neighbouring="add-remove-one")


def test_dict_round_trip_through_json() -> None:
    ledger = PrivacyLedger(max_epsilon=3.0)
    _charge(ledger, 0.5, note="round 1")
    _charge(ledger, 1.25, mechanism="reliability-count")
    back = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back.entries == ledger.entries
    assert back.total_epsilon == ledger.total_epsilon
    assert back.max_epsilon == 3.0
    with pytest.raises(BudgetExceededError):
        _charge(back, 1.5)
