"""Hydra entry point: paper-style sweeps over the same experiment the Flower App runs.

    python -m flwr_ppcdl.sweep                                   # one job, the default experiment
    python -m flwr_ppcdl.sweep -m privacy.epsilon=0.1,1,10 unreliable.fraction=0,0.3,0.5 \\
        strategy=reliability,fedavg                              # every combination + a summary

Each config group (``dataset``, ``model``, ``privacy``, ``strategy``, ``unreliable``,
``experiment``) instantiates a small spec with ``_target_``; their run-config entries are merged into
:class:`~flwr_ppcdl.task.RunSettings`, so a sweep job and ``flwr run . --run-config ...`` mean the same
experiment. ``experiment.runner`` chooses how a job runs:

* ``inprocess`` (default): the real ServerApp logic and ClientApp handlers over an in-process
  Flower ``Grid`` - no Ray, deterministic, a few seconds a job;
* ``flwr-run``: ``flwr run .`` in a subprocess per job (the supported deployment path of Flower
  1.42; about 20 s of start-up a job), results read back from the job's folder.

After a multirun, :class:`SweepSummary` (a Hydra callback) writes ``summary.csv`` and
``summary.png`` into the sweep folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr_ppcdl.task import DATASETS, STRATEGIES, UNRELIABLE_KINDS, RunSettings

log = logging.getLogger(__name__)

RUNNERS = ("inprocess", "flwr-run")


# --------------------------------------------------------------------------------------------------
# Config-group specs (instantiated by Hydra with `_target_`)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "census2000"
    feature_set: str = "basic"
    dataset_dir: str = "/usr/share/datasets/fashion-mnist"

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(f"dataset.name must be one of {DATASETS}; got {self.name!r}")

    def run_config(self) -> dict[str, Any]:
        task = "regression" if self.name == "census2000" else "classification"
        return {"dataset": self.name, "task": task, "feature-set": self.feature_set, "dataset-dir": self.dataset_dir}


@dataclass(frozen=True)
class ModelSpec:
    body: str = "pool4-rp16"
    solver: str = "iterative"
    local_steps: int = 5
    proximal_mu: float = 0.0
    protocol: str = "parameters"

    def run_config(self) -> dict[str, Any]:
        return {
            "body": self.body, "solver": self.solver, "local-steps": self.local_steps,
            "proximal-mu": self.proximal_mu, "protocol": self.protocol,
        }


@dataclass(frozen=True)
class PrivacySpec:
    epsilon: float = 1.0
    sampler: str = "discrete"

    def __post_init__(self) -> None:
        if not float(self.epsilon) > 0:
            raise ValueError(f"privacy.epsilon must be > 0 (inf = no noise); got {self.epsilon!r}")

    def run_config(self) -> dict[str, Any]:
        return {"epsilon": float(self.epsilon), "sampler": self.sampler}


@dataclass(frozen=True)
class StrategySpec:
    name: str = "reliability"
    trimmed_beta: float = 0.2
    reliability_method: str = "truth-discovery"
    server_validation: int = 500

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"strategy.name must be one of {STRATEGIES}; got {self.name!r}")

    def run_config(self) -> dict[str, Any]:
        return {
            "strategy": self.name, "trimmed-beta": self.trimmed_beta,
            "reliability-method": self.reliability_method, "server-validation": self.server_validation,
        }


@dataclass(frozen=True)
class UnreliableSpec:
    kind: str = "random-targets"
    fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in UNRELIABLE_KINDS:
            raise ValueError(f"unreliable.kind must be one of {UNRELIABLE_KINDS}; got {self.kind!r}")

    def run_config(self) -> dict[str, Any]:
        return {"unreliable-kind": self.kind, "unreliable-fraction": float(self.fraction)}


@dataclass(frozen=True)
class ExperimentSpec:
    num_partitions: int = 10
    num_rounds: int = 30
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.3
    seed: int = 0
    runner: str = "inprocess"
    plot: bool = True

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(f"experiment.runner must be one of {RUNNERS}; got {self.runner!r}")

    def run_config(self) -> dict[str, Any]:
        return {
            "num-partitions": self.num_partitions, "num-rounds": self.num_rounds,
            "partitioning": self.partitioning, "dirichlet-alpha": self.dirichlet_alpha,
            "seed": self.seed, "plot": self.plot,
        }


def compose_run_config(specs: list[Any], result_dir: str) -> dict[str, Any]:
    """Merge the groups' run-config entries (flat kebab-case keys, as in pyproject.toml)."""
    merged: dict[str, Any] = {}
    for spec in specs:
        merged.update(spec.run_config())
    merged["result-dir"] = result_dir
    return merged


# --------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------


def run_inprocess(run_config: dict[str, Any]) -> dict[str, Any]:
    """Run the ServerApp logic and the ClientApp over an in-process grid; return result.json."""
    from flwr_ppcdl.client_app import app as client_app
    from flwr_ppcdl.server_app import run_server
    from flwr_ppcdl.testing import InProcessGrid

    settings = RunSettings.from_config(run_config)
    grid = InProcessGrid(
        client_app,
        num_nodes=settings.num_partitions,
        run_config=run_config,
    )
    run = run_server(grid, settings)
    return json.loads(run.to_json())


def _flwr_config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return repr(value)


def run_flwr(run_config: dict[str, Any], project_dir: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``flwr run .`` for one job (the supported path in Flower 1.42) and read its results."""
    flwr = shutil.which("flwr") or str(Path(os.sys.executable).with_name("flwr"))  # type: ignore[attr-defined]
    overrides = " ".join(f"{k}={_flwr_config_value(v)}" for k, v in run_config.items())
    env = dict(os.environ)
    env.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    cmd = [
        flwr, "run", str(project_dir), "--stream", "--run-config", overrides,
        "--federation-config", f"num-supernodes={run_config['num-partitions']} client-resources-num-cpus=1",
    ]
    subprocess.run(cmd, check=True, timeout=timeout, env=env)
    result = Path(run_config["result-dir"]) / "result.json"
    if not result.exists():
        raise RuntimeError(f"`flwr run` finished but wrote no {result}; see its log above")
    return json.loads(result.read_text())


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "dataset", "strategy", "protocol", "epsilon", "unreliable_kind", "unreliable_fraction", "partitioning",
    "seed", "metric", "final", "reference", "relative", "weight_on_unreliable", "failures", "seconds", "job_dir",
)


def summarise_result(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    """One row of the sweep summary from a run's ``result.json``."""
    s = result["settings"]
    metric = "r2" if s["task"] == "regression" else "accuracy"
    final = float(result["final_metrics"].get(metric, float("nan")))
    ref = float(result["reference"].get(metric, float("nan")))
    flags = {p["node_id"]: p["unreliable"] for p in result["participants"]}
    last = result["rounds"][-1]["weights"] if result["rounds"] else {}
    mass = sum(w for n, w in last.items() if flags.get(n)) if last else float("nan")
    return {
        "dataset": s["dataset"], "strategy": s["strategy"], "protocol": s.get("protocol", "parameters"),
        "epsilon": s["epsilon"],
        "unreliable_kind": s["unreliable_kind"], "unreliable_fraction": s["unreliable_fraction"],
        "partitioning": s["partitioning"], "seed": s["seed"], "metric": metric, "final": final,
        "reference": ref, "relative": final / ref if ref else float("nan"),
        "weight_on_unreliable": mass, "failures": result["failures"], "seconds": result["seconds"],
        "job_dir": job_dir,
    }


def write_summary(sweep_dir: Path) -> Path | None:
    """Collect every job's ``result.json`` under ``sweep_dir`` into ``summary.csv`` and ``summary.png``."""
    rows = []
    for path in sorted(sweep_dir.rglob("result.json")):
        rows.append(summarise_result(json.loads(path.read_text()), str(path.parent.relative_to(sweep_dir))))
    if not rows:
        log.warning("no result.json under %s: nothing to summarise", sweep_dir)
        return None
    out = sweep_dir / "summary.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _plot_summary(rows, sweep_dir / "summary.png")
    log.info("sweep summary (%d jobs): %s", len(rows), out)
    return out


def _plot_summary(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((f"{row['strategy']}/{row['protocol']}", row["unreliable_fraction"]), []).append(row)
    for (strategy, fraction), items in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), float(kv[0][1]))):
        items = sorted(items, key=lambda r: float(r["epsilon"]))
        xs = [min(float(r["epsilon"]), 1e3) for r in items]
        ax.plot(xs, [r["final"] for r in items], marker="o", label=f"{strategy}, unreliable {fraction}")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon per participant (inf plotted at 1e3)")
    ax.set_ylabel(f"final test {rows[0]['metric']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


try:  # Hydra is a dependency, but keep the pure parts importable without it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class SweepSummary(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: after a multirun, write the sweep's ``summary.csv`` and ``summary.png``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir))


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    conf_dir = str(Path(__file__).resolve().parent.parent / "conf")
    if not Path(conf_dir).is_dir():
        conf_dir = str(Path.cwd() / "conf")

    @hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")
    def _job(cfg: DictConfig) -> float:
        specs = [instantiate(cfg[group]) for group in ("dataset", "model", "privacy", "strategy", "unreliable", "experiment")]
        out_dir = HydraConfig.get().runtime.output_dir
        run_config = compose_run_config(specs, result_dir=out_dir)
        experiment: ExperimentSpec = specs[-1]
        job = HydraConfig.get().job
        log.info("job %s: %s", getattr(job, "num", 0), {k: v for k, v in run_config.items() if k != "result-dir"})
        started = time.perf_counter()
        if experiment.runner == "inprocess":
            result = run_inprocess(run_config)
        else:
            result = run_flwr(run_config, Path(conf_dir).parent)
        row = summarise_result(result, out_dir)
        log.info("job %s done in %.1fs: %s=%.4f (reference %.4f)", getattr(job, "num", 0),
                 time.perf_counter() - started, row["metric"], row["final"], row["reference"])
        Path(out_dir, "row.json").write_text(json.dumps(row, default=str))
        return float(row["final"])

    _job()


__all__ = [
    "DatasetSpec", "ExperimentSpec", "ModelSpec", "PrivacySpec", "StrategySpec", "SweepSummary",
    "UnreliableSpec", "compose_run_config", "main", "run_flwr", "run_inprocess", "summarise_result",
    "write_summary",
]

if __name__ == "__main__":
    main()
