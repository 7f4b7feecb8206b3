"""SummedStatisticsFedAvg against hostile releases (issue #11.5) and ordinary clients (issue #12.5).

Every hostile reply must leave ``aggregate_train`` without an exception, be excluded with a
warning naming its node (or, for an inflated count, be counted as no more than ``count_cap`` times
the round's median), and must not steer the pooled head: it equals the head pooled from the honest
replies alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.privacy import FunctionalMechanism, Release
from flwr_ppcdl.privacy.release import RELEASE_FORMAT_LISTS
from flwr_ppcdl.privacy.release_checks import check_release
from flwr_ppcdl.privacy.release_law import expected_calibration
from flwr_ppcdl.strategies import releases as releases_module
from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

from .numpy_apps import instruction

D = 4
W_TRUE = np.array([0.4, -0.3, 0.2, 0.1])
SENT = {
    "body.offset": np.arange(D, dtype=np.float32),
    "head.weight": np.zeros((1, D), np.float32),
    "head.bias": np.zeros(1, np.float32),
}
# the honest releases below use the fast, not-hardened numpy sampler: the run's public law says so
EXPECTED = wire.ReleaseExpectation(task="regression", num_features=D, epsilon=5.0, target_bound=1.0, sampler="numpy")


def release(seed: int, n: int = 300, epsilon: float = 5.0, sampler: str = "numpy", task: str = "regression") -> Release:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)) / 2.0
    seed_ = None if sampler == "opendp" else seed  # OpenDP cannot be seeded
    if task == "regression":
        fm = FunctionalMechanism(task="regression", epsilon=epsilon, sampler=sampler, insecure_noise_seed=seed_)  # type: ignore[arg-type]
        return fm.release(x, np.clip(x @ W_TRUE + 0.05 * rng.normal(size=n), -1, 1))
    fm = FunctionalMechanism(task="classification", num_classes=3, epsilon=epsilon, sampler=sampler, insecure_noise_seed=seed_)  # type: ignore[arg-type]
    return fm.release(x, rng.integers(0, 3, size=n))


def _reply(node: int, payload: Any, count: float, arrays: dict[str, np.ndarray] | None = None) -> Message:
    ins = instruction(node)
    records: dict[str, Any] = {
        "arrays": ArrayRecord({k: Array(v) for k, v in (arrays or SENT).items()}),
        "metrics": MetricRecord({"num-examples": float(count), "partition-id": node}),
    }
    if payload is not None:
        records["fm-release"] = ConfigRecord({"json": payload})
    return Message(RecordDict(records), reply_to=ins)


def _strategy(**kwargs: Any) -> SummedStatisticsFedAvg:
    strategy = SummedStatisticsFedAvg(reliability=False, expected_release=EXPECTED, **kwargs)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    return strategy


HONEST = [release(seed) for seed in range(4)]


def _honest_replies() -> list[Message]:
    return [_reply(i + 1, wire.encode_release(r), r.num_examples) for i, r in enumerate(HONEST)]


def _head(arrays: ArrayRecord | None) -> np.ndarray:
    assert arrays is not None
    return np.concatenate([arrays["head.weight"].numpy().ravel(), arrays["head.bias"].numpy()])


def _as_lists(r: Release) -> dict[str, Any]:
    """The release as a dict with plain-list statistics (the older wire format, still accepted)."""
    return r.to_dict() | {"format": RELEASE_FORMAT_LISTS, "statistics": {k: v.tolist() for k, v in r.statistics.items()}}


def _tampered(change: Callable[[dict[str, Any]], Any]) -> str:
    data = _as_lists(HONEST[0])
    out = change(data)
    return json.dumps(data if out is None else out)


def _times(factor: float, count_too: bool = False) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["statistics"] = {k: (factor * np.asarray(v)).tolist() for k, v in d["statistics"].items()}
        if count_too:
            d["num_examples"] = int(d["num_examples"] * factor)
    return change


HOSTILE: dict[str, Any] = {
    "json null": "null",
    "json list": "[]",
    "json number": "1",
    "not json": "{{{",
    "noise_scale 1e300": _tampered(lambda d: d.update(noise_scale=1e300)),
    "noise_scale NaN": _tampered(lambda d: d.update(noise_scale=float("nan"))),
    "noise_scale tiny": _tampered(lambda d: d.update(noise_scale=1e-9)),
    "repair_keep bogus": _tampered(lambda d: d.update(repair_keep="bogus")),
    "num_examples 0": _tampered(lambda d: d.update(num_examples=0)),
    "epsilon 1e9": _tampered(lambda d: d.update(epsilon=1e9)),
    "sensitivity 0": _tampered(lambda d: d.update(sensitivity=0.0)),
    "statistics a string": _tampered(lambda d: d.update(statistics="abc")),
    "statistics missing": _tampered(lambda d: d.pop("statistics")),
    "statistics NaN": _tampered(lambda d: d["statistics"]["cross"].__setitem__(0, float("nan"))),
    "statistics x1e3": _tampered(_times(1e3)),
    "statistics and n x1e3": _tampered(_times(1e3, count_too=True)),  # its noise is 1e3x too large
    "gram asymmetric": _tampered(lambda d: d["statistics"]["gram"][0].__setitem__(1, 7.0)),
    "other task": _tampered(lambda d: d.update(task="classification", num_classes=2)),
    "other width": json.dumps(release(9, n=100).to_dict() | {"num_features": D + 1}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_release_is_excluded_naming_the_node_and_steers_nothing(name: str, caplog: pytest.LogCaptureFixture) -> None:
    honest_only, _ = _strategy().aggregate_train(1, _honest_replies())
    strategy = _strategy()
    hostile = _reply(99, HOSTILE[name], HONEST[0].num_examples)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, [*_honest_replies(), hostile])  # must not raise
    assert 99 in strategy.reliability_history[-1].excluded, strategy.reliability_history[-1].excluded
    assert any("node p99" in r.getMessage() or "node 99" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(_head(arrays), _head(honest_only), rtol=1e-9)
    assert metrics is not None and metrics["reliability/num-excluded"] == 1


def _crafted_inflation(factor: int) -> str:
    """Statistics of ``factor`` copies of participant 0's records, with noise of the right scale:
    exactly what a participant with that many records could release."""
    with pytest.warns(UserWarning):
        exact = release(0, epsilon=float("inf"))
    rng = np.random.default_rng(5)
    data = _as_lists(HONEST[0])
    n = factor * exact.num_examples  # its noise scale is the run's calibration for that n
    b = expected_calibration("laplace", "numpy", 5.0, 0.0, HONEST[0].sensitivity, n, (D + 1) * (D + 2) // 2 + D + 1).scale
    data.update(noise_scale=b, noise_sd=float(np.sqrt(2.0) * b))
    gram = factor * exact.statistics["gram"] + np.triu(rng.laplace(0, b, size=(D + 1, D + 1)))
    data["statistics"] = {"gram": (np.triu(gram) + np.triu(gram, 1).T).tolist(),
                          "cross": (factor * exact.statistics["cross"] + rng.laplace(0, b, size=D + 1)).tolist()}
    data["num_examples"] = n
    return json.dumps(data)


def test_an_inflated_count_is_counted_as_count_cap_times_the_median() -> None:
    """A release claiming 1,000x the records, consistent with that claim, passes the per-release
    bounds; the round's median caps what it weighs."""
    text = _crafted_inflation(1000)
    check_release(wire.decode_release(text), EXPECTED)  # plausible on its own
    strategy = _strategy(count_cap=10.0)
    arrays, _ = strategy.aggregate_train(1, [*_honest_replies(), _reply(99, text, 300_000)])
    assert arrays is not None and np.all(np.isfinite(_head(arrays)))
    weights = strategy.reliability_history[-1].weights
    median = float(np.median([r.num_examples for r in HONEST] + [300_000]))
    honest_total = sum(r.num_examples for r in HONEST)
    assert weights[99] <= 10 * median / (10 * median + honest_total) + 1e-9
    assert weights[99] < 1e3 * 300 / (1e3 * 300 + honest_total)  # what it claimed


def test_a_count_that_disagrees_with_the_release_is_excluded() -> None:
    strategy = _strategy()
    strategy.aggregate_train(1, [*_honest_replies(), _reply(99, wire.encode_release(HONEST[0]), 10 * HONEST[0].num_examples)])
    assert "differs from the release" in strategy.reliability_history[-1].excluded[99]


def test_the_body_is_always_the_one_sent() -> None:
    """A reply with NaN (or +1000) in the body changes nothing: only the head is pooled (#11.5c)."""
    strategy = _strategy()
    bad_body = dict(SENT, **{"body.offset": np.full(D, np.nan, np.float32)})
    big_body = dict(SENT, **{"body.offset": SENT["body.offset"] + 1000})
    replies = [_reply(i + 1, wire.encode_release(r), r.num_examples, bad_body if i == 0 else big_body) for i, r in enumerate(HONEST)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_array_equal(arrays["body.offset"].numpy(), SENT["body.offset"])
    assert arrays["body.offset"].numpy().dtype == np.float32 and np.all(np.isfinite(_head(arrays)))


def test_reliability_weighting_survives_hostile_releases() -> None:
    strategy = SummedStatisticsFedAvg(reliability=True, expected_release=EXPECTED)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    replies = [*_honest_replies(), *(_reply(90 + i, HOSTILE[name], 300) for i, name in enumerate(sorted(HOSTILE)))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and np.all(np.isfinite(_head(arrays)))
    assert set(strategy.reliability_history[-1].weights) == {1, 2, 3, 4}


def test_ordinary_clients_are_aggregated_as_parameters_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """Non-FM clients share no release: the round is a parameter aggregation (with a warning), and
    one bad reply is excluded instead of making the round a no-op (#12.5)."""
    strategy = SummedStatisticsFedAvg(reliability=False)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    ups = [dict(SENT, **{"head.weight": np.full((1, D), float(i + 1), np.float32)}) for i in range(3)]
    bad = _reply(9, None, 10, ups[0])
    bad.content["metrics"] = MetricRecord({"other": 1.0})  # no num-examples
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, [*(_reply(i + 1, None, 10, u) for i, u in enumerate(ups)), bad])
    assert arrays is not None
    np.testing.assert_allclose(arrays["head.weight"].numpy(), np.full((1, D), 2.0))  # mean of 1, 2, 3
    assert any("no reply carries an 'fm-release'" in r.getMessage() for r in caplog.records)
    assert 9 in strategy.reliability_history[-1].excluded


# -- the validator itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["discrete", "numpy", "opendp"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_honest_releases_pass_validation(sampler: str, task: str) -> None:
    for seed in range(3):
        r = release(seed, n=150, epsilon=1.0, sampler=sampler, task=task)
        expected = wire.ReleaseExpectation(
            task=task, num_features=D, epsilon=1.0, num_classes=3 if task == "classification" else None,
            target_bound=1.0 if task == "regression" else None, sampler=sampler,
        )
        decoded = check_release(wire.decode_release(wire.encode_release(r)), expected)
        np.testing.assert_array_equal(decoded.statistics["gram"], r.statistics["gram"])


def test_an_exact_release_passes_and_a_scaled_one_fails() -> None:
    with pytest.warns(UserWarning):
        exact = release(0, epsilon=float("inf"))
    expected = wire.ReleaseExpectation(task="regression", num_features=D, epsilon=float("inf"), target_bound=1.0, sampler="numpy")
    check_release(exact, expected)
    scaled = Release(**{**exact.__dict__, "statistics": {k: 1.01 * v for k, v in exact.statistics.items()}})
    with pytest.raises(ValueError, match="statistics .gram."):
        check_release(scaled, expected)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_decode_release_raises_only_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        check_release(wire.decode_release(HOSTILE[name]), EXPECTED)


def _pooled_head(releases: list[Release], reliability: bool = True) -> tuple[np.ndarray, Any]:
    strategy = SummedStatisticsFedAvg(reliability=reliability, expected_release=EXPECTED)
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in SENT.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    arrays, _ = strategy.aggregate_train(1, [_reply(i + 1, wire.encode_release(r), r.num_examples) for i, r in enumerate(releases)])
    return _head(arrays), strategy.reliability_history[-1]


@pytest.mark.parametrize("seed", range(3))
def test_a_forged_gram_entry_is_scored_and_its_influence_bounded(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #23.2: an eleventh participant keeps honest target moments and sets one off-diagonal Gram entry
    to -n. The release checks of issue #23 refuse such a release outright; the scoring is the second line
    behind them, so with the checks switched off the release view still scores the Gram part (feature
    second moments): the forger loses most of its share and moves the pooled head by at most 4x an honest
    participant's influence and half what summing it plainly does (4-12x) -- an honest participant's
    influence being the RMS change of the honest pool when one of the ten is left out."""
    import dataclasses

    monkeypatch.setattr(releases_module, "check_release", lambda release, expected=None, **_: release)

    honest = [release(100 * seed + i) for i in range(10)]
    extra = release(100 * seed + 50)
    gram = extra.statistics["gram"].copy()
    gram[0, 1] = gram[1, 0] = -extra.num_examples
    forged = dataclasses.replace(extra, statistics={**extra.statistics, "gram": gram})
    base, _ = _pooled_head(honest)
    fair = float(np.sqrt(np.mean([np.sum((_pooled_head(honest[:i] + honest[i + 1:])[0] - base) ** 2) for i in range(10)])))
    head, report = _pooled_head([*honest, forged])
    plain = float(np.linalg.norm(_pooled_head([*honest, forged], reliability=False)[0] - base))
    assert report.weights[11] < 0.5 * report.fedavg_share[11]
    moved = float(np.linalg.norm(head - base))
    assert moved <= 4.0 * fair and moved <= 0.5 * plain, (moved, fair, plain)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_round_without_an_honest_majority_pools_the_median_release() -> None:
    """Five of ten participants flip their labels alike: no decidable honest majority, so the statistics
    protocol solves the head from the entry-wise median of the releases' per-record statistics (bounded
    influence), and the round report says so -- through the same bookkeeping as the parameter strategies."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(5, 6))
    centres /= 2.0 * np.linalg.norm(centres, axis=1, keepdims=True)
    fm = FunctionalMechanism(task="classification", num_classes=5, epsilon=1.0, sampler="numpy", insecure_noise_seed=7)
    releases = []
    for i in range(10):
        y = rng.integers(0, 5, size=2000)
        x = centres[y] + 0.1 * rng.normal(size=(2000, 6))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)
        releases.append(fm.release(x, (y + 1) % 5 if i >= 5 else y))
    sent = {"head.weight": np.zeros((5, 6), np.float32), "head.bias": np.zeros(5, np.float32)}
    strategy = SummedStatisticsFedAvg()
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in sent.items()}), ConfigRecord(),
                                  InProcessGrid(lambda m, c: m, num_nodes=2)))
    arrays, _ = strategy.aggregate_train(1, [_reply(i + 1, wire.encode_release(r), r.num_examples, sent)
                                             for i, r in enumerate(releases)])
    report = strategy.reliability_history[-1]
    assert arrays is not None and report.aggregate == "median" and report.model_updated
    assert report.undecidable is not None and "median of 10 releases" in report.undecidable
