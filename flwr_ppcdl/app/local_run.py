"""Run the Flower App on the local simulation runtime, as ``flwr run .`` does, safely on a shared machine.

``flwr run .`` starts a detached ``flower-superlink --simulation`` on fixed ports (39091/39093) that
keeps running for later runs, and returns as soon as the run is submitted. This runner
(``scripts/run.sh``, the ``ppcdl-run`` command) instead:

* checks the whole run config first (every key, :class:`~flwr_ppcdl.app.settings.RunSettings`; the
  data set is on this machine; the SuperNodes fit in its memory) and stops within a second, with
  the key, the value and the fix named, before anything starts;
* gives the run its own SuperLink on two free ports, its own ``FLWR_HOME`` and Ray temp folder, and
  one simulated SuperNode per participant (``num-partitions``, or 10 when it is 0: one per
  SuperNode; ``NUM_SUPERNODES`` overrides);
* shows what the run's ``verbosity`` asks for (``--quiet``: the summary; default: one line per
  round; ``--verbose``: Flower's whole log too);
* stops exactly the processes it started (the SuperLink's process group, by PID) when the run ends;
* exits 0 only when the run wrote a fresh ``result.json``; otherwise prints the reason the ServerApp
  left in ``error.txt`` (or the SuperLink's log) and exits 1;
* adds the simulation-only oracle reference to ``result.json`` (:mod:`.oracle`) and prints the summary.

Results go to ``result-dir`` under ``./results`` (or ``$PPCDL_RESULTS``); an absolute ``result-dir``
is taken as given. Outside a source checkout (an installed wheel) the Flower App is generated from
the package's own defaults (:func:`app_folder`).

    python -m flwr_ppcdl.app.local_run [--quiet|--verbose] [--run-config "epsilon=10 strategy='fedavg'"] [flwr run options]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from flwr_ppcdl.app.checks import (
    RESULTS_ENV,
    SIMULATION_BASE_MIB,
    SUPERNODE_MEMORY_MIB,
    check_data_available,
    max_supernodes,
    result_path,
)
from flwr_ppcdl.app.console import FLOWER_NOISE
from flwr_ppcdl.app.deploy_setup import flower_bin, free_port
from flwr_ppcdl.app.settings import DEFAULT_PARTITIONS, RunSettings, app_run_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT = 30.0
LARGE_FEDERATION = 1000
REPLIES_PER_SECOND = 4.0
"""Replies a second of Flower 1.42's simulation runtime here (300 SuperNodes: one round in 84 s)."""


def is_flower_app(folder: Path) -> bool:
    """Whether ``folder`` holds a Flower App (a ``pyproject.toml`` with ``[tool.flwr.app]``)."""
    path = folder / "pyproject.toml"
    return path.exists() and "app" in tomllib.loads(path.read_text()).get("tool", {}).get("flwr", {})


def app_folder(project: Path, workdir: Path) -> Path:
    """The Flower App to run: ``project`` if it is one (a source checkout), else one generated in
    ``workdir`` from the installed package: a ``pyproject.toml`` whose components are this
    package's ServerApp and ClientApp and whose run config is
    :func:`~flwr_ppcdl.app.settings.app_run_config` (no dependencies: they are installed)."""
    if is_flower_app(project):
        return project
    import tomli_w

    folder = workdir / "app"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "project": {
            "name": "flwr-ppcdl", "version": metadata.version("flwr-ppcdl"), "dependencies": [],
            "description": "The flwr_ppcdl Flower App, generated from the installed package", "license": "Apache-2.0",
        },
        "tool": {"flwr": {"app": {
            "publisher": "flwr-ppcdl",
            "components": {"serverapp": "flwr_ppcdl.app.server_app:app", "clientapp": "flwr_ppcdl.app.client_app:app"},
            "config": app_run_config(),
        }}},
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(spec))
    return folder


def run_config_of(project: Path, overrides: list[str]) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of ``project`` with ``--run-config`` overrides applied (flwr's parser)."""
    from flwr.common.config import parse_config_args

    declared = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**declared, **parse_config_args(overrides)}


def preflight(project: Path, overrides: list[str]) -> tuple[RunSettings, dict[str, Any], int]:
    """Every check before anything starts: the run config, the data set, the SuperNodes' memory.

    Returns the settings, the run config and the number of SuperNodes to simulate; ``ValueError``
    with the key, the value and the fix otherwise.
    """
    config = run_config_of(project, overrides)
    settings = RunSettings.from_config(config)
    check_data_available(settings)
    supernodes = int(os.environ.get("NUM_SUPERNODES") or settings.num_partitions or DEFAULT_PARTITIONS)
    cap = max_supernodes()
    if supernodes > cap:
        raise ValueError(
            f"{supernodes} simulated SuperNodes (num-partitions={settings.num_partitions}) do not fit in this "
            f"machine's available memory: about {cap} do (~{SUPERNODE_MEMORY_MIB:g} MiB each beyond "
            f"~{SIMULATION_BASE_MIB:g} MiB for Flower and Ray). Run that many participants in process "
            f"instead (no SuperNode per participant): python -m flwr_ppcdl.app.sweep "
            f"experiment.num_partitions={settings.num_partitions}"
        )
    if supernodes > LARGE_FEDERATION:
        print(
            f"[ppcdl] warning: {supernodes} simulated SuperNodes: Flower's simulation runtime answered about "
            f"{REPLIES_PER_SECOND:g} replies a second on a 2-core machine (docs/decisions.md), so a round may take "
            f"~{supernodes / REPLIES_PER_SECOND:.0f} s (round-timeout={settings.round_timeout:g}); the in-process "
            f"runner (python -m flwr_ppcdl.app.sweep) is faster for large federations",
            file=sys.stderr,
        )
    return settings, config, supernodes


class LocalSuperLink:
    """A ``flower-superlink --simulation`` owned by this process: own ports, own ``FLWR_HOME``."""

    def __init__(self, workdir: Path, results: Path) -> None:
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
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # everything is installed here
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            RESULTS_ENV: str(results),  # the ServerApp's results base
            # the SuperLink starts flower-superexec, flwr-simulation, ... by name: this Python's first
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it in its own process group and wait until its HTTP API answers."""
        cmd = [
            flower_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
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


class StreamFilter:
    """Which lines of the run's log stream to show at verbosity ``level``: everything when verbose;
    else the App's own lines (the ServerApp already applied the level to them), Flower's warnings
    and errors, and the indented lines (a traceback) that follow an error."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.in_error = False

    def __call__(self, line: str) -> bool:
        if self.level == "verbose":
            return True
        if self.in_error and line[:1] in (" ", "\t"):
            return True
        self.in_error = "ERROR" in line or line.startswith("Traceback")
        if any(noise in line for noise in FLOWER_NOISE):
            return False
        return self.in_error or "[ppcdl]" in line or "WARNING" in line


def run(project: Path, flwr_args: list[str], *, timeout: float | None = None, workdir: Path | None = None,
        verbosity: str | None = None) -> int:
    """Run the App at ``project`` with ``flwr run`` options ``flwr_args``; the exit code (see module)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-config", "-c", action="append", default=[])
    parser.add_argument("--federation-config", action="append", default=[])
    known, rest = parser.parse_known_args(flwr_args)
    overrides = list(known.run_config) + ([f"verbosity='{verbosity}'"] if verbosity else [])
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ppcdl-run-")) if workdir is None else workdir
    try:
        app = app_folder(project, workdir)
        settings, _, supernodes = preflight(app, overrides)
        out = result_path(settings.result_dir, confine=False)  # the user's own choice
    except Exception as err:  # noqa: BLE001 - a bad value: say which, start nothing
        print(f"[ppcdl] bad run config: {err}", file=sys.stderr)
        return 2
    level = settings.verbosity
    from flwr_ppcdl.app.report import clear_outputs

    clear_outputs(out)
    federation = [f"num-supernodes={supernodes} client-resources-num-cpus=1", *known.federation_config]
    link = LocalSuperLink(workdir, out.parent)
    cmd = [
        flower_bin("flwr"), "run", str(app), "--stream", *rest,
        *[arg for value in overrides for arg in ("--run-config", value)],
        "--run-config", f"result-dir='{out.name}'",  # under the base the SuperLink's env names
        *[arg for value in federation for arg in ("--federation-config", value)],
    ]
    if level != "quiet":
        print(f"[ppcdl] SuperLink on 127.0.0.1:{link.http_port} (control {link.control_port}); "
              f"{supernodes} simulated SuperNodes; results: {out}", flush=True)
    with _sigterm_as_exit():
        try:
            link.start()
            code = _stream(cmd, link.env, app, timeout, level)
            if level == "verbose":
                print(f"[ppcdl] `flwr run` exited with code {code}", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"[ppcdl] run failed: {err}", file=sys.stderr)
            return 1
        finally:
            link.stop()
    return _report(out, link, workdir, owned)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM (``timeout``, a CI runner) ends this process through
    ``SystemExit``, so that ``finally`` blocks still stop the SuperLink it started (SIGINT does so
    already). Outside the main thread, and after the block, nothing changes."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float | None, level: str) -> int:
    """Run ``flwr run --stream``, printing the lines ``level`` shows; its exit code (killed after
    ``timeout`` seconds: ``subprocess.TimeoutExpired``)."""
    import threading

    show = StreamFilter(level)
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
        if timer is not None:
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if show(line):
                    print(line, end="", flush=True)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if timer is not None and not timer.is_alive() and code < 0:
            raise subprocess.TimeoutExpired(cmd, timeout or 0.0)
        return code


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
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", "-q", action="store_const", const="quiet", dest="verbosity",
                          help="print only the summary and where the results are")
    loudness.add_argument("--verbose", "-v", action="store_const", const="verbose", dest="verbosity",
                          help="also print Flower's own log")
    args, flwr_args = parser.parse_known_args(argv)
    return run(args.project.resolve(), flwr_args, timeout=args.timeout, verbosity=args.verbosity)


if __name__ == "__main__":
    raise SystemExit(main())
