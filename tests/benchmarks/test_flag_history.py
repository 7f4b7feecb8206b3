"""The flag-history screen's replay: a hold keeps every flag it is given, holds exactly while k of the last w rounds
were flagged, and the shares count what their names say."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from benchmarks.reliability_flag_history import held, shares

T, F = True, False


def test_a_hold_keeps_a_participant_flagged_while_k_of_its_last_w_rounds_were() -> None:
    flags = [F, T, F, T, T, F, F, F, F, F]
    # flagged in 3 of the last 5 from round 4 (0-based) to round 5; round 6's window (2-6) holds two flags only
    assert held(flags, 3, 5) == [F, T, F, T, T, T, F, F, F, F]
    assert held(flags, 2, 3) == [F, T, F, T, T, T, F, F, F, F]  # round 2 sees one flag in its window
    assert held(flags, 1, 1) == flags  # a hold of one round is no hold
    for k, w in ((3, 5), (2, 3), (3, 10)):
        assert all(h for f, h in zip(flags, held(flags, k, w), strict=True) if f)  # never removes a flag


def test_the_shares_count_rounds_participants_and_readmissions() -> None:
    seqs = [[F, T, F, T], [F, F, F, F], [T, T, T, T]]
    got = shares(seqs)
    assert got["flagged"] == pytest.approx(6 / 12)
    assert got["ever"] == pytest.approx(2 / 3)
    assert got["readmitted"] == pytest.approx(1 / 5)  # after the first flag: [F, T] and [T, T, T]
    assert got["last"] == pytest.approx(2 / 3)
    assert math.isnan(shares([[F, F]])["readmitted"])  # never flagged: nothing to let back in


def test_a_scenario_the_screen_does_not_run_is_refused_before_any_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import benchmarks.reliability_flag_history as history

    ran: list[object] = []
    monkeypatch.setattr(history, "record", lambda cell: ran.append(cell))
    monkeypatch.setattr(sys, "argv", ["reliability_flag_history", "--seeds", "0", "--scenarios", "flipped", "mode2",
                                      "--out", str(tmp_path / "h.jsonl")])
    with pytest.raises(SystemExit, match=r"unknown scenarios \['mode2'\]: the screen runs \['none', 'flipped', 'random-labels', 'sign-flip'\]"):
        history.main()
    assert not ran and not (tmp_path / "h.jsonl").exists()
