"""What a run reports: `RunResult` (``result.json``), CSVs, the summary plot, and the log formats."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flwr_ppcdl import wire
from flwr_ppcdl.app.recording import RecordingStrategy
from flwr_ppcdl.app.settings import RunSettings, main_metric


@dataclass
class RunResult:
    """Everything a run reports, saved as ``result.json`` (+ CSVs and a PNG) in ``result-dir``.

    ``reference`` stays empty in what the ServerApp writes: the non-private centralised reference
    is a simulation-only oracle that :mod:`flwr_ppcdl.app.oracle` adds afterwards, outside the App.
    """

    settings: dict[str, Any]
    rounds: list[dict[str, Any]]
    initial_metrics: dict[str, float]
    final_metrics: dict[str, float]
    participants: list[dict[str, Any]]
    epsilon_meaning: str
    seconds: float
    failures: int
    excluded: list[dict[str, Any]] = field(default_factory=list)
    rounds_without_update: list[int] = field(default_factory=list)
    reference: dict[str, float] = field(default_factory=dict)  # filled outside the ServerApp (oracle)
    reference_note: str = "not computed (the ServerApp never reads participants' records; see flwr_ppcdl.app.oracle)"
    not_private: list[str] = field(default_factory=list)  # why this run is NOT private (settings.privacy_warnings)
    undecidable: list[dict[str, Any]] = field(default_factory=list)  # rounds the uploads could not decide
    overruled: list[dict[str, Any]] = field(default_factory=list)  # flags the server's records overruled (server-data)
    privacy_spent: dict[str, Any] = field(default_factory=dict)  # the largest (epsilon, delta) spent, with its meaning
    fedavg_final_metrics: dict[str, float] = field(default_factory=dict)  # FedAvg of the final round's replies
    versions: dict[str, str] = field(default_factory=dict)  # code_version(): git commit and package versions

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def participant_rows(strategy: RecordingStrategy, unreliable: set[int]) -> list[dict[str, Any]]:
    """One row per node that replied: its partition, ground-truth flag, epsilon, first/last round.

    A node whose last reply came before the final round dropped out; a node that first replied
    after round 1 (e.g. a restarted SuperNode under a new node id) joined late, it did not drop.
    """
    final_round = max(strategy.rounds, default=0)
    rows = []
    for node, pid in sorted(strategy.node_partition.items(), key=lambda kv: (kv[1], kv[0])):
        seen = sorted(r.round for r in strategy.rounds.values() if node in r.nodes)
        eps = max((strategy.rounds[r].nodes[node].get(wire.FM_EPSILON, 0.0) for r in seen), default=0.0)
        delta = max((strategy.rounds[r].nodes[node].get(wire.FM_DELTA, 0.0) for r in seen), default=0.0)
        last = seen[-1] if seen else 0
        counts = {n: m.get(wire.NUM_EXAMPLES, 0.0) for n, m in strategy.rounds[last].nodes.items()} if seen else {}
        total = sum(counts.values())
        rows.append({
            "node_id": node,
            "partition_id": pid,
            "unreliable": pid in unreliable,  # ground truth, for evaluation only
            "epsilon": eps,
            "delta": delta,  # 0: pure epsilon-DP (Laplace); else (epsilon, delta)-DP (Gaussian)
            "rounds_participated": len(seen),
            "first_round": seen[0] if seen else None,
            "last_round": last,
            "dropped_after_round": last if last < final_round else None,
            # the claimed count's share of its last round (what FedAvg weighs by; unverified)
            "fedavg_share": counts.get(node, 0.0) / total if total else None,
        })
    return rows


def privacy_spent(participants: list[dict[str, Any]], settings: RunSettings) -> dict[str, Any]:
    """The largest (epsilon, delta) any participant reported spending, with what it means.

    Each participant's records are disjoint from the others', so the per-record guarantee of the
    whole run is this maximum (parallel composition).
    """
    eps = max((float(p["epsilon"]) for p in participants), default=0.0)
    delta = max((float(p.get("delta", 0.0)) for p in participants), default=0.0)
    kind = "pure epsilon-DP" if delta == 0.0 else "(epsilon, delta)-DP"
    text = f"epsilon = {eps:g}" + ("" if delta == 0.0 else f", delta = {delta:g}")
    text += f" ({kind}, record level (replace-one neighbours), per participant, for the whole run)"
    return {"epsilon": eps, "delta": delta, "guarantee": kind, "noise": settings.noise, "text": text}


OUTPUT_FILES = ("result.json", "result.json.tmp", "error.txt", "rounds.csv", "weights.csv", "summary.png")
"""Every file a run writes into its ``result-dir`` (a new run removes the previous run's first)."""


def clear_outputs(out: Path) -> None:
    """Remove the files a previous run left in ``out`` (:data:`OUTPUT_FILES` only, nothing else)."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)


def code_version() -> dict[str, str]:
    """The code a result came from: the versions of the packages that decide the numbers, where this
    package was imported from, and the git commit (``-dirty`` with uncommitted changes) of the
    checkout holding it -- or, for a Flower App installed from a FAB, of the working folder if that
    is a checkout of this project."""
    import subprocess
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in ("flwr-ppcdl", "flwr", "torch", "numpy", "opendp", "dp-accounting"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["flwr-ppcdl_from"] = str(Path(__file__).resolve().parents[1])  # a checkout or an installed wheel
    versions["git_commit"] = "unknown (not run from a git checkout)"
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        if not (folder / "flwr_ppcdl" / "app" / "report.py").exists():
            continue
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
            if head.returncode == 0:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                       capture_output=True, text=True, timeout=10).stdout.strip()
                versions["git_commit"] = head.stdout.strip() + ("-dirty" if dirty else "")
                break
        except (OSError, subprocess.SubprocessError):
            continue
    return versions


def save_results(run: RunResult, out: Path, *, plot: bool = True) -> Path:
    """Write ``rounds.csv``, ``weights.csv``, (``plot``) ``summary.png`` and, last, ``result.json``
    (the sign that a run finished) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    metric_names = sorted({k for r in run.rounds for k in r["metrics"]})
    fedavg_names = sorted({k for r in run.rounds for k in r.get("fedavg_metrics", {})})
    lines = ["round,seconds,replies,failures," + ",".join(metric_names + [f"fedavg_{m}" for m in fedavg_names])]
    for r in run.rounds:
        lines.append(",".join([str(r["round"]), f"{r['seconds']:.4f}", str(r["replies"]), str(r["failures"])]
                              + [f"{r['metrics'].get(m, float('nan')):.6g}" for m in metric_names]
                              + [f"{r.get('fedavg_metrics', {}).get(m, float('nan')):.6g}" for m in fedavg_names]))
    (out / "rounds.csv").write_text("\n".join(lines) + "\n")
    flags = {p["node_id"]: p for p in run.participants}
    lines = ["round,node_id,partition_id,unreliable,weight"]
    for r in run.rounds:
        for node, w in sorted(r["weights"].items()):
            p = flags.get(node, {})
            lines.append(f"{r['round']},{node},{p.get('partition_id', '')},{p.get('unreliable', '')},{w:.6g}")
    (out / "weights.csv").write_text("\n".join(lines) + "\n")
    if plot:
        plot_results(run, out / "summary.png")
    tmp = out / "result.json.tmp"
    tmp.write_text(run.to_json())
    tmp.replace(out / "result.json")  # whole or not at all
    return out


def plot_results(run: RunResult, path: Path) -> None:
    """Two panels: the test metric per round from round 0 (the initial model), with FedAvg on the
    same replies and the oracle as references where known; and each participant's aggregation
    weight in the final round as a bar (unreliable ones red and hatched; whiskers: the range over
    all rounds; a tick: its FedAvg share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.settings
    metric = main_metric(s["task"])
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    start = [(0, run.initial_metrics[metric])] if metric in run.initial_metrics else []
    points = start + [(r["round"], r["metrics"].get(metric, float("nan"))) for r in run.rounds]
    curve.plot(*zip(*points, strict=True), marker="o", markersize=3, label=f"this run ({s['strategy']}, {s['protocol']} protocol)")
    fedavg = [(r["round"], r["fedavg_metrics"][metric]) for r in run.rounds if metric in r.get("fedavg_metrics", {})]
    if fedavg:
        curve.plot(*zip(*(start + fedavg), strict=True), linestyle="--", color="tab:gray", label="FedAvg on the same replies")
    if metric in run.reference:
        curve.axhline(run.reference[metric], color="black", linestyle=":", label="oracle: non-private, reliable records pooled")
    curve.set_xlabel("round (0 = the initial model)")
    curve.set_ylabel(f"test {metric}")
    curve.set_title(f"{s['dataset']}, {len(run.participants)} participants, epsilon = {s['epsilon']:g} each", fontsize=10)
    curve.legend(fontsize=8)
    _weight_bars(bars, run)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MAX_LABELLED = 40
"""Participants named under their bar in ``summary.png``; beyond, only the bars' colours tell them apart."""


def _weight_bars(ax: Any, run: RunResult) -> None:
    rows = sorted(run.participants, key=lambda p: (p["partition_id"], p["node_id"]))
    series = {p["node_id"]: [r["weights"][p["node_id"]] for r in run.rounds if p["node_id"] in r["weights"]] for p in rows}
    rows = [p for p in rows if series[p["node_id"]]]
    if not rows:
        ax.text(0.5, 0.5, f"no per-participant weights\nfor strategy {run.settings['strategy']!r}", ha="center", va="center")
        ax.set_axis_off()
        return
    xs = np.arange(len(rows))
    final = np.array([series[p["node_id"]][-1] for p in rows])
    low = np.array([min(series[p["node_id"]]) for p in rows])
    high = np.array([max(series[p["node_id"]]) for p in rows])
    bad = np.array([bool(p["unreliable"]) for p in rows])
    for flag, colour, hatch, label in ((False, "tab:blue", "", "honest"), (True, "tab:red", "//", "unreliable (ground truth)")):
        sel = bad == flag
        if sel.any():
            ax.bar(xs[sel], final[sel], color=colour, hatch=hatch, edgecolor="black", linewidth=0.5, label=label)
    ax.errorbar(xs, final, yerr=[final - low, high - final], fmt="none", ecolor="black", capsize=2, linewidth=0.8)
    shares = [p.get("fedavg_share") for p in rows]
    if all(isinstance(v, float) for v in shares):
        ax.scatter(xs, shares, marker="_", s=300, color="black", label="FedAvg's share")
    if len(rows) <= MAX_LABELLED:
        ax.set_xticks(xs, [f"p{p['partition_id']}{'*' if p['unreliable'] else ''}" for p in rows], fontsize=7,
                      rotation=90 if len(rows) > 20 else 0)
        for tick, flag in zip(ax.get_xticklabels(), bad, strict=True):
            tick.set_color("tab:red" if flag else "black")
    else:
        ax.set_xlabel(f"{len(rows)} participants, in partition order")
    ax.set_ylabel("aggregation weight, final round")
    steady = bool(np.all(high - low <= 1e-3))
    ax.set_title("weights per participant" + (" (unchanged after round 1)" if steady and len(run.rounds) > 1
                                              else " (whiskers: range over the rounds)"), fontsize=10)
    ax.legend(fontsize=7)


def fmt_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()))


def fmt_weights(weights: dict[str, float], node_partition: dict[str, int], unreliable: set[int]) -> str:
    if not weights:
        return "(n/a)"
    parts = []
    for node, w in sorted(weights.items(), key=lambda kv: node_partition.get(kv[0], 0)):
        pid = node_partition.get(node)
        tag = f"p{pid}" if pid is not None else node
        parts.append(f"{tag}{'*' if pid in unreliable else ''}={w:.3f}")
    return " ".join(parts) + "  (* = unreliable, ground truth)"
