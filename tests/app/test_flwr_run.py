"""End to end on Flower's local simulation runtime, as a user types it (#12.8-12.10).

* ``flwr run .`` on a fresh Flower home (Flower simulates 2 SuperNodes) stops within seconds with the
  exact command to type, instead of waiting forever for 10 SuperNodes;
* ``bash scripts/run.sh`` (the README's command): two runs at once on one machine both finish, each
  with its own SuperLink and ports, complete results and the oracle reference; every process a run
  started is gone afterwards;
* a failed run exits non-zero with the reason (a bad run-config value before anything starts, or a
  ServerApp that stops).

Processes are stopped by PID only: the SuperLink plain ``flwr run`` leaves behind is found by the
unique port this test gave it.
"""

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

from flwr_ppcdl.app.local_run import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "scripts" / "run.sh"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")  # fresh: no federation configured
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    return env


def _pids_with(*parts: str) -> list[int]:
    """PIDs whose command line contains every one of ``parts`` (exact argv entries)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if all(any(p in w for w in words) for p in parts):
                found.append(int(entry.name))
    return found


def _stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)  # flwr starts its SuperLink in a session of its own
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.3)


def test_plain_flwr_run_on_a_fresh_home_fails_fast_with_the_command_to_type(tmp_path: Path) -> None:
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    port, control = free_port(), free_port()
    env = _env(tmp_path) | {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port), "FLWR_LOCAL_CONTROL_API_PORT": str(control)}
    result_dir = tmp_path / "results"
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [flwr, "run", ".", "--stream", "--run-config", f"result-dir='{result_dir}'"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )
    finally:
        _stop(_pids_with("flower-superlink", f"127.0.0.1:{control}"))
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert "this run needs 10 SuperNodes" in log and "but 2 are connected" in log, log[-3000:]
    assert 'flwr run . --federation-config "num-supernodes=10"' in log
    assert "Waiting for nodes to connect" not in log
    assert not (result_dir / "result.json").exists()
    assert (result_dir / "error.txt").exists()
    assert elapsed < 200  # SuperLink and Ray start-up included; the ServerApp itself gives up in ~5 s
    assert not _pids_with("flower-superlink", f"127.0.0.1:{control}")


def _run_sh(tmp_path: Path, name: str, run_config: str, **env: str) -> subprocess.Popen[str]:
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["bash", str(RUN_SH), "--run-config", run_config], cwd=tmp_path, env=_env(tmp_path) | env,
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )


def test_two_runs_at_once_both_finish_with_complete_results(tmp_path: Path) -> None:
    runs = {
        name: _run_sh(tmp_path, name, f"num-rounds=2 num-partitions=3 seed={i} result-dir='{tmp_path / name}'")
        for i, name in enumerate(("a", "b"))
    }
    try:
        codes = {name: proc.wait(timeout=600) for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in runs}
    for name, code in codes.items():
        assert code == 0, logs[name][-3000:]
        result = json.loads((tmp_path / name / "result.json").read_text())
        assert [r["round"] for r in result["rounds"]] == [1, 2]
        assert result["failures"] == 0 and all(r["replies"] == 3 for r in result["rounds"])
        assert all(1.0 - 1e-6 < p["epsilon"] <= 1.0 and p["delta"] == 1e-5 for p in result["participants"])  # Gaussian default
        assert len(result["participants"]) == 3
        assert "simulation-only oracle" in result["reference_note"] and "r2" in result["reference"]
        assert (tmp_path / name / "summary.png").stat().st_size > 0
        assert "[ppcdl] round 2/2" in logs[name] and "non-private centralised reference" in logs[name]
    ports = [line.split("127.0.0.1:")[1].split()[0] for log in logs.values() for line in log.splitlines()
             if line.startswith("[ppcdl] SuperLink on")]
    assert len(set(ports)) == 2  # each run its own SuperLink
    for port in ports:
        assert not _pids_with("flower-superlink", port)  # and stopped it


def test_a_failed_run_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    bad = _run_sh(tmp_path, "bad", "epsilon=-1")
    assert bad.wait(timeout=120) == 2
    assert "epsilon" in (tmp_path / "bad.log").read_text() and "-1" in (tmp_path / "bad.log").read_text()
    short = _run_sh(tmp_path, "short", f"num-partitions=3 num-rounds=1 result-dir='{tmp_path / 'short'}'", NUM_SUPERNODES="2")
    code = short.wait(timeout=600)
    log = (tmp_path / "short.log").read_text()
    assert code == 1, log[-3000:]
    assert "the run FAILED" in log and "this run needs 3 SuperNodes" in log
    assert not (tmp_path / "short" / "result.json").exists()
