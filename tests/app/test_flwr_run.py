"""End to end on Flower's local simulation runtime, as a user types it (#12.8-12.10, #24).

* plain ``flwr run .`` on a fresh Flower home, without any of the variables the other tests set
  (Flower's runtime dependency install runs: ``uv sync`` of the App's pyproject.toml), writes the
  result of a run with one participant per SuperNode (Flower's default: 2);
* ``bash scripts/run.sh`` (the README's command): the default job prints at most 60 lines; two runs
  at once on one machine both finish, each with its own SuperLink and ports, complete results and
  the oracle reference; every process a run started is gone afterwards;
* a failed run exits non-zero with the reason (a bad run-config value before anything starts, or a
  ServerApp that stops).

Processes are stopped by PID only: those of plain ``flwr run`` are found by the Flower home this
test gave them (``/proc/<pid>/environ``).
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

from flwr_ppcdl.app.deploy_setup import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "scripts" / "run.sh"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")  # fresh: no federation configured
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env["PPCDL_RESULTS"] = str(tmp_path / "results")
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


def _pids_of_home(home: Path) -> list[int]:
    """PIDs of the processes started with ``FLWR_HOME=home`` (the SuperLink and its children)."""
    mark = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.3)


def test_plain_flwr_run_as_typed_writes_the_result(tmp_path: Path) -> None:
    """None of the variables the other tests set (so Flower runs its runtime dependency install,
    ``uv sync``), but those a shared, offline test machine needs: a fresh FLWR_HOME, two free
    ports, a results base outside the checkout, and no telemetry."""
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    home = tmp_path / "flwr-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "RAY_", "HF_", "PPCDL_"))}
    env.update({
        "FLWR_HOME": str(home), "PPCDL_RESULTS": str(tmp_path / "results"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
        "FLWR_TELEMETRY_ENABLED": "0",  # tests run offline (not an App setting)
    })
    result = tmp_path / "results" / "latest" / "result.json"
    try:
        typed = subprocess.run([flwr, "run", "."], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert typed.returncode == 0 and "Successfully started run" in typed.stdout, typed.stdout + typed.stderr
        run_id = typed.stdout.split("Successfully started run")[1].split()[0]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not result.exists():
            time.sleep(1.0)
        log = subprocess.run([flwr, "log", run_id, "--show"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        _stop(_pids_of_home(home))
    assert result.exists(), log.stdout[-4000:]
    assert "App dependencies installed successfully via uv sync" in log.stdout, log.stdout[-4000:]
    saved = json.loads(result.read_text())
    assert saved["settings"]["num_partitions"] == 2 and len(saved["participants"]) == 2  # Flower's 2 SuperNodes
    assert len(saved["rounds"]) == 30 and saved["failures"] == 0 and "r2" in saved["final_metrics"]
    assert not _pids_of_home(home)


def test_the_default_job_prints_at_most_60_lines(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(RUN_SH)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert len(output.splitlines()) <= 60, output
    result = json.loads((tmp_path / "results" / "latest" / "result.json").read_text())
    assert result["settings"]["num_partitions"] == 10 and len(result["rounds"]) == 30
    assert "[ppcdl] round 30/30" in output and "non-private centralised reference" in output


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
    assert sorted(p.name for p in (tmp_path / "short").iterdir()) == ["error.txt"]


def test_a_runner_stopped_with_sigterm_stops_its_superlink(tmp_path: Path) -> None:
    """``timeout`` or a CI runner sends SIGTERM: the SuperLink the runner started goes with it."""
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        runner = subprocess.Popen(["bash", str(RUN_SH), "--run-config", "num-partitions=3 num-rounds=30"], cwd=tmp_path,
                                  env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        port = None
        while time.monotonic() < deadline and port is None:
            lines = [line for line in log.read_text().splitlines() if line.startswith("[ppcdl] SuperLink on")]
            port = lines[0].split("127.0.0.1:")[1].split()[0] if lines else None
            time.sleep(0.5)
        assert port is not None, log.read_text()[-3000:]
        while time.monotonic() < deadline and not _pids_with("flower-superlink", port):
            time.sleep(0.5)
        assert _pids_with("flower-superlink", port)
        runner.send_signal(signal.SIGTERM)  # the python runner (bash execs it)
        assert runner.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if runner.poll() is None:
            runner.kill()
    assert not _pids_with("flower-superlink", port)
