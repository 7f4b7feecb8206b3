"""docs/results-scatternet.md's tables come from the CSV: the blocks are refilled, never hand-edited."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.scatternet_report import fill_doc, tables

FIELDS = ("section", "contender", "rule", "protocol", "neighbouring", "features", "partitions", "unreliable_fraction",
          "seed", "seed_role", "split", "value", "epsilon_spent", "hyper", "client_cpu_s_whole_run", "error")


def _csv(path: Path, fm: float, sgd: float) -> Path:
    rows = []
    for seed in (0, 1, 2):
        rows.append({"section": "main", "contender": "fm", "rule": "fedavg", "protocol": "statistics",
                     "neighbouring": "add-remove-one", "features": "scatternet-128", "partitions": 10,
                     "unreliable_fraction": 0.0, "seed": seed, "split": "test", "value": fm + seed / 1000,
                     "epsilon_spent": 1.0, "client_cpu_s_whole_run": 0.5})
        rows.append({"section": "main", "contender": "opacus-dpsgd", "rule": "fedavg", "neighbouring": "add-remove-one",
                     "features": "scatternet-128", "partitions": 10, "unreliable_fraction": 0.0, "seed": seed,
                     "split": "test", "value": sgd, "epsilon_spent": 0.99, "client_cpu_s_whole_run": 1.0})
    rows.append({**rows[0], "seed": 3, "value": 0.0, "error": "RuntimeError: a failed cell"})  # never averaged
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_k_scaling_lead_names_the_better_contender_and_failed_cells_are_left_out(tmp_path: Path) -> None:
    row = tables(_csv(tmp_path / "a.csv", fm=0.70, sgd=0.80))["kscale"].splitlines()[2]
    assert row.startswith("| 10 (6,000) |") and "0.701 ± 0.001" in row and row.endswith("DP-SGD by 9.9 pts |")
    row = tables(_csv(tmp_path / "b.csv", fm=0.80, sgd=0.70))["kscale"].splitlines()[2]
    assert row.endswith("FM by 10.1 pts |")


def test_fill_doc_refills_marked_blocks_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table:kscale -->\nstale\n<!-- /table:kscale -->\noutro\n")
    fill_doc(doc, _csv(tmp_path / "a.csv", fm=0.70, sgd=0.80))
    first = doc.read_text()
    assert "stale" not in first and "DP-SGD by 9.9 pts" in first
    assert first.startswith("intro\n<!-- table:kscale -->\n") and first.endswith("<!-- /table:kscale -->\noutro\n")
    fill_doc(doc, _csv(tmp_path / "b.csv", fm=0.80, sgd=0.70))  # the markers stay: a second fill replaces the first
    assert "FM by 10.1 pts" in doc.read_text() and "DP-SGD by" not in doc.read_text()


@pytest.mark.parametrize("text", ["<!-- table:nosuch -->\n<!-- /table:nosuch -->\n", "<!-- table:main -->\nno end\n"])
def test_fill_doc_refuses_unknown_or_unclosed_blocks(tmp_path: Path, text: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match="nosuch|closing"):
        fill_doc(doc, _csv(tmp_path / "a.csv", fm=0.7, sgd=0.8))
    assert doc.read_text() == text  # nothing written
