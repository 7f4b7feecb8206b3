"""The template screening of stops 39-40: each choice gives templates the ``gap`` can read, the majority's model head
(the library's choice since stop 40) finds flipped labels where the global head learnt them, and the library's choice is
restored after a screening."""

from __future__ import annotations

import numpy as np
import pytest

import flwr_ppcdl.reliability.model as model
from benchmarks import reliability_templates as templates
from flwr_ppcdl.reliability import estimate_reliability
from tests.reliability.test_plain_heads import CLASSES, FEATURES, RECORDS, K, _train


def _taught_by_the_flipped(seed: int, share: float = 0.7, bad: tuple[int, ...] = (7, 8, 9)):
    """One round of ten Dirichlet(0.3)-skewed softmax participants, three with labels y -> y + 1, from a global model
    trained on pooled data of which ``share`` carried flipped labels (the flipped held most of it in earlier rounds)."""
    rng = np.random.default_rng(seed)
    means = 1.5 * rng.standard_normal((CLASSES, FEATURES))

    def sample(labels: np.ndarray) -> np.ndarray:
        return means[labels] + rng.standard_normal((len(labels), FEATURES))

    pooled = rng.integers(0, CLASSES, 2000)
    shown = np.where(rng.random(2000) < share, (pooled + 1) % CLASSES, pooled)
    w, b = _train(np.zeros((CLASSES, FEATURES)), np.zeros(CLASSES), sample(pooled), shown, steps=3)
    uploads = []
    for k in range(K):
        labels = rng.choice(CLASSES, size=RECORDS, p=rng.dirichlet(np.full(CLASSES, 0.3)))
        x = sample(labels)
        uploads.append(list(_train(w, b, x, (labels + 1) % CLASSES if k in bad else labels)))
    return uploads, [w, b]


def _found(variant: str) -> int:
    templates.use(variant)
    found = 0
    for seed in range(10):
        uploads, reference = _taught_by_the_flipped(seed)
        found += int(np.sum(estimate_reliability(uploads, [RECORDS] * K, reference=reference, seed=seed).evidence[7:] > 0))
    return found


def test_the_library_majority_head_finds_flipped_labels_the_global_head_learnt_and_is_restored() -> None:
    try:
        global_head = _found("global")
    finally:
        templates.use("majority")
    assert model._delta_templates is templates.LIBRARY
    library = _found("majority")  # the library's choice since stop 40
    assert library >= 27 and global_head <= 20, (global_head, library)  # of 30 flipped participant-rounds


@pytest.mark.parametrize("variant", list(templates.VARIANTS))
def test_every_template_is_centred_across_classes_and_fits_the_stack(variant: str) -> None:
    rng = np.random.default_rng(2)
    rows, p, k = 4, 6, 5
    lay = model.Layer(rng.normal(size=(k, rows * p)), rng.normal(size=rows * p), None, rows)
    members = np.array([True, True, True, False, False])
    centre = lay.stack[members].mean(axis=0)
    residuals = lay.stack - centre
    got = np.broadcast_to(templates.VARIANTS[variant](lay, centre, residuals, members), lay.stack.shape)
    np.testing.assert_allclose(got.reshape(k, rows, p).sum(axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("rate", [None, 0.25])
def test_drift_templates_follow_their_recursion_and_restart_with_each_run(rate: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``D_t = rate D_{t-1} + m_{t-1} - (g_t - g_{t-1})`` from ``D_1 = 0``; the template is the centred ``g_t + D_t + m_t``,
    and :func:`use` starts the next run from its own head. ``drift`` discounts at the memory rate, ``drift@0.25`` at
    0.25."""
    monkeypatch.setattr(templates, "VARIANTS", dict(templates.VARIANTS))  # a registered rate stays in this test
    name = "drift" if rate is None else templates.drift_variant(rate)
    rate = templates.DRIFT if rate is None else rate
    rng = np.random.default_rng(5)
    rows, p = 3, 4
    heads, updates = rng.normal(size=(3, rows * p)), rng.normal(size=(3, rows * p))
    stack = rng.normal(size=(4, rows * p))
    members = np.ones(4, dtype=bool)
    try:
        for _ in range(2):  # two runs: the second must not inherit the first one's state
            templates.use(name)
            got = [templates.VARIANTS[name](model.Layer(stack, g, None, rows), m, stack - m, members) for g, m in zip(heads, updates, strict=True)]
            d2 = updates[0] - (heads[1] - heads[0])
            d3 = rate * d2 + updates[1] - (heads[2] - heads[1])
            for template, want in zip(got, (heads[0] + updates[0], heads[1] + d2 + updates[1], heads[2] + d3 + updates[2]), strict=True):
                np.testing.assert_allclose(template, templates._centred(want, rows), atol=1e-12)
    finally:
        templates.use("majority")
    assert model._delta_templates is templates.LIBRARY


def test_a_drift_rate_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="got 1.5"):
        templates.drift_variant(1.5)
    assert "drift@1.5" not in templates.VARIANTS


def test_the_oracle_ceiling_reads_the_honest_mean_update_and_the_library_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``oracle`` template of a run's first round is the centred global head plus the honest participants' mean
    update (node ids below ``honest_below``), whatever the majority's; with positions that are not the round's uploads it
    is the majority's ``drift``; :func:`use` puts the library's aggregator back."""
    from flwr_ppcdl.reliability.aggregator import ReliabilityAggregator

    rng = np.random.default_rng(7)
    rows, p = 3, 4
    stack, head, majority = rng.normal(size=(5, rows * p)), rng.normal(size=rows * p), rng.normal(size=rows * p)
    members = np.ones(5, dtype=bool)
    monkeypatch.setitem(templates._ROUND, "honest_below", 1004)
    try:
        templates.use("oracle")
        assert ReliabilityAggregator.weigh is not templates.LIBRARY_WEIGH  # it notes the round's node ids
        monkeypatch.setitem(templates._ROUND, "nodes", np.array([1001, 1004, 1002, 1005, 1003]))
        got = templates.VARIANTS["oracle"](model.Layer(stack, head, None, rows), majority, stack - majority, members)
        np.testing.assert_allclose(got, templates._centred(head + stack[[0, 2, 4]].mean(axis=0), rows), atol=1e-12)
        templates.use("oracle")  # a new run; a block of other positions than the round's uploads
        monkeypatch.setitem(templates._ROUND, "nodes", np.array([1001, 1002]))
        got = templates.VARIANTS["oracle"](model.Layer(stack, head, None, rows), majority, stack - majority, members)
        np.testing.assert_allclose(got, templates._centred(head + majority, rows), atol=1e-12)
    finally:
        templates.use("majority")
    assert ReliabilityAggregator.weigh is templates.LIBRARY_WEIGH and model._delta_templates is templates.LIBRARY
