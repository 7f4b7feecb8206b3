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


# ---------------------------------------------------------------- (ε, δ) entries (Gaussian releases)


def _gaussian_rho(epsilon: float, delta: float) -> float:
    from flwr_ppcdl.privacy.calibration import zcdp_noise_multiplier

    return 1.0 / (2.0 * zcdp_noise_multiplier(epsilon, delta) ** 2)


def _accountant_epsilon(rho: float, delta: float) -> float:
    """ρ-zCDP -> ε at δ straight from dp-accounting (independent of the ledger's code path)."""
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.ZCDpEvent(rho))
    return float(accountant.get_epsilon(delta))


def test_one_gaussian_release_totals_its_own_epsilon_and_delta() -> None:
    ledger = PrivacyLedger()
    _charge(ledger, 1.0, delta=1e-5, rho=_gaussian_rho(1.0, 1e-5))  # type: ignore[arg-type]
    total = ledger.total()
    assert total.delta == 1e-5
    assert 1.0 - 1e-9 < total.epsilon <= 1.0  # the smaller of (1, 1e-5) and the zCDP conversion
    assert ledger.entries[0].guarantee().kind == "zcdp"


def test_two_gaussian_releases_compose_under_zcdp_below_basic_composition() -> None:
    rho = _gaussian_rho(1.0, 1e-5)
    ledger = PrivacyLedger(delta=2e-5)
    for _ in range(2):
        _charge(ledger, 1.0, delta=1e-5, rho=rho)  # type: ignore[arg-type]
    expected = _accountant_epsilon(2 * rho, 2e-5)
    assert ledger.total_delta == 2e-5
    assert ledger.total_epsilon == pytest.approx(expected, rel=1e-12)
    assert 1.0 < ledger.total_epsilon < 2.0  # a real saving over basic (2, 2e-5)


def test_pure_and_gaussian_entries_compose_at_the_ledger_delta() -> None:
    rho = _gaussian_rho(1.0, 1e-5)
    ledger = PrivacyLedger()  # δ = Σ δ_i = 1e-5
    _charge(ledger, 1.0, delta=1e-5, rho=rho)  # type: ignore[arg-type]
    _charge(ledger, 0.1, mechanism="laplace count")
    basic = 1.1
    zcdp = _accountant_epsilon(rho + 0.1**2 / 2, 1e-5)
    assert ledger.total_epsilon == pytest.approx(min(basic, zcdp), rel=1e-12)
    assert ledger.total_delta == 1e-5


def test_the_budget_is_checked_on_the_composed_total() -> None:
    rho = _gaussian_rho(1.0, 1e-5)
    composed = _accountant_epsilon(2 * rho, 2e-5)
    ledger = PrivacyLedger(max_epsilon=composed * (1 + 1e-9), delta=2e-5)
    _charge(ledger, 1.0, delta=1e-5, rho=rho)  # type: ignore[arg-type]
    _charge(ledger, 1.0, delta=1e-5, rho=rho)  # type: ignore[arg-type] - fits under zCDP, not basic
    with pytest.raises(BudgetExceededError, match="max_epsilon"):
        _charge(ledger, 0.01, delta=1e-5, rho=_gaussian_rho(0.01, 1e-5))  # type: ignore[arg-type]
    assert len(ledger.entries) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"delta": 1.5, "rho": 0.1}, "1.5"), ({"delta": 1e-5}, "rho"), ({"delta": -1e-5, "rho": 0.1}, "-1e-05")],
)
def test_bad_gaussian_charges_name_the_value(kwargs: dict[str, float], match: str) -> None:
    ledger = PrivacyLedger()
    with pytest.raises(ValueError, match=match):
        _charge(ledger, 1.0, **kwargs)  # type: ignore[arg-type]
    assert ledger.entries == ()


def test_gaussian_entries_round_trip_and_old_ledgers_read_as_pure() -> None:
    ledger = PrivacyLedger(max_epsilon=2.0, delta=1e-5)
    _charge(ledger, 1.0, delta=1e-5, rho=_gaussian_rho(1.0, 1e-5))  # type: ignore[arg-type]
    back = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back.entries == ledger.entries and back.delta == 1e-5
    assert back.total() == ledger.total()
    old = {"max_epsilon": 1.0, "entries": [{"epsilon": 1.0, "mechanism": "fm", "released": "g", "neighbouring": "replace-one"}]}
    legacy = PrivacyLedger.from_dict(old)
    assert legacy.total_epsilon == 1.0 and legacy.total_delta == 0.0
    assert legacy.entries[0].guarantee().kind == "pure"
