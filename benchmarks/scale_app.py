"""The App at 1,000 participants: time and peak memory, and what tiny data does to privacy-utility.

    PYTHONPATH=. .venv/bin/python benchmarks/scale_app.py runs [--only NAME ...]    # -> results/scale_app.csv
    PYTHONPATH=. .venv/bin/python benchmarks/scale_app.py utility [--sizes 10 100 1000]  # -> results/scale_utility.csv
    PYTHONPATH=. .venv/bin/python benchmarks/scale_app.py expect                     # the noise the math predicts

``runs``: the App's jobs as a user starts them, each in a child process (its own session) whose
whole process tree is sampled from ``/proc`` (:mod:`benchmarks._process_tree`): wall time, CPU
seconds, peak RSS and PSS summed over every process (Ray's and Flower's included), and the run's
own ``result.json`` (per-round seconds, final metric, epsilon spent). Runners: ``inprocess``
(:func:`flwr_ppcdl.app.sweep.run_inprocess`, the real ServerApp and ClientApp over an in-process
grid) and ``simulation`` (:mod:`flwr_ppcdl.app.local_run`: ``flwr run`` on Flower's simulation
runtime, one simulated SuperNode per participant, Ray actors of one CPU each). Jobs: the
10-participant default job (census2000) and Fashion-MNIST with 10 and 1,000 participants (60,000
training records: 60 each), App defaults otherwise (30 % flipped labels, 30 rounds).

``utility``: the same 60,000 Fashion-MNIST records split among K = 10, 100, 1,000 participants,
everyone reliable, in-process:

* ``fm-statistics``: the App's default (functional mechanism, epsilon = 1, delta = 1e-5 per
  participant, the statistics protocol with reliability weighting);
* ``fm-noiseless``: the same with epsilon = inf (no noise: what the FM approximation itself costs);
* ``fm-noise-equivalent``: K = 10 participants at the epsilon whose noise multiplier is
  ``sqrt(K'/10)`` times epsilon = 1's, i.e. the summed noise of K' participants at epsilon = 1
  (the prediction below, tested);
* ``sgd-fedavg``: plain (non-private) SGD clients on the same frozen body, FedAvg
  (``benchmarks.harness``): learning rate tuned on the tuning seed, reported on the others;
* the non-private ceiling: softmax regression on all pooled records (the ``reference`` of the runs).

The prediction. Each participant adds noise of sd ``sigma`` to every coordinate of its statistics,
and ``sigma`` does not depend on its record count (replace-one neighbours, bounded records). The
server sums K releases over the same N records: the signal grows with N, the noise sd is
``sqrt(K) sigma``. At fixed N, K = 1,000 participants carry ``sqrt(100) = 10`` times the noise of
K = 10, i.e. exactly the noise of 10 participants at the epsilon whose multiplier is 10 times
larger. ``expect`` prints these numbers.

Every row carries the seeds' role (tune/report), the code version and the package versions. Rows
are appended as measured; a re-run skips the cells already in the CSV.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/scale_app.py` from the checkout
    sys.path.insert(0, str(ROOT))

from benchmarks._process_tree import TreeSampler, TreeStats  # noqa: E402
from benchmarks._provenance import git_commit  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("flwr", "torch", "numpy", "ray", "opendp", "dp-accounting", "flwr-datasets", "grpcio")
FASHION = {"dataset": "fashion-mnist", "unreliable-kind": "flipped-labels", "body": "pool4"}
"""pool4: the App's image body when the committed results were measured (ScatterNet since issue 26)."""
TUNE_SEEDS = (0,)
REPORT_SEEDS = (1, 2)
NOISE_SEEDS = (1, 2, 3, 4, 5)
"""Report seeds of the noisy FM cells: each draw is fresh noise, and at 1,000 participants the noise
dominates, so the comparison with its noise-equivalent K = 10 run needs more than two draws."""
UTILITY_SIZES = (10, 100, 1000)
FM_ROUNDS = 5
"""Rounds of the FM cells: the statistics protocol solves the head from the summed releases, so with
every participant reliable the model after round 1 is the final one (the per-round accuracies in
``scale_app.csv``'s 30-round runs show it)."""
SGD_ROUNDS = 30  # the App's default number of rounds
SGD_EPOCHS = 5  # local epochs of the SGD clients (the App's FM clients take 5 local steps)
SGD_LRS = (0.5, 2.0, 8.0, 32.0)


def package_versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"python=={platform.python_version()} " + " ".join(found)


def code_version() -> str:
    """The commit measured (+dirty when flwr_ppcdl/ or the benchmark code has uncommitted changes)."""
    return git_commit(["flwr_ppcdl", "benchmarks", ":!benchmarks/results"], timeout=30)


def hardware() -> str:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem / 2**20:.0f} GiB"


def child_env() -> dict[str, str]:
    """The children's environment: this checkout first, one thread per process, Flower offline."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
    )
    return env


@dataclass
class Measured:
    """One child run: exit code, wall seconds, the tree's peaks, its output's tail."""

    code: int
    wall_s: float
    tree: TreeStats
    tail: str
    load_before: float
    load_after: float


def measure(cmd: list[str], log: Path, timeout: float, *, pss: bool = True) -> Measured:
    """Run ``cmd`` (niced, its own session) and sample its process tree until it exits."""
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["nice", "-n", "10", *cmd], cwd=ROOT, env=child_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval=1.0, pss=pss)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            code = proc.wait()
    wall = time.monotonic() - started
    tree = sampler.finish()
    return Measured(code, wall, tree, log.read_text(errors="replace")[-3000:], load_before, os.getloadavg()[0])


# --------------------------------------------------------------------------------------------------
# runs: time and memory of App jobs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    name: str
    runner: str  # "inprocess" | "simulation"
    config: dict[str, Any] = field(default_factory=dict)  # run-config overrides of the App's defaults


JOBS = (
    Job("default-k10", "inprocess"),
    Job("default-k10", "simulation"),
    Job("fashion-k10", "inprocess", {**FASHION, "num-partitions": 10}),
    Job("fashion-k10", "simulation", {**FASHION, "num-partitions": 10}),
    Job("fashion-k1000", "inprocess", {**FASHION, "num-partitions": 1000}),
    Job("fashion-k1000", "simulation", {**FASHION, "num-partitions": 1000}),
)


def job_command(job: Job, result_dir: Path, timeout: float) -> list[str]:
    """The child that runs ``job``: the in-process runner, or ``flwr run`` through the sweep's
    simulation runner (:func:`flwr_ppcdl.app.sweep.run_flwr`: its own SuperLink, one simulated
    SuperNode per participant, stopped by PID)."""
    config = {**job.config, "plot": False, "result-dir": str(result_dir)}
    kind = "fm" if job.runner == "inprocess" else "flwr-run"
    spec = {"kind": kind, "config": config, "timeout": timeout}
    return [sys.executable, str(Path(__file__).resolve()), "child", json.dumps(spec)]


def summarise_run(result: dict[str, Any]) -> dict[str, Any]:
    """What a row says about a finished run's ``result.json``."""
    rounds = result["rounds"]
    metric = "r2" if result["settings"]["task"] == "regression" else "accuracy"
    seconds = [float(r["seconds"]) for r in rounds]
    sums = [sum(r["weights"].values()) for r in rounds if r["weights"]]
    counts = [int(m.get("num-examples", 0)) for m in rounds[0]["nodes"].values()] if rounds else [0]
    return {
        "metric": metric,
        "final": result["final_metrics"].get(metric, math.nan),
        "reference": result.get("reference", {}).get(metric, math.nan),
        "round1_metric": rounds[0]["metrics"].get(metric, math.nan) if rounds else math.nan,
        "rounds_done": len(rounds),
        "serverapp_s": result["seconds"],
        "first_round_s": seconds[0] if seconds else math.nan,
        "later_round_s": sum(seconds[1:]) / len(seconds[1:]) if len(seconds) > 1 else math.nan,
        "min_replies": min((r["replies"] for r in rounds), default=0),
        "failures": result["failures"],
        "weights_sum_min": min(sums, default=math.nan),
        "weights_sum_max": max(sums, default=math.nan),
        "epsilon_spent_max": result["privacy_spent"]["epsilon"],
        "delta_spent_max": result["privacy_spent"]["delta"],
        "participants_reported": len(result["participants"]),
        "records_per_participant": f"{min(counts)}-{max(counts)}" if min(counts) != max(counts) else counts[0],
    }


RUN_FIELDS = (
    "job", "runner", "dataset", "participants", "records_per_participant", "rounds", "unreliable_fraction",
    "exit_code", "wall_s", "cpu_s", "peak_rss_mb", "peak_pss_mb", "peak_processes", "peak_fds",
    "serverapp_s", "first_round_s", "later_round_s", "rounds_done", "min_replies", "failures",
    "weights_sum_min", "weights_sum_max", "metric", "round1_metric", "final", "reference",
    "epsilon_spent_max", "delta_spent_max", "participants_reported", "load_before", "load_after",
    "command", "error", "hardware", "code_version", "packages",
)


def run_jobs(out: Path, only: set[str] | None, timeout: float) -> None:
    from benchmarks._fl_common import append_rows
    from flwr_ppcdl.app.local_run import run_config_of
    from flwr_ppcdl.app.settings import DEFAULT_PARTITIONS, RunSettings

    csv_path = out / "scale_app.csv"
    done = _done(csv_path, ("job", "runner"))
    for job in JOBS:
        if (only and job.name not in only and f"{job.name}/{job.runner}" not in only) or (job.name, job.runner) in done:
            continue
        # num-partitions = 0 (the App's default): the runners start DEFAULT_PARTITIONS nodes
        settings = RunSettings.from_config({**run_config_of(ROOT, []), **job.config}).with_partitions(DEFAULT_PARTITIONS)
        work = Path(tempfile.mkdtemp(prefix=f"scale-{job.name}-{job.runner}-"))
        cmd = job_command(job, work / "results", timeout)
        print(f"[scale] {job.name} / {job.runner}: {shlex.join(cmd[1:])[:200]}", flush=True)
        version = code_version()  # of the code the run starts with
        got = measure(cmd, work / "output.log", timeout + 300)
        result_path = work / "results" / "result.json"
        row: dict[str, Any] = {
            "job": job.name, "runner": job.runner, "dataset": settings.dataset,
            "participants": settings.num_partitions, "rounds": settings.num_rounds,
            "unreliable_fraction": settings.unreliable_fraction, "exit_code": got.code,
            "wall_s": round(got.wall_s, 1), "cpu_s": round(got.tree.cpu_s, 1),
            "peak_rss_mb": round(got.tree.peak_rss_mb), "peak_pss_mb": round(got.tree.peak_pss_mb),
            "peak_processes": got.tree.peak_processes, "peak_fds": got.tree.peak_fds,
            "load_before": round(got.load_before, 1), "load_after": round(got.load_after, 1),
            "command": shlex.join(cmd[1:]), "hardware": hardware(), "code_version": version,
            "packages": package_versions(), "error": "",
        }
        if got.code == 0 and result_path.exists():
            result = json.loads(result_path.read_text())
            row.update(summarise_run(result))
        else:
            row["error"] = got.tail[-500:].replace("\n", " | ")
        append_rows(csv_path, RUN_FIELDS, [row])
        print(f"[scale]   exit {got.code}, wall {got.wall_s:.0f}s, CPU {got.tree.cpu_s:.0f}s, peak RSS "
              f"{got.tree.peak_rss_mb:.0f} MiB, PSS {got.tree.peak_pss_mb:.0f} MiB, {got.tree.peak_processes} "
              f"processes; {row.get('metric', '')} {row.get('final', '')}; log {work / 'output.log'}", flush=True)


# --------------------------------------------------------------------------------------------------
# utility: accuracy at fixed total data
# --------------------------------------------------------------------------------------------------


def noise_multiplier(epsilon: float, delta: float = 1e-5) -> float:
    from flwr_ppcdl.privacy.calibration import zcdp_noise_multiplier

    return zcdp_noise_multiplier(epsilon, delta)


def equivalent_epsilon(factor: float, epsilon: float = 1.0, delta: float = 1e-5) -> float:
    """The epsilon whose zCDP noise multiplier is ``factor`` times ``epsilon``'s (bisection)."""
    target = factor * noise_multiplier(epsilon, delta)
    lo, hi = epsilon / (4 * factor), epsilon  # the multiplier falls as epsilon grows
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if noise_multiplier(mid, delta) > target else (lo, mid)
    return hi


@dataclass(frozen=True)
class Cell:
    contender: str
    size: int
    seed: int
    epsilon: float = 1.0
    lr: float | None = None

    @property
    def role(self) -> str:
        return "tune" if self.seed in TUNE_SEEDS else "report"

    def spec(self, result_dir: Path) -> dict[str, Any]:
        if self.contender == "sgd-fedavg":
            return {"kind": "sgd", "size": self.size, "seed": self.seed, "lr": self.lr}
        config = {**FASHION, "unreliable-fraction": 0.0, "num-partitions": self.size, "num-rounds": FM_ROUNDS,
                  "epsilon": self.epsilon, "seed": self.seed, "plot": False, "result-dir": str(result_dir)}
        return {"kind": "fm", "config": config}


def utility_cells(sizes: Iterable[int], done_sgd: dict[int, float]) -> list[Cell]:
    cells: list[Cell] = []
    for size in sizes:
        cells += [Cell("fm-noiseless", size, seed, math.inf) for seed in REPORT_SEEDS]
        for seed in NOISE_SEEDS:
            cells.append(Cell("fm-statistics", size, seed))
            if size == 10:
                cells += [Cell("fm-noise-equivalent", 10, seed, equivalent_epsilon(math.sqrt(k / 10)))
                          for k in (100, 1000)]
        cells += [Cell("sgd-fedavg", size, seed, math.inf, lr) for seed in TUNE_SEEDS for lr in SGD_LRS]
        if size in done_sgd:  # the tuned learning rate is known once the tuning cells ran
            cells += [Cell("sgd-fedavg", size, seed, math.inf, done_sgd[size]) for seed in REPORT_SEEDS]
    return cells


UTILITY_FIELDS = (
    "contender", "participants", "records_per_participant", "seed", "seed_role", "epsilon", "delta",
    "noise_multiplier", "summed_noise_vs_k10", "lr", "rounds", "accuracy", "round1_accuracy", "reference",
    "tuning_best", "exit_code", "wall_s", "cpu_s", "peak_pss_mb", "error", "hardware", "code_version", "packages",
)


def _done(path: Path, keys: tuple[str, ...]) -> set[tuple[str, ...]]:
    import csv

    if not path.exists():
        return set()
    with path.open() as fh:
        return {tuple(row[k] for k in keys) for row in csv.DictReader(fh) if not row.get("error")}


def _tuned_lrs(path: Path) -> dict[int, float]:
    """Per size, the learning rate with the best mean accuracy over the tuning seeds."""
    import csv

    if not path.exists():
        return {}
    scores: dict[tuple[int, float], list[float]] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row["contender"] == "sgd-fedavg" and row["seed_role"] == "tune" and not row["error"]:
                scores.setdefault((int(row["participants"]), float(row["lr"])), []).append(float(row["accuracy"]))
    best: dict[int, float] = {}
    for (size, lr), accs in sorted(scores.items()):
        if len(accs) == len(TUNE_SEEDS) and len([x for x in scores if x[0] == size]) == len(SGD_LRS):
            mean = sum(accs) / len(accs)
            if size not in best or mean > sum(scores[(size, best[size])]) / len(TUNE_SEEDS):
                best[size] = lr
    return best


def mark_tuning_best(path: Path) -> None:
    """Rewrite the ``tuning_best`` column: True on the tuning rows of each size's chosen learning rate."""
    import csv

    tuned = _tuned_lrs(path)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["contender"] == "sgd-fedavg" and row["seed_role"] == "tune":
            row["tuning_best"] = str(tuned.get(int(row["participants"])) == float(row["lr"]))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=UTILITY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def run_utility(out: Path, sizes: list[int], timeout: float) -> None:
    from benchmarks._fl_common import append_rows

    csv_path = out / "scale_utility.csv"
    base = noise_multiplier(1.0)
    for _ in range(2):  # the second pass runs the report seeds of SGD once its tuning is done
        done = _done(csv_path, ("contender", "participants", "seed", "lr", "epsilon"))
        tuned = _tuned_lrs(csv_path)
        for cell in utility_cells(sizes, tuned):
            key = (cell.contender, str(cell.size), str(cell.seed), "" if cell.lr is None else str(cell.lr),
                   str(cell.epsilon))
            if key in done:
                continue
            work = Path(tempfile.mkdtemp(prefix=f"utility-{cell.contender}-{cell.size}-"))
            spec = cell.spec(work / "results")
            cmd = [sys.executable, str(Path(__file__).resolve()), "child", json.dumps(spec), "--out", str(work / "cell.json")]
            print(f"[utility] {cell}", flush=True)
            version = code_version()
            got = measure(cmd, work / "output.log", timeout)
            mult = noise_multiplier(cell.epsilon) if math.isfinite(cell.epsilon) else 0.0
            summed = mult * math.sqrt(cell.size) / (base * math.sqrt(10))
            row: dict[str, Any] = {
                "contender": cell.contender, "participants": cell.size, "records_per_participant": 60_000 // cell.size,
                "seed": cell.seed, "seed_role": cell.role, "epsilon": cell.epsilon,
                "delta": 1e-5 if math.isfinite(cell.epsilon) else 0.0, "noise_multiplier": round(mult, 4),
                "summed_noise_vs_k10": round(summed, 3), "lr": "" if cell.lr is None else cell.lr,
                "rounds": SGD_ROUNDS if cell.lr is not None else FM_ROUNDS, "exit_code": got.code,
                "wall_s": round(got.wall_s, 1), "cpu_s": round(got.tree.cpu_s, 1),
                "peak_pss_mb": round(got.tree.peak_pss_mb), "hardware": hardware(),
                "code_version": version, "packages": package_versions(), "error": "",
            }
            cell_json = work / "cell.json"
            if got.code == 0 and cell_json.exists():
                row.update(json.loads(cell_json.read_text()))
            else:
                row["error"] = got.tail[-500:].replace("\n", " | ")
            append_rows(csv_path, UTILITY_FIELDS, [row])
            mark_tuning_best(csv_path)
            print(f"[utility]   accuracy {row.get('accuracy')} (reference {row.get('reference')}), "
                  f"{got.wall_s:.0f}s", flush=True)


# --------------------------------------------------------------------------------------------------
# children
# --------------------------------------------------------------------------------------------------


def child(spec: dict[str, Any], out: Path | None) -> int:
    """Run one job in this process; write a JSON summary to ``out``; exit code 0 on success."""
    import torch

    torch.set_num_threads(1)
    if spec["kind"] in ("fm", "flwr-run"):
        from flwr_ppcdl.app.sweep import run_flwr, run_inprocess

        result = run_inprocess(spec["config"]) if spec["kind"] == "fm" else run_flwr(spec["config"], ROOT, float(spec.get("timeout", 5400)))
        rounds = result["rounds"]
        summary = {
            "accuracy": result["final_metrics"].get("accuracy", math.nan),
            "round1_accuracy": rounds[0]["metrics"].get("accuracy", math.nan),
            "reference": result.get("reference", {}).get("accuracy", math.nan),
        }
    else:
        summary = sgd_cell(int(spec["size"]), int(spec["seed"]), float(spec["lr"]))
    if out is not None:
        out.write_text(json.dumps(summary))
    print(f"[child] {summary}", flush=True)
    return 0


def sgd_cell(size: int, seed: int, lr: float) -> dict[str, Any]:
    """Plain SGD clients on the frozen body, FedAvg, everyone reliable (``benchmarks.harness``)."""
    from functools import lru_cache

    import benchmarks.harness as harness

    # every participant's features stay cached (the harness keeps 256: at 1,000 participants every
    # round would rebuild them all)
    harness._features = lru_cache(maxsize=None)(harness._features.__wrapped__)
    class Pool4(harness.Scenario):  # the FM cells' body (FASHION)
        def run_config(self, **extra: Any) -> dict[str, Any]:
            return super().run_config(**{"body": FASHION["body"], **extra})

    scn = Pool4(dataset="fashion-mnist", kind="flipped-labels", fraction=0.0, seed=seed,
                partitions=size, rounds=SGD_ROUNDS, local_epochs=SGD_EPOCHS, tag="scale")

    def local(head, h, y, settings, *, pid, seed):
        return harness.sgd_local(head, h, y, settings, lr=lr, epochs=SGD_EPOCHS, batch=64, seed=seed)

    result = harness.run_head_fed(scn, local)
    return {"accuracy": result["value"], "round1_accuracy": math.nan, "reference": math.nan}


def expect() -> None:
    """Print the noise each participant adds and the summed noise the server sees, per K."""
    from flwr_ppcdl.privacy.release_law import expected_calibration
    from flwr_ppcdl.privacy.sensitivity import sensitivity_softmax_l2

    d, classes, total = 49, 10, 60_000
    coords = (d + 1) * (d + 2) // 2 + classes * (d + 1)
    delta2 = sensitivity_softmax_l2(d, classes)
    print(f"Fashion-MNIST, pool4 body: d = {d} features + bias, {classes} classes, {coords} released coordinates, "
          f"L2 sensitivity {delta2:.4f}; N = {total} records in total; (epsilon, delta) = (1, 1e-5)")
    print(f"{'K':>5} {'n each':>7} {'sigma':>8} {'summed sd':>10} {'sd / N':>10} {'x K=10':>7}  same summed noise at K=10: epsilon")
    base = None
    for k in UTILITY_SIZES:
        n = total // k
        sigma = expected_calibration("gaussian", "discrete", 1.0, 1e-5, delta2, n, coords).scale
        summed = math.sqrt(k) * sigma
        base = base or summed
        eq = equivalent_epsilon(math.sqrt(k / 10))
        print(f"{k:>5} {n:>7} {sigma:>8.3f} {summed:>10.2f} {summed / total:>10.2e} {summed / base:>7.2f}  {eq:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    runs = sub.add_parser("runs", help="time and peak memory of App jobs")
    runs.add_argument("--only", nargs="*", help="job names (or name/runner) to run")
    runs.add_argument("--timeout", type=float, default=5400.0)
    util = sub.add_parser("utility", help="accuracy at fixed total data, K = 10, 100, 1,000")
    util.add_argument("--sizes", nargs="*", type=int, default=list(UTILITY_SIZES))
    util.add_argument("--timeout", type=float, default=5400.0)
    for p in (runs, util):
        p.add_argument("--out", type=Path, default=RESULTS)
    sub.add_parser("expect", help="the noise the math predicts (no run)")
    ch = sub.add_parser("child", help=argparse.SUPPRESS)
    ch.add_argument("spec")
    ch.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.part == "runs":
        run_jobs(args.out, set(args.only or []), args.timeout)
    elif args.part == "utility":
        run_utility(args.out, args.sizes, args.timeout)
    elif args.part == "expect":
        expect()
    else:
        return child(json.loads(args.spec), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
