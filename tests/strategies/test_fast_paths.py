"""Fast paths of the aggregation (zero-copy reads, one-pass validation, fused weighted sum)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array

from flwr_ppcdl.reliability import validate_updates, weighted_sum
from flwr_ppcdl.reliability.sketch import sample_blocks as _sample_blocks
from flwr_ppcdl.strategies._arrays import npy_view


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
        np.array(3.5, dtype=np.float32),
        np.zeros((0, 3)),
        np.arange(5, dtype=np.int16),
        np.arange(6, dtype=">f8").reshape(2, 3),
    ],
)
def test_npy_view_equals_np_load_and_is_read_only(arr: np.ndarray) -> None:
    array = Array(arr)
    view = npy_view(array.data)
    loaded = array.numpy()
    assert view.shape == loaded.shape and view.dtype == loaded.dtype
    np.testing.assert_array_equal(view, loaded)
    assert not view.flags.writeable  # the upload's bytes can never be modified through it


def test_npy_view_refuses_truncated_and_object_data() -> None:
    data = Array(np.arange(10.0)).data
    with pytest.raises(ValueError):
        npy_view(data[:-8])  # one float64 short
    with pytest.raises(ValueError):
        npy_view(b"not an npy file at all")
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (117 - len(header)) + b"\n"
    with pytest.raises(ValueError):
        npy_view(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_validation_screen_never_hides_bad_entries(dtype) -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(size=10_000).astype(dtype)
    big_norm = np.full(10_000, 9.0, dtype=dtype)  # ||x|| = 900 > max_abs, every entry < max_abs
    cases = {
        0: clean,
        1: big_norm,
        2: np.where(np.arange(10_000) == 77, np.nan, clean).astype(dtype),
        3: np.where(np.arange(10_000) == 5, -np.inf, clean).astype(dtype),
        4: np.where(np.arange(10_000) == 9, 11.0, clean).astype(dtype),  # one entry > max_abs
        5: np.full(10_000, 3e37 if dtype == np.float32 else 1e300, dtype=dtype),  # x.x overflows
    }
    reasons = validate_updates([[a] for a in cases.values()], [1] * len(cases), max_abs=10.0)
    assert set(reasons) == {2, 3, 4, 5}
    assert "non-finite" in reasons[2] and "non-finite" in reasons[3]
    assert "absurd" in reasons[4] and "absurd" in reasons[5]


def test_weighted_sum_matches_float64_reference_for_large_float32_layers() -> None:
    rng = np.random.default_rng(3)
    ups = [[rng.normal(size=(600, 1000)).astype(np.float32), rng.normal(size=7)] for _ in range(8)]
    w = rng.dirichlet(np.ones(8))
    out = weighted_sum(ups, w)
    assert out[0].dtype == np.float32 and out[1].dtype == np.float64
    for layer in range(2):
        ref = sum(w[k] * ups[k][layer].astype(np.float64) for k in range(8))
        np.testing.assert_allclose(out[layer], ref, rtol=1e-5, atol=1e-5)
    # inputs are read, never written (they may be read-only views of the uploads)
    frozen = [[a.copy() for a in u] for u in ups]
    for u in frozen:
        for a in u:
            a.flags.writeable = False
    np.testing.assert_allclose(weighted_sum(frozen, w)[0], out[0])


def test_sampled_blocks_cover_coordinates_uniformly() -> None:
    rng = np.random.default_rng(0)
    size = 1000
    hits = np.zeros(size)
    for _ in range(400):
        take = _sample_blocks(size, 200, rng)
        assert take.min() >= 0 and take.max() < size
        np.add.at(hits, take, 1)
    # equal inclusion probability, including the first and last coordinates (blocks wrap)
    expected = hits.mean()
    assert abs(hits[:64].mean() / expected - 1) < 0.15
    assert abs(hits[-64:].mean() / expected - 1) < 0.15
    assert hits.min() > 0
