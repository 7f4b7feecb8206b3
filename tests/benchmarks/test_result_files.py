"""Result files and what the summaries compute from them: a CSV written before a column was added keeps every row
when rows are appended; the false-alarm rate weighs seeds, not rows; the seed roles do not overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability_common import (
    DIAGNOSIS_SEEDS,
    REPORT_SEEDS,
    STUDY_SEEDS,
    TUNE_SEEDS,
    append_rows,
    false_alarm_rate,
    read_rows,
    seed_role,
)


def test_appending_with_a_new_column_keeps_the_old_rows_and_leaves_their_new_column_empty(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    append_rows(path, ["rule", "accuracy"], [{"rule": "ours", "accuracy": 0.75}])
    append_rows(path, ["rule", "accuracy", "overruled_bad"], [{"rule": "ours-server", "accuracy": 0.7, "overruled_bad": 0.9}])
    assert read_rows(path) == [{"rule": "ours", "accuracy": "0.75", "overruled_bad": ""},
                               {"rule": "ours-server", "accuracy": "0.7", "overruled_bad": "0.9"}]
    with pytest.raises(ValueError, match="accuracy"):  # dropping a column would lose data: refused
        append_rows(path, ["rule", "overruled_bad"], [{"rule": "x", "overruled_bad": 1}])
    assert len(read_rows(path)) == 2


def test_the_false_alarm_rate_weighs_every_seed_once_and_its_interval_resamples_seeds() -> None:
    # seed 1 ran five times, seed 2 once: the rate is the mean of the two seeds' means, not of the six rows
    rows = [{"seed": "1", "false_alarms": "0.0"}] * 5 + [{"seed": "2", "false_alarms": "0.1"}, {"seed": "3", "false_alarms": "nan"}]
    rate, low, high = false_alarm_rate(rows)
    assert rate == pytest.approx(0.05) and (low, high) == (0.0, 0.1)  # fewer than five seeds: their range
    many = [{"seed": str(s), "false_alarms": str(0.01 * (s % 5))} for s in range(40)]
    rate, low, high = false_alarm_rate(many)
    assert rate == pytest.approx(0.02) and 0.0 < low < rate < high < 0.04
    assert all(v != v for v in false_alarm_rate([]))  # no rows: NaN, not an error


def test_the_seed_roles_keep_the_study_and_diagnosis_seeds_apart() -> None:
    assert {seed_role(s) for s in STUDY_SEEDS} == {"study"} and {seed_role(s) for s in DIAGNOSIS_SEEDS} == {"tune"}
    assert not set(STUDY_SEEDS) & set(TUNE_SEEDS + DIAGNOSIS_SEEDS + REPORT_SEEDS)


def test_a_candidates_goals_use_its_ours_rows_and_its_paired_changes_use_the_seeds_both_measured(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.reliability_calibrated import FIELDS, summary

    def row(rule: str, seed: int, value: float, kept: float, code: str) -> dict[str, object]:
        return {f: "nan" for f in FIELDS} | {
            "dataset": "census2000", "protocol": "statistics", "kind": "random-targets", "fraction": 0.0,
            "partitioning": "dirichlet", "epsilon": 1.0, "seed": seed, "seed_role": seed_role(seed), "rounds": 30,
            "rule": rule, "metric": "r2", "value": value, "honest_kept": kept, "false_alarms": 1.0 - kept,
            "undecidable_rounds": 0, "code_version": code, "packages": "p"}

    library, candidate = tmp_path / "library.csv", tmp_path / "candidate.csv"
    append_rows(library, FIELDS, [row("fedavg", s, 0.08, 1.0, "lib") for s in (3, 4)]
                + [row("ours", s, 0.08, 1.0, "lib") for s in (3, 4)])
    append_rows(candidate, FIELDS, [row("ours", 3, 0.07, 0.9, "cand"), row("ours", 4, 0.05, 0.9, "cand"),
                                    row("ours", 5, 0.0, 0.0, "cand")])  # seed 5: the library has no row to pair with
    summary(library, tmp_path / "no-previous.csv", candidate)
    out = capsys.readouterr().out
    table = next(line for line in out.splitlines() if line.startswith("statistics census20"))
    assert " 0.040 " in table and table.endswith("HONEST KEPT")  # the candidate's three seeds, kept .6 < .95
    assert "code cand, lib" in out  # both versions named
    paired = next(line for line in out.splitlines() if line.startswith("report ") and "->" in line)
    assert "  2 |  0.080 ->  0.060 (-0.020 +- 0.010)" in paired and "1.00 -> 0.90" in paired


def test_a_plain_candidate_replaces_the_rows_it_measured_and_pairs_ours_per_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.reliability_plain import FIELDS, summary

    def row(rule: str, seed: int, accuracy: float, code: str) -> dict[str, object]:
        return {f: "nan" for f in FIELDS} | {
            "group": "small", "scenario": "flipped", "partitioning": "iid", "clients": 10, "bad": 3, "seed": seed,
            "seed_role": seed_role(seed), "rounds": 10, "rule": rule, "accuracy": accuracy, "auroc": 1.0, "bad_mass": 0.0,
            "honest_kept": 1.0, "false_alarms": 0.0, "undecidable_rounds": 0, "code_version": code, "packages": "p"}

    library, candidate = tmp_path / "library.csv", tmp_path / "candidate.csv"
    append_rows(library, FIELDS, [row(rule, s, acc, "lib") for s in (3, 4) for rule, acc in
                                  (("fedavg", 0.3), ("oracle", 0.8), ("multikrum", 0.8), ("ours", 0.8))])
    # seed 3 ran twice (their mean is the seed's figure); seed 5: the library has no row to pair with
    append_rows(candidate, FIELDS, [row("ours", 3, 0.70, "cand"), row("ours", 3, 0.74, "cand"), row("ours", 4, 0.76, "cand"),
                                    row("ours", 5, 0.1, "cand")])
    summary(library, candidate)
    out = capsys.readouterr().out
    assert "ours (code cand;" in out  # the goals read the candidate's rows of ours
    paired = next(line for line in out.splitlines() if line.startswith("accuracy") and "flipped" in line)
    assert "  2 |  0.800 ->  0.740 (-0.060 +- 0.020)" in paired
