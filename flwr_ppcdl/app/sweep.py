"""Hydra entry point: paper-style sweeps over the same experiment the Flower App runs.

    python -m flwr_ppcdl.app.sweep                               # one job, the default experiment
    python -m flwr_ppcdl.app.sweep -m privacy.epsilon=0.1,1,10 unreliable.fraction=0,0.3,0.5 \\
        strategy=reliability,fedavg                              # every combination + a summary

Each config group (``dataset``, ``model``, ``privacy``, ``strategy``, ``unreliable``,
``experiment``) is a thin :class:`Fragment` of the run config: its keys map onto
:class:`~flwr_ppcdl.app.settings.RunSettings` fields, and its defaults are read from RunSettings
through the ``${default:key}`` resolver, so a sweep job and ``flwr run . --run-config ...`` mean the
same experiment and every default lives in one place. ``experiment.runner`` chooses how a job runs:

* ``inprocess`` (default): the real ServerApp logic and ClientApp handlers over an in-process
  Flower ``Grid`` - no Ray, no processes, a few seconds a job (the privacy noise is fresh in every
  job, as in any run);
* ``flwr-run``: ``flwr run .`` in a subprocess per job (Flower's simulation runtime; about 20 s of
  start-up a job), results read back from the job's folder.

``experiment.paired_noise=true`` gives every job of a seed the same, reproducible noise
(``insecure-noise-seed = seed``), so that two arms (strategies, protocols) differ by their rule and
not by their draw: a comparison on public data that is NOT PRIVATE, and labelled so in every job's
output, the summary and its plot. Jobs print at ``verbosity = quiet`` unless told otherwise.

After a multirun, :class:`SweepSummary` (a Hydra callback) writes ``summary.csv`` (one row per
job), ``summary_mean.csv`` (mean, standard deviation and count over the seeds of each setting) and
``summary.png`` (the means with their standard deviation as error bars) into the sweep folder.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flwr_ppcdl.app.checks import result_path
from flwr_ppcdl.app.console import LOG as log
from flwr_ppcdl.app.console import SUMMARY, root_handlers_only
from flwr_ppcdl.app.settings import DEFAULT_PARTITIONS, RunSettings, main_metric

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy


RUNNERS = ("inprocess", "flwr-run")
GROUPS = ("dataset", "model", "privacy", "strategy", "unreliable", "experiment")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
"""Hydra's config folder in a source checkout (``conf/`` at the repository root)."""

# --------------------------------------------------------------------------------------------------
# Config-group fragments (instantiated by Hydra with `_target_`)
# --------------------------------------------------------------------------------------------------

_SETTING_KEYS = {f.name.replace("_", "-") for f in fields(RunSettings)}


def run_config_key(group: str, key: str) -> str:
    """The run-config key of ``group.key``: ``name`` is the group's own key (``dataset=...``),
    ``unreliable.kind`` is ``unreliable-kind``, anything else its kebab-case name."""
    if key == "name":
        return group
    kebab = key.replace("_", "-")
    prefixed = f"{group}-{kebab}"
    return prefixed if prefixed in _SETTING_KEYS else kebab


class Fragment:
    """One Hydra config group's share of the run config (validated only by RunSettings).

    ``Fragment(group="privacy", epsilon=1.0)`` contributes ``{"epsilon": 1.0}``; the ``experiment``
    group's ``runner`` is the sweep's own choice, not a run-config key.
    """

    def __init__(self, group: str, **values: Any) -> None:
        if group not in GROUPS:
            raise ValueError(f"unknown config group {group!r}; expected one of {GROUPS}")
        self.group = group
        self.runner = str(values.pop("runner", "inprocess"))
        if self.runner not in RUNNERS:
            raise ValueError(f"experiment.runner must be one of {RUNNERS}; got {self.runner!r}")
        self.paired_noise = values.pop("paired_noise", False)
        if not isinstance(self.paired_noise, bool):
            raise ValueError(f"experiment.paired_noise must be true or false; got {self.paired_noise!r}")
        unknown = sorted(k for k in values if run_config_key(group, k) not in _SETTING_KEYS)
        if unknown:
            raise ValueError(f"{group} has no option(s) {unknown}; run-config keys: {sorted(_SETTING_KEYS)}")
        self.values = values

    def run_config(self) -> dict[str, Any]:
        """The fragment as flat kebab-case run-config entries."""
        return {run_config_key(self.group, key): value for key, value in self.values.items()}


def register_resolver() -> None:
    """``${default:key}`` in ``conf/`` reads RunSettings' default for run-config ``key``."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("default"):
        OmegaConf.register_new_resolver("default", RunSettings.default_value)


register_resolver()  # so that conf/ composes wherever this module is imported (tests, notebooks)


def compose_run_config(fragments: list[Fragment], result_dir: str) -> dict[str, Any]:
    """Merge the groups' run-config entries (flat kebab-case keys, as in pyproject.toml).

    With ``paired_noise`` in any fragment, ``insecure-noise-seed`` becomes the job's ``seed``:
    reproducible noise shared by every job of that seed, NOT private (see the module docstring).
    """
    merged: dict[str, Any] = {}
    for fragment in fragments:
        merged.update(fragment.run_config())
    if any(f.paired_noise for f in fragments):
        merged["insecure-noise-seed"] = int(merged.get("seed", RunSettings.seed))
    merged["result-dir"] = result_dir
    return merged


# --------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------


def run_inprocess(run_config: dict[str, Any], strategy: Strategy | None = None) -> dict[str, Any]:
    """Run the ServerApp logic and the ClientApp over an in-process grid; return result.json.

    ``strategy`` replaces the one the settings ask for (see :func:`~flwr_ppcdl.app.server_app.run_server`).
    The returned result (and ``result.json``) carries the simulation-only oracle reference,
    computed here after the run (:mod:`~flwr_ppcdl.app.oracle`), never by the ServerApp.
    """
    from flwr_ppcdl.app.client_app import app as client_app
    from flwr_ppcdl.app.grid import InProcessGrid
    from flwr_ppcdl.app.oracle import complete_run
    from flwr_ppcdl.app.server_app import run_server

    settings = RunSettings.from_config(run_config)
    out = result_path(settings.result_dir, confine=False)  # the caller's own choice of folder
    grid = InProcessGrid(client_app, num_nodes=settings.num_partitions or DEFAULT_PARTITIONS, run_config=run_config)
    run_server(grid, settings, strategy=strategy, result_dir=out)
    return complete_run(out)


def _flwr_config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return repr(value)


def run_flwr(run_config: dict[str, Any], project_dir: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``flwr run .`` for one job (the supported path in Flower 1.42) and read its results.

    Through :mod:`~flwr_ppcdl.app.local_run`: the job's own SuperLink and ports, stopped by PID.
    """
    from flwr_ppcdl.app.local_run import run

    overrides = " ".join(f"{k}={_flwr_config_value(v)}" for k, v in run_config.items())
    code = run(project_dir, ["--run-config", overrides], timeout=timeout)
    result = Path(run_config["result-dir"]) / "result.json"
    if code != 0 or not result.exists():
        raise RuntimeError(f"`flwr run` failed (exit {code}); no {result}; see its log above")
    return cast(dict[str, Any], json.loads(result.read_text()))


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "dataset", "strategy", "protocol", "noise", "epsilon", "delta", "unreliable_kind", "unreliable_fraction", "partitioning",
    "num_partitions", "seed", "noise_source", "metric", "final", "fedavg", "reference", "relative", "weight_on_unreliable",
    "failures", "seconds", "job_dir",
)
MEAN_KEYS = ("final", "fedavg", "reference", "relative", "weight_on_unreliable")
"""Columns averaged over seeds in ``summary_mean.csv``; the setting is every column before ``seed``."""
PAIRED = "paired (insecure-noise-seed = seed): NOT PRIVATE"


def summarise_result(result: dict[str, Any], job_dir: str) -> dict[str, Any]:
    """One row of the sweep summary from a run's ``result.json``."""
    s = result["settings"]
    metric = main_metric(s["task"])
    final = float(result["final_metrics"].get(metric, float("nan")))
    ref = float(result["reference"].get(metric, float("nan")))
    fedavg = result.get("fedavg_final_metrics", {}).get(metric, final if s["strategy"] == "fedavg" else float("nan"))
    flags = {p["node_id"]: p["unreliable"] for p in result["participants"]}
    last = result["rounds"][-1]["weights"] if result["rounds"] else {}
    mass = sum(w for n, w in last.items() if flags.get(n)) if last else float("nan")
    return {
        "dataset": s["dataset"], "strategy": s["strategy"], "protocol": s.get("protocol", "parameters"),
        "noise": s.get("noise", "laplace"), "epsilon": s["epsilon"],
        "delta": s.get("delta", 0.0) if s.get("noise", "laplace") == "gaussian" else 0.0,
        "unreliable_kind": s["unreliable_kind"], "unreliable_fraction": s["unreliable_fraction"],
        "partitioning": s["partitioning"], "num_partitions": s["num_partitions"], "seed": s["seed"],
        "noise_source": PAIRED if s.get("insecure_noise_seed", -1) >= 0 else "fresh (OS CSPRNG)",
        "metric": metric, "final": final, "fedavg": float(fedavg),
        "reference": ref, "relative": final / ref if ref else float("nan"),
        "weight_on_unreliable": mass, "failures": result["failures"], "seconds": result["seconds"],
        "job_dir": job_dir,
    }


def mean_over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (every column before ``seed``): ``<key>_mean``, ``<key>_sd`` (sample
    standard deviation; 0 for one seed) and ``<key>_n`` over its seeds for each of :data:`MEAN_KEYS`,
    and the seeds themselves."""
    setting = SUMMARY_COLUMNS[: SUMMARY_COLUMNS.index("seed")]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in setting) + (row["noise_source"], row["metric"]), []).append(row)
    out = []
    for items in groups.values():
        first = items[0]
        merged: dict[str, Any] = {k: first[k] for k in (*setting, "noise_source", "metric")}
        merged["seeds"] = " ".join(str(r["seed"]) for r in sorted(items, key=lambda r: int(r["seed"])))
        for key in MEAN_KEYS:
            values = [float(r[key]) for r in items if math.isfinite(float(r[key]))]
            merged[f"{key}_n"] = len(values)
            merged[f"{key}_mean"] = sum(values) / len(values) if values else float("nan")
            merged[f"{key}_sd"] = (
                math.sqrt(sum((v - merged[f"{key}_mean"]) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            )
        out.append(merged)
    return out


def write_summary(sweep_dir: Path) -> Path | None:
    """Collect every job's ``result.json`` under ``sweep_dir`` into ``summary.csv``,
    ``summary_mean.csv`` and ``summary.png`` (see the module docstring)."""
    rows = []
    for path in sorted(sweep_dir.rglob("result.json")):
        rows.append(summarise_result(json.loads(path.read_text()), str(path.parent.relative_to(sweep_dir))))
    if not rows:
        log.warning("no result.json under %s: nothing to summarise", sweep_dir)
        return None
    out = sweep_dir / "summary.csv"
    _write_csv(out, rows, SUMMARY_COLUMNS)
    means = mean_over_seeds(rows)
    _write_csv(sweep_dir / "summary_mean.csv", means, tuple(means[0]))
    _plot_summary(means, sweep_dir / "summary.png")
    log.info("sweep summary (%d jobs, %d settings): %s", len(rows), len(means), out, extra=SUMMARY)
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _plot_summary(means: list[dict[str, Any]], path: Path) -> None:
    """Final metric against epsilon, one line per (strategy/protocol, unreliable fraction): the mean
    over seeds with the standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in means:
        groups.setdefault((f"{row['strategy']}/{row['protocol']}", row["unreliable_fraction"]), []).append(row)
    for (strategy, fraction), items in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), float(kv[0][1]))):
        items = sorted(items, key=lambda r: float(r["epsilon"]))
        xs = [min(float(r["epsilon"]), 1e3) for r in items]
        seeds = max(r["final_n"] for r in items)
        ax.errorbar(xs, [r["final_mean"] for r in items], yerr=[r["final_sd"] for r in items], marker="o", capsize=3,
                    label=f"{strategy}, unreliable {fraction} ({seeds} seed{'s' if seeds != 1 else ''})")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon per participant (inf plotted at 1e3)")
    ax.set_ylabel(f"final test {means[0]['metric']} (mean ± sd over seeds)")
    paired = any(r["noise_source"] == PAIRED for r in means)
    ax.set_title("NOT PRIVATE: paired noise (insecure-noise-seed = seed), a comparison only" if paired
                 else "fresh privacy noise in every job", fontsize=9, color="tab:red" if paired else "black")
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
        with root_handlers_only():
            write_summary(Path(config.hydra.sweep.dir))


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    register_resolver()
    conf_dir = str(CONF_DIR if CONF_DIR.is_dir() else Path.cwd() / "conf")

    @hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")
    def _job(cfg: DictConfig) -> float:
        fragments = [instantiate(cfg[group]) for group in GROUPS]
        out_dir = HydraConfig.get().runtime.output_dir
        run_config = compose_run_config(fragments, result_dir=out_dir)
        runner = fragments[GROUPS.index("experiment")].runner
        # hydra.job.num is unset (MISSING) outside a multirun: select it without raising
        num = OmegaConf.select(cast(Any, HydraConfig.get()), "job.num", default=0, throw_on_missing=False)
        with root_handlers_only():
            log.info("job %s: %s", num, {k: v for k, v in run_config.items() if k != "result-dir"})
            started = time.perf_counter()
            result = run_inprocess(run_config) if runner == "inprocess" else run_flwr(run_config, Path(conf_dir).parent)
            row = summarise_result(result, out_dir)
            log.info("job %s done in %.1fs: %s=%.4f (FedAvg on the same replies %.4f, oracle %.4f; noise: %s)", num,
                     time.perf_counter() - started, row["metric"], row["final"], row["fedavg"], row["reference"],
                     row["noise_source"], extra=SUMMARY)
        Path(out_dir, "row.json").write_text(json.dumps(row, default=str))
        return float(row["final"])

    _job()


__all__ = [
    "Fragment", "SweepSummary", "compose_run_config", "main", "register_resolver", "run_config_key",
    "run_flwr", "run_inprocess", "summarise_result", "write_summary",
]

if __name__ == "__main__":
    main()
