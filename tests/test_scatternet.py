"""The ScatterNet body: public, identical everywhere, per record, bounded; its features cached per record."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_ppcdl.clients.model import body_fingerprint, body_matches
from flwr_ppcdl.data.feature_cache import CACHE_DIR_ENV, FeatureCache, default_cache_root
from flwr_ppcdl.models import IMAGE_BODIES, build_model, make_body
from flwr_ppcdl.scatternet import _FEATURE_CACHES, ScatterNetBody

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Random pixels plus the extremes: blank, saturated, one lit pixel, a checkerboard."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 28, 28), generator=generator, dtype=torch.uint8)
    x[0] = 0
    x[1] = 255
    x[2] = 0
    x[2, 14, 14] = 255
    x[3] = 255 * ((torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2)
    return x


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Every test starts as a new process would: no feature cache in memory."""
    _FEATURE_CACHES.clear()
    yield
    _FEATURE_CACHES.clear()


def _fingerprint_elsewhere(seed: int) -> dict[str, object]:
    code = (
        "import json, torch; from flwr_ppcdl.scatternet import ScatterNetBody; "
        "from flwr_ppcdl.clients.model import body_fingerprint; "
        f"b = ScatterNetBody(seed={seed}, cache=None); "
        "x = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 28, 28) % 256; "
        "print(json.dumps({'fp': body_fingerprint(b)[0], 'h': b(x).tolist()}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_same_seed_same_body_in_another_process_and_another_seed_differs() -> None:
    here = ScatterNetBody(cache=None)
    there = _fingerprint_elsewhere(seed=7)
    assert there["fp"] == body_fingerprint(here)[0]
    x = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 28, 28) % 256
    assert np.array_equal(np.asarray(there["h"], dtype=np.float32), here(x).numpy())
    assert body_fingerprint(ScatterNetBody(seed=8, cache=None))[0] != body_fingerprint(here)[0]
    assert body_fingerprint(ScatterNetBody(out_dim=64, cache=None))[0] != body_fingerprint(here)[0]


def test_the_body_is_data_independent_and_per_record(images: torch.Tensor) -> None:
    body = ScatterNetBody(cache=None)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    projection = body.projection.clone()
    together = body(images)
    for key, value in body.state_dict().items():  # reading records changes nothing in the body
        assert torch.equal(value, before[key]), key
    assert torch.equal(body.projection, projection)
    # each record's features depend on that record alone: alone, reordered, among other records
    torch.testing.assert_close(body(images[5:6])[0], together[5], rtol=0, atol=1e-6)
    torch.testing.assert_close(body(images.flip(0)).flip(0), together, rtol=0, atol=1e-6)
    body.train()  # no mode-dependent behaviour
    torch.testing.assert_close(body(images), together, rtol=0, atol=1e-6)
    # the pixel layout and dtype are the body's business, not the caller's
    torch.testing.assert_close(body(images.reshape(12, 784).double()), together, rtol=0, atol=1e-6)


def test_every_record_is_bounded_after_the_body_brute_force(images: torch.Tensor) -> None:
    body = ScatterNetBody(cache=None)
    generator = torch.Generator().manual_seed(1)
    scaled = (torch.rand(64, 28, 28, generator=generator) ** 4) * 255  # dark, sparse images
    for batch in (images, scaled, torch.full((2, 28, 28), 17.0)):
        norms = body(batch).double().norm(dim=1)
        assert torch.all(norms <= 1.0), norms.max().item()
    norms = body(images).double().norm(dim=1)
    # a blank image has no coefficients: GroupNorm leaves it 0; every other record sits at the bound
    assert norms[0] == 0.0
    torch.testing.assert_close(norms[1:], torch.full_like(norms[1:], 1.0), rtol=0, atol=2e-6)


def test_what_travels_is_the_definition_and_the_receiver_regenerates_and_checks_it(images: torch.Tensor) -> None:
    sender, receiver = ScatterNetBody(seed=8, cache=None), ScatterNetBody(seed=7, cache=None)
    state = sender.state_dict()
    assert set(state) == {"definition", "checksum"}
    assert sum(v.numel() for v in state.values()) == 23  # not the 3,969 x 128 projection
    assert not body_matches(receiver, body_fingerprint(sender)[1])
    receiver.load_state_dict(state)
    torch.testing.assert_close(receiver(images), sender(images), rtol=0, atol=0)
    assert body_matches(receiver, body_fingerprint(sender)[1])
    # Flower's FedAvg averages every array it gets, the body's too: round-off is not a new body
    averaged = {k: sum(v * w for w in (0.1, 0.2, 0.3, 0.4)) for k, v in state.items()}
    assert not torch.equal(averaged["definition"], state["definition"])
    receiver.load_state_dict(averaged)
    torch.testing.assert_close(receiver(images), sender(images), rtol=0, atol=0)
    forged = {**state, "checksum": state["checksum"] + 1}
    receiver.load_state_dict(forged)
    with pytest.raises(RuntimeError, match="checksum"):
        receiver(images)


def test_the_body_is_registered_and_builds_the_models_contract(images: torch.Tensor) -> None:
    assert "scatternet" in IMAGE_BODIES
    body = make_body("scatternet")
    model = build_model(body, body.out_features, 10)
    assert model(images).shape == (12, 10)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["1.weight", "1.bias"]
    with pytest.raises(ValueError, match="groups must divide"):
        ScatterNetBody(groups=10)
    with pytest.raises(ValueError, match="28x28"):
        body(torch.zeros(2, 30, 30))


# ------------------------------------------------------------------ the feature cache


def _computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the transform to count the records it computes."""
    counts: list[int] = []
    original = ScatterNetBody._compute

    def counting(self: ScatterNetBody, records: np.ndarray) -> np.ndarray:
        counts.append(len(records))
        return original(self, records)

    monkeypatch.setattr(ScatterNetBody, "_compute", counting)
    return counts


def test_the_cache_is_hit_on_the_second_run_and_invalidated_by_a_new_definition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: torch.Tensor
) -> None:
    counts = _computed(monkeypatch)
    first = ScatterNetBody(cache=tmp_path)(images)
    assert counts == [12]
    _FEATURE_CACHES.clear()  # a second run: a new process reading the same folder
    second = ScatterNetBody(cache=tmp_path)(images[3:9])
    assert counts == [12]  # nothing recomputed
    assert torch.equal(second, first[3:9])
    ScatterNetBody(cache=tmp_path)(torch.cat([images[1:3].float(), images[1:3].float() / 2]))
    assert counts == [12, 2]  # only the new records (the same pixels in another dtype are a hit)
    for changed in (ScatterNetBody(seed=8, cache=tmp_path), ScatterNetBody(out_dim=64, cache=tmp_path),
                    ScatterNetBody(groups=9, cache=tmp_path)):
        changed(images)
        assert counts[-1] == 12  # another definition never reads these features
    assert len(list(tmp_path.iterdir())) == 4  # one folder per definition


def test_the_cache_holds_only_digests_and_features_privately(tmp_path: Path, images: torch.Tensor) -> None:
    body = ScatterNetBody(cache=tmp_path)
    expected = body(images).numpy()
    (folder,) = tmp_path.iterdir()
    assert folder.stat().st_mode & 0o777 == 0o700
    chunks = list(folder.glob("*.npz"))
    assert chunks and all(c.stat().st_mode & 0o777 == 0o600 for c in chunks)
    with np.load(chunks[0]) as data:
        assert sorted(data.files) == ["digests", "features"]
        assert data["digests"].shape == (12, 16) and data["features"].shape == (12, 128)
        assert np.array_equal(np.sort(data["features"], axis=0), np.sort(expected, axis=0))
    definition = json.loads((folder / "definition.json").read_text())
    assert definition["key"] == body.cache_key


def test_an_unreadable_chunk_is_skipped_and_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    expected = ScatterNetBody(cache=tmp_path)(images)
    (folder,) = tmp_path.iterdir()
    for chunk in folder.glob("*.npz"):
        chunk.write_bytes(b"not a chunk")
    _FEATURE_CACHES.clear()
    counts = _computed(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="flwr_ppcdl.data.feature_cache"):  # whatever earlier tests set
        assert torch.equal(ScatterNetBody(cache=tmp_path)(images), expected)
    assert counts == [12]
    assert "unreadable" in caplog.text


def test_the_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.setenv(CACHE_DIR_ENV, "off")
    assert default_cache_root() is None
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "flwr_ppcdl"
    cache = FeatureCache("k", 3, None)  # memory only
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(cache.features(rows, lambda r: r * 2), rows * 2)
    assert np.array_equal(cache.features(rows[::-1], lambda r: r * 0), rows[::-1] * 2)  # served, not recomputed


@pytest.mark.slow
def test_the_apps_default_image_body_is_the_scatternet_and_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The App's defaults on 28 x 28 images (mnist5k: 5,000 real digits, offline) run end to end on the
    ScatterNet body; the participants' features land in the cache; the model learns (chance: .1)."""
    from flwr_ppcdl.app.sweep import run_inprocess

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    result = run_inprocess({
        "dataset": "mnist5k", "num-partitions": 3, "unreliable-fraction": 0.0, "num-rounds": 3, "plot": False,
        "result-dir": str(tmp_path / "run"), "insecure-noise-seed": 3,  # reproducible noise: a test, not private
    })
    assert result["settings"]["body"] == "scatternet"
    assert result["final_metrics"]["accuracy"] > 0.5, result["final_metrics"]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
