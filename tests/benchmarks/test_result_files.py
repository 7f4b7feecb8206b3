"""Resumable result files: a CSV written before a column was added keeps every row when rows are appended."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability_common import append_rows, read_rows


def test_appending_with_a_new_column_keeps_the_old_rows_and_leaves_their_new_column_empty(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    append_rows(path, ["rule", "accuracy"], [{"rule": "ours", "accuracy": 0.75}])
    append_rows(path, ["rule", "accuracy", "overruled_bad"], [{"rule": "ours-server", "accuracy": 0.7, "overruled_bad": 0.9}])
    assert read_rows(path) == [{"rule": "ours", "accuracy": "0.75", "overruled_bad": ""},
                               {"rule": "ours-server", "accuracy": "0.7", "overruled_bad": "0.9"}]
    with pytest.raises(ValueError, match="accuracy"):  # dropping a column would lose data: refused
        append_rows(path, ["rule", "overruled_bad"], [{"rule": "x", "overruled_bad": 1}])
    assert len(read_rows(path)) == 2
