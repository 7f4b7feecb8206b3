"""ε outside what float64 can sample is refused by the one validator, before any record is read
or any ε is charged, for every sampler; at the edges of the accepted range every sampler releases
finite statistics that solve to finite weights."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from flwr_ppcdl.clients import TrainerConfig
from flwr_ppcdl.privacy import MIN_EPSILON, FunctionalMechanism, PrivacyLedger, check_epsilon
from flwr_ppcdl.privacy.noise import SAMPLERS
from flwr_ppcdl.privacy.validation import MAX_FINITE_EPSILON

TINY = [5e-324, 1e-320, 1e-300, MIN_EPSILON / 2]
HUGE = [MAX_FINITE_EPSILON * 2, 1e300, 1.7e308]


class _Untouchable:
    """Records that fail the test if anything reads them."""

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the records were read")


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("epsilon", TINY)
def test_tiny_epsilon_is_refused_before_anything_is_read_or_charged(sampler: str, epsilon: float) -> None:
    ledger = PrivacyLedger()
    with pytest.raises(ValueError, match=r"too small to sample.*smallest accepted epsilon: 1e-09"):
        FunctionalMechanism(task="classification", num_classes=3, epsilon=epsilon, sampler=sampler, ledger=ledger).release(  # type: ignore[arg-type]
            _Untouchable(), _Untouchable()
        )
    assert ledger.entries == ()


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("epsilon", HUGE)
def test_huge_finite_epsilon_is_refused_and_infinity_stays_allowed(sampler: str, epsilon: float) -> None:
    with pytest.raises(ValueError, match="too large to sample.*float\\('inf'\\) for no noise"):
        FunctionalMechanism(task="regression", epsilon=epsilon, sampler=sampler)  # type: ignore[arg-type]
    assert check_epsilon(float("inf")) == float("inf")


@pytest.mark.parametrize("epsilon", [1e-320, 1e300])
def test_every_entry_point_uses_the_same_range(epsilon: float) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(epsilon))):
        TrainerConfig(task="regression", epsilon=epsilon)
    with pytest.raises(ValueError, match="eval_epsilon"):
        TrainerConfig(task="regression", epsilon=1.0, local_evaluation=True, max_epsilon=2.0, eval_epsilon=epsilon)
    ledger = PrivacyLedger()
    with pytest.raises(ValueError, match=re.escape(repr(epsilon))):
        ledger.charge(epsilon, mechanism="m", released="r", neighbouring="replace-one")
    assert ledger.entries == ()


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("epsilon", [MIN_EPSILON, MAX_FINITE_EPSILON])
def test_the_edges_of_the_range_release_finite_statistics(sampler: str, epsilon: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 50))
    y = rng.integers(0, 4, size=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the numpy sampler warns that it is not hardened
        fm = FunctionalMechanism(task="classification", num_classes=4, epsilon=epsilon, sampler=sampler)  # type: ignore[arg-type]
        release = fm.release(x, y)
    assert all(np.isfinite(v).all() for v in release.statistics.values())
    assert np.isfinite(release.noise_scale) and release.noise_scale > 0
    weights = release.solve()
    assert np.isfinite(weights).all()
    assert np.isfinite(release.objective_value(weights))
