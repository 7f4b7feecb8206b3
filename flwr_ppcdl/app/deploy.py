"""Run the Flower App on Flower's deployment runtime, on loopback: one SuperLink, N SuperNodes.

Every participant is its own ``flower-supernode`` process that is told only its own partition
through Flower's node config (``partition-id``, ``num-partitions``, ``state-path``). The run is
started with ``flwr run . <federation> --stream``; the federation's address and root certificate
are written to ``$FLWR_HOME/config.toml`` (never to pyproject.toml).

TLS and SuperNode authentication are the default: a throw-away CA and a server certificate for
127.0.0.1/localhost are generated for the run, the SuperLink starts with
``--enable-supernode-auth``, one EC (P-384) key pair per SuperNode is generated and its public key
registered with ``flwr supernode register`` before the SuperNode starts with
``--auth-supernode-private-key``: a SuperNode whose key was not registered is refused, so holding
the CA certificate is not enough to join (no Sybil nodes). ``--insecure`` turns TLS, and with it
node authentication (Flower requires TLS for it), off (local debugging only).

Privacy: every SuperNode gets a ``state-path`` in a private (0700) directory (its release and
ledger survive a restart: the ε it reports counts every release) and, with ``--node-policy
"max-epsilon=1 ..."``, its own privacy policy (without one: the deployment default, ε <= 1). A run
config with ``insecure-noise-seed`` is refused before anything starts; a run every participant
refuses ends ``finished:failed``, exit code 1.

    python -m flwr_ppcdl.app.deploy --nodes 3 --run-config "num-partitions=3 num-rounds=3"
    python -m flwr_ppcdl.app.deploy --nodes 2 --node-policy "max-epsilon=1" --run-config "epsilon=8"  # refused
    python -m flwr_ppcdl.app.deploy --nodes 3 --kill-node 2 \
        --run-config "num-partitions=3 num-rounds=3 min-nodes=2 round-timeout=30"
    python -m flwr_ppcdl.app.deploy --nodes 3 --kill-node 2 --restart \
        --run-config "num-partitions=3 num-rounds=3 min-nodes=2 round-timeout=30"
    python -m flwr_ppcdl.app.deploy --nodes 20 --register-workers 2 --run-config "num-rounds=3"  # docs/scale.md

Every process started is recorded by PID (each in its own process group) and stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from flwr_ppcdl import wire
from flwr_ppcdl.app.deploy_setup import (
    FEDERATION,
    PROJECT_ROOT,
    ancestor_pids,
    flower_bin,
    free_port,
    make_certificates,
    make_node_keys,
    refuse_insecure_run,
    registered_node_id,
    run_settings,
    run_status_of,
    started_run_id,
)
from flwr_ppcdl.app.deploy_start import new_port, start_all

RESTART_RETRY_SECONDS = 5.0


@dataclass
class LocalDeployment:
    """A SuperLink and N SuperNodes on 127.0.0.1, each a separate process (recorded by PID).

    With TLS (the default) SuperNode authentication is on: each partition's SuperNode has its own
    key pair, registered with the SuperLink before the node starts (``node_ids`` holds the ids
    the SuperLink assigned). Every SuperNode has a ``state-path`` under ``workdir`` (its folder 0700)
    and ``node_policy`` (node-config text such as ``"max-epsilon=1 max-delta=1e-5"``) in its node config.
    ``node_ids_history`` lists every (partition, node id) registered, oldest first; ``run_id`` is the
    id of the last run started. ``results_base``, if given, is the SuperLink's ``$PPCDL_RESULTS``.
    """

    nodes: int
    workdir: Path
    insecure: bool = False
    num_partitions: int | None = None
    node_policy: str = ""
    results_base: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[int, int] = field(default_factory=dict)
    node_ids_history: list[tuple[int, int]] = field(default_factory=list)
    keys: dict[int, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        self.run_id: int | None = None
        self.port = free_port()
        self.control_port = free_port()
        self.fleet_port = free_port()
        self._ports = {self.port, self.control_port, self.fleet_port}
        self.timings: dict[str, float] = {}
        self.ca: Path | None = None
        self.cert: Path | None = None
        self.key: Path | None = None
        if not self.insecure:
            self.ca, self.cert, self.key = make_certificates(self.workdir / "certs")

    @property
    def node_auth(self) -> bool:
        """SuperNode authentication is on whenever TLS is (Flower requires TLS for it)."""
        return not self.insecure

    # -- environment -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FLWR_HOME=str(self.flwr_home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            HF_DATASETS_OFFLINE="1",
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            **({"PPCDL_RESULTS": str(self.results_base)} if self.results_base is not None else {}),
        )
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def tls_args(self, role: str) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        if role == "superlink":
            return ["--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(self.cert), "--ssl-keyfile", str(self.key)]
        return ["--root-certificates", str(self.ca)]

    def _spawn(self, name: str, cmd: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        handle = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=self.env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        self.procs[name] = proc
        self.logs[name] = log_path
        return proc

    # -- processes -------------------------------------------------------------------------------

    def start_superlink(self) -> None:
        cmd = [
            flower_bin("flower-superlink"), *self.tls_args("superlink"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--control-api-address", f"127.0.0.1:{self.control_port}",
            "--fleet-api-address", f"127.0.0.1:{self.fleet_port}",
            # no --database: Flower's in-memory state. Its SQLite file waits 5 s for a lock, and with
            # 20 SuperNodes on 2 busy cores 4 replies were refused (docs/scale.md)
            "--disable-runtime-dependency-installation",
            *(["--enable-supernode-auth"] if self.node_auth else []),
        ]
        self._spawn("superlink", cmd, self.workdir)
        self._wait_port(self.port, "superlink")

    def node_config(self, partition_id: int) -> str:
        """The SuperNode's node config: its partition, its persistent ``state-path``, its policy."""
        return " ".join([
            f"{wire.NODE_PARTITION_ID}={partition_id}",
            f"{wire.NODE_NUM_PARTITIONS}={self.num_partitions or self.nodes}",
            f"{wire.NODE_STATE_PATH}='{self.workdir / f'node-{partition_id}' / 'state.json'}'",
            *([self.node_policy] if self.node_policy else []),
        ])

    def state_dir(self, partition_id: int) -> Path:
        """The SuperNode's folder (its working directory and state): created private, 0700."""
        folder = self.workdir / f"node-{partition_id}"
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # its state file refuses a folder others may read
        return folder

    def node_key(self, partition_id: int) -> Path:
        """Partition ``partition_id``'s current private key (generated on first use)."""
        if partition_id not in self.keys:
            self.keys[partition_id] = make_node_keys(self.workdir / "keys" / f"node-{partition_id}")[0]
        return self.keys[partition_id]

    def register_node(self, partition_id: int, attempts: int = 10, *, new_key: bool = False) -> int:
        """Register partition ``partition_id``'s public key with the SuperLink (``flwr supernode
        register``); return the node id the SuperLink assigned. ``new_key``: a fresh key pair
        replaces the partition's current one (a new identity, e.g. for a restarted node)."""
        if new_key:
            folder = self.workdir / "keys" / f"node-{partition_id}-{len(self.node_ids_history)}"
            self.keys[partition_id] = make_node_keys(folder)[0]
        public = self.node_key(partition_id).with_suffix(".pub")
        cmd = [flower_bin("flwr"), "supernode", "register", str(public), FEDERATION, "--format", "json"]
        output = ""
        for _attempt in range(attempts):  # the control API may answer a moment after the port opens
            done = subprocess.run(cmd, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=60)
            output = done.stdout + done.stderr
            node_id = registered_node_id(done.stdout)
            if done.returncode == 0 and node_id is not None:
                self.node_ids[partition_id] = node_id
                self.node_ids_history.append((partition_id, node_id))
                return node_id
            time.sleep(2.0)
        raise RuntimeError(f"could not register SuperNode {partition_id}'s key:\n{output[-2000:]}")

    def start_supernode(
        self, partition_id: int, *, name: str | None = None, private_key: Path | None = None, no_key: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a SuperNode for ``partition_id`` with its registered key (with node authentication),
        or with ``private_key``, or with no key at all (``no_key``: the tests' intruders)."""
        node_dir = self.state_dir(partition_id)
        key = private_key if private_key is not None else (self.node_key(partition_id) if self.node_auth else None)
        key = None if no_key else key
        cmd = [
            flower_bin("flower-supernode"), *self.tls_args("supernode"),
            "--superlink", f"127.0.0.1:{self.port}",
            "--node-config", self.node_config(partition_id),
            "--port", str(new_port(self._ports)),
            *(["--auth-supernode-private-key", str(key)] if key is not None else []),
        ]
        return self._spawn(name or f"supernode-{partition_id}", cmd, node_dir)

    def start(self, *, stagger: float = 0.0, workers: int = 1, online_timeout: float = 600.0) -> None:
        """Start the SuperLink and every SuperNode, return once all are online (:func:`.deploy_start.start_all`)."""
        self.timings = start_all(self, stagger=stagger, workers=workers, online_timeout=online_timeout)

    def write_federation(self) -> Path:
        """``$FLWR_HOME/config.toml`` with the local SuperLink as the default connection."""
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]",
                 f'address = "127.0.0.1:{self.port}"']
        lines.append("insecure = true" if self.insecure else f'root-certificates = "{self.ca}"')
        path = self.flwr_home / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _note(self, line: str) -> None:
        """Append a line of this script's own to the ``flwr run`` log (what ``run`` returns)."""
        with open(self.logs["flwr-run"], "a") as handle:
            handle.write(line + "\n")

    def _wait_port(self, port: int, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.logs[name].read_text()[-3000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not listen on {port} within {timeout}s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Stop one process (and its process group: the ClientApp/ServerApp children) by PID."""
        proc = self.procs.get(name)
        if proc is None:
            return
        for target in (lambda: os.killpg(proc.pid, sig), lambda: os.kill(proc.pid, sig)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process this deployment started (SIGTERM, then SIGKILL), newest first."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                self.kill(name, signal.SIGTERM)
            try:  # children left in the group (ServerApp/ClientApp subprocesses)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        # The SuperLink/SuperNode SuperExec starts flwr-serverapp/flwr-clientapp in new sessions;
        # stop those of this deployment by PID (their command lines name our port or workdir),
        # again until none is left: on a loaded machine one may still be starting or dying.
        for _attempt in range(20):
            stragglers = self._stragglers()
            if not stragglers:
                break
            for pid in stragglers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.25)

    def _stragglers(self) -> list[int]:
        marks = (f"127.0.0.1:{self.port}", str(self.workdir))
        spared = ancestor_pids()  # this process and its callers may name the workdir too (--workdir)
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(entry.name) not in spared and any(m in cmdline for m in marks):
                found.append(int(entry.name))
        return found

    def run_status(self, attempts: int = 10) -> str | None:
        """The last run's status as the SuperLink reports it (``flwr ls``), e.g. ``finished:failed``."""
        if self.run_id is None:
            return None
        cmd = [flower_bin("flwr"), "ls", FEDERATION, "--run-id", str(self.run_id), "--format", "json"]
        for _attempt in range(attempts):  # the SuperLink marks the run finished a moment after the stream ends
            done = subprocess.run(cmd, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=60)
            status = run_status_of(done.stdout)
            if status is not None and status.startswith("finished"):
                return status
            time.sleep(2.0)
        return status

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None] + self._stragglers()

    # -- the run ---------------------------------------------------------------------------------

    def run(
        self, run_config: str, result_dir: Path, *, app: Path = PROJECT_ROOT, timeout: float = 600.0,
        kill_node: int | None = None, restart: bool = False, out: IO[str] | None = None,
    ) -> tuple[bool, str]:
        """``flwr run <app> <federation> --run-config ... --stream``; wait for ``result.json`` (or for
        the stream to end: the run finished without one, e.g. every participant refused it).

        Returns (whether ``result_dir/result.json`` was written, the ``flwr run`` output); the run's
        id is in :attr:`run_id` (its final status: :meth:`run_status`). With
        ``kill_node``, that SuperNode is SIGKILLed once it has persisted its round-1 state and the
        server has logged round 1 (its reply was aggregated); with ``restart`` too, a new SuperNode
        is started at once with the same node config (with node authentication under a newly
        registered key), and again every few seconds if the SuperLink refuses it (the killed process
        stays as ``supernode-<i>-killed``, refused attempts as ``supernode-<i>-refused-<k>``).
        """
        refuse_insecure_run(run_settings(run_config, app))
        result = result_dir / "result.json"
        result.unlink(missing_ok=True)
        cmd = [flower_bin("flwr"), "run", str(app), FEDERATION, "--stream", "--run-config", run_config]
        log_path = self.workdir / "flwr-run.log"
        offset = len(log_path.read_text(errors="replace")) if log_path.exists() else 0  # earlier runs' output

        def output() -> str:  # this run's output only (the log is appended to)
            return self.logs["flwr-run"].read_text(errors="replace")[offset:]

        for _attempt in range(5):  # the SuperLink may accept TCP before its APIs answer
            proc = self._spawn("flwr-run", cmd, app)
            while proc.poll() is None and "Successfully started run" not in output():
                time.sleep(0.3)
            if "Successfully started run" in output():
                break
            time.sleep(3.0)
        else:
            return False, output()
        self.run_id = started_run_id(output())
        killed = kill_node is None
        state_file = self.workdir / f"node-{kill_node}" / "state.json"
        name = f"supernode-{kill_node}"
        next_start: float | None = None  # when to (re)start the killed node; None: not restarting
        attempts = 0
        deadline = time.monotonic() + timeout
        shown = 0
        while time.monotonic() < deadline and not result.exists() and proc.poll() is None:
            if not killed and kill_node is not None and state_file.exists() and "[ppcdl] round 1/" in output():
                self.kill(name)
                killed = True
                self._note(f"[deploy] killed {name} (SIGKILL, PID {self.procs[name].pid}) after round 1")
                if restart:
                    self.procs[f"{name}-killed"] = self.procs.pop(name)
                    next_start = time.monotonic()
                    if self.node_auth:
                        # under its old key the SuperLink refuses it until the killed session is offline
                        # (~40-60 s without heartbeats): a new registered key, i.e. a new node id
                        node_id = self.register_node(kill_node, new_key=True)
                        self._note(f"[deploy] registered a new key for {name} (node id {node_id})")
            if kill_node is not None and next_start is not None and time.monotonic() >= next_start:
                # (re)start the node until it stays up: a refused activation ends the process
                current = self.procs.get(name)
                if current is None or current.poll() is not None:
                    if current is not None:
                        self.procs[f"{name}-refused-{attempts}"] = self.procs.pop(name)
                    attempts += 1
                    pid = self.start_supernode(kill_node).pid
                    self._note(f"[deploy] restarted {name} (PID {pid}, same node config, attempt {attempts})")
                next_start = time.monotonic() + RESTART_RETRY_SECONDS
            if out is not None:
                text = output()
                out.write(text[shown:])
                out.flush()
                shown = len(text)
            time.sleep(0.5)
        time.sleep(1.0)  # let the stream print the last lines
        text = output()
        if out is not None:
            out.write(text[shown:])
        return result.exists(), text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="SuperNodes to start (one per partition)")
    parser.add_argument("--run-config", default="", help="passed to `flwr run --run-config`")
    parser.add_argument("--insecure", action="store_true", help="no TLS and no node authentication (local debugging only)")
    parser.add_argument("--workdir", type=Path, default=None, help="certs, logs, FLWR_HOME, node state (default: a temp dir)")
    parser.add_argument("--kill-node", type=int, default=None, help="SIGKILL this partition's SuperNode mid-run")
    parser.add_argument("--restart", action="store_true", help="start the killed SuperNode again (same node config)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between SuperNode starts")
    parser.add_argument("--register-workers", type=int, default=2, help="node keys registered at a time")
    parser.add_argument("--node-policy", default="", help='every SuperNode\'s privacy policy, e.g. "max-epsilon=1 max-delta=1e-5"')
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ppcdl-deploy-"))
    run_config = args.run_config
    if f"num-partitions={args.nodes}" not in run_config.replace(" ", ""):
        run_config = f"num-partitions={args.nodes} {run_config}".strip()
    result_dir = workdir / "results"
    run_config += f" result-dir='{result_dir}'"
    try:
        refuse_insecure_run(run_settings(run_config))
    except ValueError as exc:
        print(f"[deploy] refused: {exc}", file=sys.stderr)
        return 2
    deployment = LocalDeployment(nodes=args.nodes, workdir=workdir, insecure=args.insecure, node_policy=args.node_policy, results_base=result_dir)
    mode = "insecure, no node authentication" if args.insecure else "TLS, SuperNode authentication"
    print(f"[deploy] workdir {workdir}; SuperLink 127.0.0.1:{deployment.port} ({mode})")
    try:
        deployment.start(stagger=args.stagger, workers=args.register_workers)
        print(f"[deploy] every SuperNode online ({ {k: round(v, 1) for k, v in deployment.timings.items()} } s); "
              f"PIDs: { {n: p.pid for n, p in deployment.procs.items()} }")
        if deployment.node_auth:
            print(f"[deploy] registered SuperNode keys (partition: node id): {deployment.node_ids}")
        ok, _ = deployment.run(run_config, result_dir, timeout=args.timeout, kill_node=args.kill_node, restart=args.restart, out=sys.stdout)
        print(f"[deploy] run {deployment.run_id}: {deployment.run_status()}")
    finally:
        deployment.stop()
        print(f"[deploy] stopped; still alive: {deployment.alive()}; logs in {workdir}")
    error = result_dir / "error.txt"  # the ServerApp's reason, when the run failed
    print(f"[deploy] results: {result_dir / 'result.json'}" if ok else f"[deploy] no result.json: {error.read_text().splitlines()[0] if error.exists() else 'see the logs'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
