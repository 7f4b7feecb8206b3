"""How many real SuperNodes this machine holds: one SuperLink and N SuperNodes on loopback, TLS and
SuperNode authentication on, the App's default job (census2000, one participant per SuperNode).

    PYTHONPATH=. .venv/bin/python benchmarks/deployment_scale.py [--nodes 5 10 20 40] [--rounds 3]
        [--memory-budget-gib 10] [--reserve-gib 3]                    # -> results/deployment_scale.csv

Each N runs :class:`flwr_ppcdl.app.deploy.LocalDeployment` in a child process (its own session)
whose whole process tree is sampled from ``/proc`` every second (:mod:`benchmarks._process_tree`):
the SuperLink, every ``flower-supernode``, the ``flower-superexec`` each SuperNode starts, the
``flwr-clientapp`` process it starts for every message, the ``flwr-serverapp``, the ``flwr`` CLI
calls. Per N: start time (SuperLink, key registration, SuperNode start, until the SuperLink reports
every node online), per-round seconds, peak PSS/RSS of the whole tree and per role, open files,
processes, and whether every round got every reply. Sizes go up until the next one's projected peak
(the last run's PSS per node times N) exceeds ``--memory-budget-gib``; a run is stopped at once if
the machine's ``MemAvailable`` falls below ``--reserve-gib`` (the machine is shared). The CSV says which
limit ended the series.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._process_tree import TreeSampler, mem_available_mb  # noqa: E402
from benchmarks.scale_app import child_env, code_version, hardware, package_versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROLES = (  # the first marker found in a process's command line names its role
    ("flwr-clientapp", "clientapp"), ("flwr-serverapp", "serverapp"), ("flower-superexec", "superexec"),
    ("flower-supernode", "supernode"), ("flower-superlink", "superlink"), ("deployment_scale.py", "driver"),
)
FIELDS = (
    "nodes", "rounds", "dataset", "tls", "node_auth", "outcome", "start_s", "superlink_s", "register_s",
    "supernodes_s", "online_s", "run_s", "round_s_mean", "round_s_max", "rounds_done", "min_replies", "failures",
    "participants_match_registered", "final_r2", "epsilon_spent_max", "peak_pss_mb", "peak_rss_mb",
    "pss_per_node_mb", "peak_processes", "peak_fds", "cpu_s", "supernode_pss_mb", "superexec_pss_mb",
    "clientapp_pss_mb", "clientapp_peak_count", "clientapp_max_process_pss_mb", "clientapp_max_process_rss_mb",
    "superlink_pss_mb", "superlink_fds", "serverapp_pss_mb", "min_mem_available_mb", "wall_s", "load_before",
    "load_after", "error", "hardware", "code_version", "packages",
)


def role_of(cmdline: str) -> str:
    for marker, role in ROLES:
        if marker in cmdline:
            return role
    return "other"  # the `flwr` CLI calls (register, list, run, ls)


def child(nodes: int, rounds: int, out: Path, timeout: float) -> int:
    """One deployment of ``nodes`` SuperNodes and one run; a JSON summary to ``out``."""
    from flwr_ppcdl.app.deploy import LocalDeployment

    work = out.parent
    results = work / "results"
    deployment = LocalDeployment(nodes=nodes, workdir=work / "deploy", results_base=results)  # TLS + node authentication
    summary: dict[str, Any] = {"tls": not deployment.insecure, "node_auth": deployment.node_auth}
    began = time.monotonic()
    try:
        deployment.start(workers=2, online_timeout=timeout)
        summary.update({f"{k}_s": round(v, 1) for k, v in deployment.timings.items()})
        summary["start_s"] = round(time.monotonic() - began, 1)
        run_began = time.monotonic()
        ok, _ = deployment.run(f"num-partitions={nodes} num-rounds={rounds} result-dir='{results}'", results,
                               timeout=timeout)
        summary["run_s"] = round(time.monotonic() - run_began, 1)
        summary["status"] = deployment.run_status()
        if ok:
            result = json.loads((results / "result.json").read_text())
            seconds = [float(r["seconds"]) for r in result["rounds"]]
            summary.update(
                rounds_done=len(seconds), round_s_mean=round(sum(seconds) / len(seconds), 1),
                round_s_max=round(max(seconds), 1), min_replies=min(r["replies"] for r in result["rounds"]),
                failures=result["failures"], final_r2=result["final_metrics"].get("r2", math.nan),
                epsilon_spent_max=result["privacy_spent"]["epsilon"],
                participants_match_registered=sorted(str(p["node_id"]) for p in result["participants"])
                == sorted(str(n) for n in deployment.node_ids.values()),
            )
        summary["outcome"] = "finished" if ok else f"no result.json ({summary['status']})"
    except Exception as exc:  # noqa: BLE001 - the reason is the measurement
        summary["outcome"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        deployment.stop()
        summary["left_alive"] = deployment.alive()
    out.write_text(json.dumps(summary))
    print(f"[child] {summary}", flush=True)
    return 0 if summary["outcome"] == "finished" else 1


class MemoryGuard:
    """Stop the measured tree (SIGKILL to every member, by PID) when ``MemAvailable`` falls below ``reserve_mb``."""

    def __init__(self, reserve_mb: float) -> None:
        self.reserve_mb = reserve_mb
        self.tripped: float | None = None

    def __call__(self, sampler: TreeSampler) -> None:
        available = mem_available_mb()
        if self.tripped is None and available < self.reserve_mb:
            self.tripped = available
            for pid in sampler.members():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def measure_nodes(nodes: int, rounds: int, reserve_mb: float, timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"deploy-scale-{nodes}-"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", str(nodes), "--rounds", str(rounds),
           "--out", str(work / "cell.json"), "--timeout", str(timeout)]
    guard = MemoryGuard(reserve_mb)
    version = code_version()
    load_before, began = os.getloadavg()[0], time.monotonic()
    with open(work / "output.log", "wb") as log:
        proc = subprocess.Popen(["nice", "-n", "10", *cmd], cwd=ROOT, env=child_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval=1.0, role=role_of, on_sample=guard)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout * 3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    tree = sampler.finish()
    row: dict[str, Any] = {
        "nodes": nodes, "rounds": rounds, "dataset": "census2000", "wall_s": round(time.monotonic() - began, 1),
        "peak_pss_mb": round(tree.peak_pss_mb), "peak_rss_mb": round(tree.peak_rss_mb),
        "pss_per_node_mb": round(tree.peak_pss_mb / nodes, 1), "peak_processes": tree.peak_processes,
        "peak_fds": tree.peak_fds, "cpu_s": round(tree.cpu_s), "min_mem_available_mb": round(tree.min_mem_available_mb),
        "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1), "error": "",
        "hardware": hardware(), "code_version": version, "packages": package_versions(),
    }
    roles = tree.roles
    for role in ("supernode", "superexec", "clientapp", "superlink", "serverapp"):
        row[f"{role}_pss_mb"] = round(roles.get(role, {}).get("pss_mb", 0.0))
    clientapp = roles.get("clientapp", {})
    row["clientapp_peak_count"] = int(clientapp.get("processes", 0))
    row["clientapp_max_process_pss_mb"] = round(clientapp.get("max_process_pss_mb", 0.0))
    row["clientapp_max_process_rss_mb"] = round(clientapp.get("max_process_rss_mb", 0.0))
    row["superlink_fds"] = int(roles.get("superlink", {}).get("fds", 0))
    cell = work / "cell.json"
    if cell.exists():
        row.update({k: v for k, v in json.loads(cell.read_text()).items() if k in FIELDS})
    if guard.tripped is not None:
        row["outcome"] = "stopped: memory"
        row["error"] = f"MemAvailable fell to {guard.tripped:.0f} MiB (< reserve {reserve_mb:.0f} MiB): the tree was killed"
    elif code != 0 and not row.get("error"):
        row["error"] = (work / "output.log").read_text(errors="replace")[-500:].replace("\n", " | ")
    row.setdefault("outcome", f"exit {code}")
    print(f"[deploy-scale] N={nodes}: {row['outcome']}; start {row.get('start_s')}s, rounds {row.get('round_s_mean')}s "
          f"(max {row.get('round_s_max')}), peak PSS {row['peak_pss_mb']} MiB ({row['pss_per_node_mb']}/node), "
          f"{row['clientapp_peak_count']} ClientApps at once, {row['peak_processes']} processes, {row['peak_fds']} fds; "
          f"log {work / 'output.log'}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part")
    ch = sub.add_parser("child", help=argparse.SUPPRESS)
    ch.add_argument("nodes", type=int)
    ch.add_argument("--rounds", type=int, default=3)
    ch.add_argument("--out", type=Path, required=True)
    ch.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--nodes", nargs="*", type=int, default=[5, 10, 20, 40])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-budget-gib", type=float, default=10.0, help="largest projected peak PSS to start")
    parser.add_argument("--reserve-gib", type=float, default=3.0, help="stop a run when MemAvailable falls below this")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for start-up, and again for the run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.part == "child":
        return child(args.nodes, args.rounds, args.out, args.timeout)
    from benchmarks._fl_common import append_rows

    per_node: float | None = None
    for nodes in sorted(args.nodes):
        if per_node is not None and per_node * nodes > args.memory_budget_gib * 1024:
            row = {"nodes": nodes, "rounds": args.rounds, "outcome": "not started: memory budget",
                   "error": f"projected peak PSS {per_node * nodes / 1024:.1f} GiB ({per_node:.0f} MiB per node) "
                            f"> budget {args.memory_budget_gib:g} GiB", "code_version": code_version()}
            append_rows(args.out / "deployment_scale.csv", FIELDS, [row])
            print(f"[deploy-scale] N={nodes}: {row['error']}", flush=True)
            break
        row = measure_nodes(nodes, args.rounds, args.reserve_gib * 1024, args.timeout)
        append_rows(args.out / "deployment_scale.csv", FIELDS, [row])
        if row["outcome"] != "finished":
            break
        per_node = row["peak_pss_mb"] / nodes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
