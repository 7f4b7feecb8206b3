"""The legacy truth-discovery estimator (``method="truth_discovery"``, kept for comparison): its
per-unit alignment gate (label skew) and method-specific tolerance defaults."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_ppcdl.reliability import DEFAULT_TOLERANCE, estimate_reliability, reliability_weights

C, D = 10, 12
LEGACY = {"method": "truth_discovery"}


def skewed_heads(seed: int, k: int = 10, n_bad: int = 3, noise: float = 0.35):
    """Linear heads (C x D) under label skew.

    Honest participant: rows of the 3 classes it holds = true rows (+ own scale), other
    rows weak and pulled towards a participant-specific direction (its non-IID bias);
    random-label participant: no class signal, small norm (near zero) plus noise.
    Returns uploads, counts and the mask of random-label participants.
    """
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(C, D))
    bad = np.zeros(k, dtype=bool)
    bad[rng.choice(k, n_bad, replace=False)] = True
    ups, counts = [], rng.integers(800, 1600, size=k)
    for i in range(k):
        if bad[i]:
            head = 0.25 * noise * rng.normal(size=(C, D)) + noise * rng.normal(size=(C, D))
        else:
            held = rng.choice(C, 3, replace=False)
            head = 0.15 * truth + 1.2 * rng.normal(size=(C, D)) * 0.5
            head[held] = rng.uniform(1.0, 2.0) * truth[held]
            head += noise * rng.normal(size=(C, D))
        ups.append([head])
    return ups, counts, bad


@pytest.mark.parametrize("seed", range(5))
def test_per_unit_gate_downweights_random_labels_under_label_skew(seed: int) -> None:
    ups, counts, bad = skewed_heads(seed)
    fa = counts / counts.sum()
    w = reliability_weights(ups, counts, seed=seed, **LEGACY)
    assert w[bad].sum() <= 0.5 * fa[bad].sum()
    assert w[~bad].sum() >= 0.5 * fa[~bad].sum()
    # the random-label participants are the ones at the bottom, all but rarely
    assert np.sum(w[~bad][:, None] > w[bad][None, :]) >= 0.9 * (~bad).sum() * bad.sum()


def test_per_unit_gate_beats_whole_layer_gate_on_skewed_heads() -> None:
    mass_units, mass_flat = [], []
    for seed in range(6):
        ups, counts, bad = skewed_heads(seed)
        fa = counts / counts.sum()
        mass_units.append(reliability_weights(ups, counts, seed=0, **LEGACY)[bad].sum() / fa[bad].sum())
        w_flat = reliability_weights(ups, counts, seed=0, alignment_units=1, **LEGACY)
        mass_flat.append(w_flat[bad].sum() / fa[bad].sum())
    assert np.mean(mass_units) < np.mean(mass_flat)


def test_gate_is_neutral_when_every_upload_is_noise_dominated() -> None:
    rng = np.random.default_rng(4)
    truth = 0.02 * rng.normal(size=(C, D))  # signal far below the noise
    ups = [[truth + rng.normal(size=(C, D))] for _ in range(10)]
    counts = np.full(10, 100)
    with_units = estimate_reliability(ups, counts, seed=0, **LEGACY)
    without = estimate_reliability(ups, counts, seed=0, alignment_units=1, **LEGACY)
    # equal up to the iteration's convergence threshold (tol=1e-7 on the weights)
    np.testing.assert_allclose(with_units.weights, without.weights, atol=1e-6)


def test_weights_are_permutation_equivariant_and_scale_invariant() -> None:
    ups, counts, _ = skewed_heads(1)
    w = reliability_weights(ups, counts, seed=0, **LEGACY)
    perm = np.random.default_rng(0).permutation(len(ups))
    w_perm = reliability_weights([ups[i] for i in perm], counts[perm], seed=0, **LEGACY)
    np.testing.assert_allclose(w_perm, w[perm], atol=1e-9)
    w_scaled = reliability_weights([[7.5 * a for a in u] for u in ups], counts, seed=0, **LEGACY)
    np.testing.assert_allclose(w_scaled, w, atol=1e-9)


def test_units_follow_output_rows_of_2d_layers_only() -> None:
    from flwr_ppcdl.reliability.sketch import _unit_ids

    cols = np.arange(6 * 4)
    np.testing.assert_array_equal(_unit_ids((6, 4), cols, len(cols), 64), np.repeat(np.arange(3), 8))
    np.testing.assert_array_equal(_unit_ids((24,), cols, len(cols), 64), np.zeros(24))
    # at most max_units units
    many = np.arange(1000 * 16)
    assert _unit_ids((1000, 16), many, len(many), 64).max() + 1 <= 64


@pytest.mark.parametrize("bad", [{"alignment_units": 0}, {"alignment_relax": 0.0}, {"alignment_relax": 1.5}])
def test_alignment_options_are_validated(bad) -> None:
    with pytest.raises(ValueError, match="alignment_"):
        estimate_reliability([[np.ones(3)], [np.zeros(3)]], [1, 1], **bad, **LEGACY)


def test_server_data_default_tolerance_is_1_2() -> None:
    assert DEFAULT_TOLERANCE["server_data"] == 1.2
    ups = [[np.zeros(2)]] * 4
    losses = [1.0, 1.15, 1.3, 2.0]
    res = estimate_reliability(ups, [1] * 4, method="server_data", server_losses=losses, max_share=None)
    explicit = estimate_reliability(
        ups, [1] * 4, method="server_data", server_losses=losses, max_share=None, tolerance=1.2
    )
    np.testing.assert_allclose(res.weights, explicit.weights)
    assert res.reliability[0] == res.reliability[1] == 1.0  # within 1.2x of the best: no penalty
    assert res.reliability[2] < 1.0 and res.reliability[3] < res.reliability[2]
    # truth discovery keeps 1.5
    td = estimate_reliability(ups, [1] * 4, tolerance=None, **LEGACY)
    td_explicit = estimate_reliability(ups, [1] * 4, tolerance=1.5, **LEGACY)
    np.testing.assert_allclose(td.weights, td_explicit.weights)


def test_per_unit_statistics_stay_within_memory_budget(monkeypatch) -> None:
    from flwr_ppcdl.reliability import sketch, truth_discovery

    seen: list[int] = []
    original = sketch.layer_grams

    def spy(*args, **kwargs):
        stats = original(*args, **kwargs)
        seen.append(sum(st.unit_raw.size for st in stats))
        return stats

    monkeypatch.setattr(truth_discovery, "layer_grams", spy)
    rng = np.random.default_rng(0)
    k, layers = 50, 120
    ups = [[rng.normal(size=(64, 8)) for _ in range(layers)] for _ in range(k)]
    w = reliability_weights(ups, np.full(k, 10), seed=0, **LEGACY)
    assert np.isclose(w.sum(), 1.0)
    assert seen and seen[0] <= sketch.UNIT_BUDGET
