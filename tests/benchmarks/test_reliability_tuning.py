"""The tuning study's tooling: variant rules parse strictly, reporting seeds are refused, and the table's
paired differences are the per-seed differences' mean and standard error."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import reliability_plain, reliability_tuning
from benchmarks.reliability_common import REPORT_SEEDS, append_rows


def test_a_variant_rule_gives_its_option_overrides() -> None:
    assert reliability_plain.variant_options("ours:memory_rate=0.8,max_coordinates=5000,seed=None") == {
        "memory_rate": 0.8, "max_coordinates": 5000, "seed": None}
    with pytest.raises(ValueError, match="'memory_rate'"):
        reliability_plain.variant_options("ours:memory_rate")


def test_the_study_refuses_reporting_seeds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[object] = []
    monkeypatch.setattr(reliability_plain, "run", lambda *a: ran.append(a))
    monkeypatch.setattr(sys, "argv", ["reliability_tuning", "--variants", "memory_rate=0.8", "--seeds", "0", str(REPORT_SEEDS[0]),
                                      "--out", str(tmp_path / "t.csv")])
    with pytest.raises(SystemExit, match=f"seeds \\[{REPORT_SEEDS[0]}\\] are not tuning seeds"):
        reliability_tuning.main()
    assert not ran


def test_the_table_pairs_variants_by_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, other = [0.70, 0.60, 0.80], [0.72, 0.65, 0.79]
    rows = [{"group": "small", "scenario": "none", "partitioning": "iid", "clients": 10, "bad": 0, "seed": seed,
             "seed_role": "tune", "rounds": 10, "rule": rule, "accuracy": acc, "code_version": "abc1234", "packages": "x"}
            for rule, accs in (("ours:memory_rate=0.5", base), ("ours:memory_rate=0.8", other))
            for seed, acc in zip((0, 1, 2), accs, strict=True)]
    append_rows(tmp_path / "t.csv", reliability_plain.FIELDS, [{**{f: math.nan for f in reliability_plain.FIELDS}, **r} for r in rows])
    reliability_tuning.summary(tmp_path / "t.csv")
    out = capsys.readouterr().out
    diff = np.subtract(other, base)
    se = float(np.std(diff, ddof=1) / math.sqrt(3))
    line = next(x for x in out.split("accuracy")[1].splitlines() if x.startswith("none"))
    assert f"{np.mean(base):.3f} (n=3)" in line and f"{np.mean(other):.3f} ({np.mean(diff):+.3f}+-{se:.3f})" in line


def test_the_dirichlet_cells_split_by_the_unreliable_share_of_the_data(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The plain summary's breakdown: each seed lands on its side of ``SHARE_SPLIT`` by the unreliable clients' data
    share, each row is the mean over its seeds, and the cells without corruption, or IID, are left out."""
    shares = {16: 0.2, 17: 0.25, 18: 0.45}
    monkeypatch.setattr(reliability_plain, "unreliable_share", lambda seed: shares[seed])
    accuracy = {("ours", 16): 0.70, ("ours", 17): 0.74, ("ours", 18): 0.40, ("fedavg", 16): 0.6, ("fedavg", 17): 0.6, ("fedavg", 18): 0.3}
    rows = [{"group": "small", "scenario": "flipped", "partitioning": "dirichlet", "seed": str(seed), "rule": rule, "accuracy": str(acc)}
            for (rule, seed), acc in accuracy.items()]
    rows += [{"group": "small", "scenario": s, "partitioning": p, "seed": "16", "rule": "ours", "accuracy": "0.1"}
             for s, p in (("none", "dirichlet"), ("flipped", "iid"))]
    reliability_plain._by_share(rows)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith(("flipped", "none"))]
    assert len(lines) == 2
    assert "share < 0.3" in lines[0] and "2 seeds" in lines[0] and "fedavg 0.600" in lines[0] and "ours 0.720" in lines[0]
    assert "share >= 0.3" in lines[1] and "1 seeds" in lines[1] and "ours 0.400" in lines[1]


def test_the_plain_summary_names_a_role_whose_contender_rows_are_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows of ``ours`` deleted to be measured again (or not measured yet) on one seed role: the summary says so for
    that role and still prints the others' tables, instead of failing after the run."""
    cell = {"group": "small", "scenario": "none", "partitioning": "iid", "clients": 10, "bad": 0, "rounds": 10, "accuracy": 0.8,
            "code_version": "abc1234", "packages": "x"}
    rows = [{**cell, "seed": 3, "seed_role": "report", "rule": rule} for rule in ("ours", "fedavg")]
    rows.append({**cell, "seed": 16, "seed_role": "study", "rule": "fedavg"})
    append_rows(tmp_path / "p.csv", reliability_plain.FIELDS, [{**{f: math.nan for f in reliability_plain.FIELDS}, **r} for r in rows])
    reliability_plain.summary(tmp_path / "p.csv")
    out = capsys.readouterr().out
    assert "## report seeds [3], ours" in out and "## study seeds: no rows of ours" in out


def test_a_seed_with_several_runs_counts_once_at_its_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--runs N`` rows: the table pairs each seed's mean over its runs (not its last run), and n counts seeds."""
    runs = {("ours:memory_rate=0.5", 0): [0.70], ("ours:memory_rate=0.5", 1): [0.60],
            ("ours:memory_rate=0.8", 0): [0.72, 0.76], ("ours:memory_rate=0.8", 1): [0.50, 0.64, 0.68]}
    rows = [{"group": "small", "scenario": "none", "partitioning": "iid", "clients": 10, "bad": 0, "seed": seed, "seed_role": "tune",
             "rounds": 10, "rule": rule, "accuracy": acc, "code_version": "abc1234", "packages": "x"}
            for (rule, seed), accs in runs.items() for acc in accs]
    append_rows(tmp_path / "t.csv", reliability_plain.FIELDS, [{**{f: math.nan for f in reliability_plain.FIELDS}, **r} for r in rows])
    reliability_tuning.summary(tmp_path / "t.csv")
    line = next(x for x in capsys.readouterr().out.split("accuracy")[1].splitlines() if x.startswith("none"))
    means = [np.mean(runs[("ours:memory_rate=0.8", s)]) for s in (0, 1)]
    diff = np.subtract(means, [0.70, 0.60])
    se = float(np.std(diff, ddof=1) / math.sqrt(2))
    assert "0.650 (n=2)" in line and f"{np.mean(means):.3f} ({np.mean(diff):+.3f}+-{se:.3f})" in line


def test_runs_and_scenarios_choose_what_is_measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--scenarios`` measures those cells only; ``--runs 2`` tops each cell up to two rows at this code version (a
    second call measures nothing more)."""
    measured: list[tuple[str, str, str]] = []

    def fake(cell: dict[str, object], rule: str) -> dict[str, object]:
        measured.append((str(cell["scenario"]), str(cell["partitioning"]), rule))
        row = {**{f: math.nan for f in reliability_plain.FIELDS}, **cell, "rule": rule, "accuracy": 0.5, "seconds": 0.0,
               "seed_role": "tune", "code_version": "v1", "packages": "x"}
        return {f: row[f] for f in reliability_plain.FIELDS}

    monkeypatch.setattr(reliability_plain, "measured", fake)
    monkeypatch.setattr(reliability_tuning, "provenance", lambda: {"code_version": "v1", "packages": "x"})
    argv = ["reliability_tuning", "--variants", "memory_rate=0.8", "--seeds", "0", "--scenarios", "flipped", "--runs", "2",
            "--out", str(tmp_path / "t.csv")]
    monkeypatch.setattr(sys, "argv", argv)
    reliability_tuning.main()
    assert sorted(measured) == [("flipped", p, "ours:memory_rate=0.8") for p in ("dirichlet", "dirichlet", "iid", "iid")]
    reliability_tuning.main()
    assert len(measured) == 4


@pytest.mark.parametrize("tool", ["reliability_tuning", "reliability_plain"])
def test_a_misspelt_scenario_or_group_is_refused_naming_those_that_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                          tool: str) -> None:
    """``--scenarios fliped`` used to run nothing and print an empty table; it is refused before any run, and the message
    names the scenarios the chosen groups hold. An unknown ``--groups`` entry is refused the same way."""
    ran: list[object] = []
    monkeypatch.setattr(reliability_plain, "measured", lambda *a: ran.append(a))
    head = ["--variants", "memory_rate=0.8", "--seeds", "0"] if tool == "reliability_tuning" else ["--seeds", "0", "--groups", "small"]
    module = reliability_tuning if tool == "reliability_tuning" else reliability_plain
    monkeypatch.setattr(sys, "argv", [tool, *head, "--scenarios", "flipped", "fliped", "--out", str(tmp_path / "t.csv")])
    with pytest.raises(SystemExit, match=r"unknown scenarios \['fliped'\]: groups \['small'\] hold \['none', 'flipped', "
                                         r"'random-labels', 'sign-flip', 'mode2', 'random-uploads'\]"):
        module.main()
    with pytest.raises(SystemExit, match=r"unknown groups \['smal'\]: the groups are \['small', 'collusion', 'scale'\]"):
        reliability_plain.chosen_cells(["smal"], [0], False, None)
    with pytest.raises(SystemExit, match=r"unknown scenarios \['collude'\]"):  # the collusion group's, not small's
        reliability_plain.chosen_cells(["small"], [0], False, ["collude"])
    assert not ran and not (tmp_path / "t.csv").exists()
    assert {c["scenario"] for c in reliability_plain.chosen_cells(["small", "collusion"], [0], False, ["collude"])} == {"collude"}


def test_a_seed_figure_is_the_mean_of_its_runs_without_empty_values() -> None:
    """``seed_means``, the one helper the three summaries share: rows grouped by the key, empty and NaN values skipped, a
    key with no value left out."""
    from benchmarks.reliability_common import seed_means

    rows = [{"rule": "a", "seed": "0", "accuracy": v} for v in ("0.5", "0.7", "", "nan")]
    rows += [{"rule": "a", "seed": "1", "accuracy": "0.4"}, {"rule": "b", "seed": "0", "accuracy": "nan"}]
    assert seed_means(rows, "accuracy", lambda r: (r["rule"], r["seed"])) == {("a", "0"): pytest.approx(0.6), ("a", "1"): 0.4}


def test_seed_figures_by_rule_take_the_summaries_names_in_seed_order() -> None:
    """``by_rule``: the tuning and template summaries' one reshaping of ``seed_means``' ``(rule, seed)`` keys -- each rule
    under its display name, its seeds ascending as integers (seed "10" after seed "2"), every figure kept."""
    from benchmarks.reliability_common import by_rule

    means = {("ours:templates=a", "10"): 0.1, ("ours:templates=a", "2"): 0.2, ("ours:templates=b", "2"): 0.3}
    got = by_rule(means, lambda rule: rule.removeprefix("ours:templates="))
    assert got == {"a": {2: 0.2, 10: 0.1}, "b": {2: 0.3}}
    assert list(got["a"]) == [2, 10]
    assert by_rule(means)["ours:templates=b"] == {2: 0.3}


def test_each_group_builds_its_own_cells_and_names_the_unreliable_nodes() -> None:
    """``GROUPS`` is the one table of groups: each group's cells carry its name, the quick cells are the small group's
    eight corruption cells, and ``unreliable_nodes`` names the last ``bad`` clients' nodes -- none for an honest second
    data mode, which is nobody's to exclude."""
    cells = reliability_plain.cells(list(reliability_plain.GROUPS), [7], False)
    assert {c["group"] for c in cells} == set(reliability_plain.GROUPS)
    for name in reliability_plain.GROUPS:
        assert reliability_plain.cells([name], [7], False) == [c for c in cells if c["group"] == name]
    quick = reliability_plain.cells(list(reliability_plain.GROUPS), [7], True)
    assert len(quick) == 8 and all(c in cells and c["group"] == "small" for c in quick)
    by_scenario = {c["scenario"]: c for c in cells if c["group"] == "small"}
    assert reliability_plain.unreliable_nodes(by_scenario["flipped"]) == [1008, 1009, 1010]
    assert reliability_plain.unreliable_nodes(by_scenario["random-uploads"]) == list(range(1011, 1021))
    assert reliability_plain.unreliable_nodes(by_scenario["none"]) == []
    assert reliability_plain.unreliable_nodes(by_scenario["mode2"]) == []


def test_a_run_hands_its_strategy_to_the_caller_and_scores_the_named_unreliable_nodes() -> None:
    """``run(cell, rule, made)`` appends the strategy it drove, so a screen reads the very history the row's figures
    come from: recomputed from that history with ``unreliable_nodes`` as the flags, they are the row's."""
    from flwr_ppcdl.data.images import DEFAULT_FASHION_DIR

    if not Path(DEFAULT_FASHION_DIR).is_dir():
        pytest.skip(f"no Fashion-MNIST at {DEFAULT_FASHION_DIR} (optional: dataset-fashion-mnist)")
    from benchmarks.reliability_common import weight_statistics

    cell = {"group": "small", "scenario": "flipped", "partitioning": "iid", "clients": 10, "bad": 3, "per_client": 60,
            "rounds": 2, "seed": 0}
    made: list[object] = []
    got = reliability_plain.run(cell, "ours", made) or {}
    assert len(made) == 1
    history = made[0].reliability_history  # type: ignore[attr-defined]
    assert len(history) == 2
    flags = {n: n in reliability_plain.unreliable_nodes(cell) for n in history[0].weights}
    assert sum(flags.values()) == 3
    again = weight_statistics([r.weights for r in history], [r.fedavg_share for r in history], flags, [r.evidence for r in history])
    for key in ("auroc", "bad_mass", "honest_kept", "false_alarms"):
        assert again[key] == pytest.approx(got[key], nan_ok=True)
