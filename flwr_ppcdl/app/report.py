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
    privacy_spent: dict[str, Any] = field(default_factory=dict)  # the largest (epsilon, delta) spent, with its meaning

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


def save_results(run: RunResult, settings: RunSettings) -> Path:
    """Write ``result.json``, ``rounds.csv``, ``weights.csv`` and ``summary.png``."""
    out = Path(settings.result_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(run.to_json())
    metric_names = sorted({k for r in run.rounds for k in r["metrics"]})
    lines = ["round,seconds,replies,failures," + ",".join(metric_names)]
    for r in run.rounds:
        lines.append(",".join([str(r["round"]), f"{r['seconds']:.4f}", str(r["replies"]), str(r["failures"])]
                              + [f"{r['metrics'].get(m, float('nan')):.6g}" for m in metric_names]))
    (out / "rounds.csv").write_text("\n".join(lines) + "\n")
    flags = {p["node_id"]: p for p in run.participants}
    lines = ["round,node_id,partition_id,unreliable,weight"]
    for r in run.rounds:
        for node, w in sorted(r["weights"].items()):
            p = flags.get(node, {})
            lines.append(f"{r['round']},{node},{p.get('partition_id', '')},{p.get('unreliable', '')},{w:.6g}")
    (out / "weights.csv").write_text("\n".join(lines) + "\n")
    if settings.plot:
        plot_results(run, out / "summary.png")
    return out


def plot_results(run: RunResult, path: Path) -> None:
    """Metric per round, and aggregation weight per node per round (unreliable nodes dashed red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = main_metric(run.settings["task"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    xs = [r["round"] for r in run.rounds]
    axes[0].plot(xs, [r["metrics"].get(metric, float("nan")) for r in run.rounds], marker="o", label=run.settings["strategy"])
    if metric in run.reference:
        axes[0].axhline(run.reference[metric], color="gray", linestyle=":", label="non-private centralised (reliable data)")
    axes[0].set_xlabel("round")
    axes[0].set_ylabel(f"test {metric}")
    axes[0].set_title(f"{run.settings['dataset']}, epsilon={run.settings['epsilon']}")
    axes[0].legend(fontsize=8)
    flags = {p["node_id"]: p for p in run.participants}
    nodes = sorted({n for r in run.rounds for n in r["weights"]}, key=lambda n: flags.get(n, {}).get("partition_id", 0))
    for node in nodes:
        p = flags.get(node, {})
        bad = bool(p.get("unreliable"))
        axes[1].plot(
            xs, [r["weights"].get(node, float("nan")) for r in run.rounds],
            linestyle="--" if bad else "-", color="tab:red" if bad else None,
            label=f"p{p.get('partition_id', '?')}{' (unreliable)' if bad else ''}",
        )
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("aggregation weight")
    axes[1].set_title("weights per participant" if nodes else "no per-node weights for this strategy")
    if nodes:
        axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
