"""Run the Flower App on the local simulation runtime, as ``flwr run .`` does, safely on a shared machine.

``flwr run .`` starts a detached ``flower-superlink --simulation`` on fixed ports (39091/39093), never
stops it, and exits 0 even when the ServerApp fails. This runner (``scripts/run.sh`` calls it):

* checks the run config first (every key, :class:`~flwr_ppcdl.app.settings.RunSettings`) and stops
  with the key and value named before anything starts;
* gives the run its own SuperLink on two free ports, its own ``FLWR_HOME`` and Ray temp folder, and
  one simulated SuperNode per participant (``num-supernodes = num-partitions``);
* stops exactly the processes it started (the SuperLink's process group, by PID) when the run ends;
* exits 0 only when the run wrote a fresh ``result.json``; otherwise prints the reason the ServerApp
  left in ``error.txt`` (or the SuperLink's log) and exits 1;
* adds the simulation-only oracle reference to ``result.json`` (:mod:`.oracle`) and prints the summary.

    python -m flwr_ppcdl.app.local_run [--run-config "epsilon=10 strategy='fedavg'"] [flwr run options]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from flwr_ppcdl.app.settings import RunSettings

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 (flwr depends on tomli)
    import tomli as tomllib  # type: ignore[no-redef]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else (shutil.which(name) or name)


def run_config_of(project: Path, overrides: list[str]) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of ``project`` with ``--run-config`` overrides applied (flwr's parser)."""
    from flwr.common.config import parse_config_args

    declared = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**declared, **parse_config_args(overrides)}


class LocalSuperLink:
    """A ``flower-superlink --simulation`` owned by this process: own ports, own ``FLWR_HOME``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port, self.control_port = free_port(), free_port()
        self.log = workdir / "superlink.log"
        self.env = dict(os.environ)
        self.env.update({
            "FLWR_HOME": str(workdir / "flwr-home"),
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp"),  # short: Ray's socket paths
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
        })
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it in its own process group and wait until its HTTP API answers."""
        cmd = [
            _bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{self.control_port}",
            "--host", "127.0.0.1", "--port", str(self.http_port),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=0.5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"flower-superlink did not answer on port {self.http_port} within {HEALTH_TIMEOUT:.0f}s")

    def stop(self) -> None:
        """Stop the SuperLink and everything it started (its process group), by PID."""
        proc = self.proc
        if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
                time.sleep(0.2)
            if proc.poll() is not None and not _group_alive(proc.pid):
                break
        shutil.rmtree(self.env["RAY_TMPDIR"], ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def run(project: Path, flwr_args: list[str], *, timeout: float | None = None, workdir: Path | None = None) -> int:
    """Run the App at ``project`` with ``flwr run`` options ``flwr_args``; the exit code (see module)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-config", "-c", action="append", default=[])
    parser.add_argument("--federation-config", action="append", default=[])
    known, rest = parser.parse_known_args(flwr_args)
    try:
        config = run_config_of(project, known.run_config)
        settings = RunSettings.from_config(config)
    except Exception as err:  # noqa: BLE001 - a bad value: say which, start nothing
        print(f"[ppcdl] bad run config: {err}", file=sys.stderr)
        return 2
    result_dir = Path(settings.result_dir).expanduser()
    result_dir = (result_dir if result_dir.is_absolute() else project / result_dir).resolve()
    for name in ("result.json", "error.txt"):
        (result_dir / name).unlink(missing_ok=True)
    supernodes = int(os.environ.get("NUM_SUPERNODES") or settings.num_partitions)
    federation = [f"num-supernodes={supernodes} client-resources-num-cpus=1", *known.federation_config]
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ppcdl-run-")) if workdir is None else workdir
    link = LocalSuperLink(workdir)
    cmd = [
        _bin("flwr"), "run", str(project), "--stream", *rest,
        *[arg for value in known.run_config for arg in ("--run-config", value)],
        "--run-config", f"result-dir='{result_dir}'",
        *[arg for value in federation for arg in ("--federation-config", value)],
    ]
    print(f"[ppcdl] SuperLink on 127.0.0.1:{link.http_port} (control {link.control_port}); "
          f"{supernodes} simulated SuperNodes; results: {result_dir}", flush=True)
    try:
        link.start()
        flwr_run = subprocess.run(cmd, env=link.env, cwd=project, timeout=timeout, check=False)
        print(f"[ppcdl] `flwr run` exited with code {flwr_run.returncode}", flush=True)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"[ppcdl] run failed: {err}", file=sys.stderr)
        return 1
    finally:
        link.stop()
    return _report(result_dir, link, workdir, owned)


def _report(result_dir: Path, link: LocalSuperLink, workdir: Path, owned: bool) -> int:
    if (result_dir / "result.json").exists():
        from flwr_ppcdl.app.oracle import complete_run, summary_line

        print(summary_line(complete_run(result_dir), result_dir), flush=True)
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    error = result_dir / "error.txt"
    reason = error.read_text().split("\n\n", 1)[0] if error.exists() else f"no result.json; SuperLink log:\n{link.log_tail()}"
    print(f"[ppcdl] the run FAILED: {reason}\n[ppcdl] logs kept in {workdir}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT, help="the Flower App's folder")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the run is stopped")
    args, flwr_args = parser.parse_known_args(argv)
    return run(args.project.resolve(), flwr_args, timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
