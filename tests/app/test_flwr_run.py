"""End to end: `flwr run .` on the local simulation runtime, as a user runs the default job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
R2_THRESHOLD = 0.0  # above the zero model: the FM head learned something from private data


def _superlinks() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "bin/flower-superlink"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_flwr_run_default_app_writes_complete_results(tmp_path: Path) -> None:
    flwr = Path(sys.executable).with_name("flwr")
    if not flwr.exists():
        flwr = Path(shutil.which("flwr") or "flwr")
    result_dir = tmp_path / "results"
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    before = _superlinks()
    cmd = [
        str(flwr), "run", str(ROOT), "--stream",
        # fresh noise every run: at epsilon = 1 (4 partitions, 3 rounds) R^2 fell below 0 in 2 of 12
        # in-process runs; at epsilon = 10 it stayed in 0.017-0.020
        "--run-config", f"num-rounds=3 num-partitions=4 epsilon=10.0 result-dir='{result_dir}'",
        "--federation-config", "num-supernodes=4 client-resources-num-cpus=1",
    ]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for pid in _superlinks() - before:  # `flwr run` never stops the SuperLink it started
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 20
        while _superlinks() - before and time.time() < deadline:
            time.sleep(0.5)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    result_file = result_dir / "result.json"
    assert result_file.exists(), log[-3000:]
    result = json.loads(result_file.read_text())
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert result["failures"] == 0
    assert all(r["replies"] == 4 for r in result["rounds"])
    assert result["final_metrics"]["r2"] > R2_THRESHOLD
    assert {p["epsilon"] for p in result["participants"]} == {10.0}
    assert len(result["participants"]) == 4
    assert (result_dir / "summary.png").stat().st_size > 0
    assert (result_dir / "rounds.csv").read_text().count("\n") == 4
    assert "[ppcdl] round 3/3" in log
    assert not (_superlinks() - before), "a SuperLink started by the test is still running"
