"""The ServerApp of the Flower App (``flwr run .``): strategy, server-side evaluation, results.

``run_server`` is runtime-agnostic (any Flower ``Grid``): the ServerApp below calls it with the
simulation or deployment runtime's grid, the Hydra sweep and tests with an in-process grid.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, MultiKrum, Strategy

from flwr_ppcdl.data import Dataset
from flwr_ppcdl.task import (
    RunSettings,
    epsilon_meaning,
    evaluate_model,
    make_model,
    reference_metrics,
    server_loss_fn,
    server_splits,
)

log = logging.getLogger("flwr")


def make_strategy(settings: RunSettings, validation: Dataset | None = None) -> Strategy:
    """The configured aggregation rule (all Message-API strategies; evaluation is server-side).

    ``validation`` (server-held records) is required by ``reliability-method = server-data``.
    """
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_available_nodes": settings.min_nodes or settings.num_partitions,
        "min_train_nodes": settings.min_nodes or settings.num_partitions,
    }
    if settings.protocol == "statistics":
        from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

        # default estimator options: measured better here than the tuned parameter-protocol ones
        return SummedStatisticsFedAvg(reliability=settings.strategy == "reliability", **common)
    if settings.strategy == "reliability":
        from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

        if settings.reliability_method == "server-data":
            if validation is None:
                raise ValueError("reliability-method 'server-data' needs the server's validation records")
            return ReliabilityWeightedFedAvg(method="server_data", server_loss_fn=server_loss_fn(settings, validation), **common)
        # alignment off: near the aggregation's fixed point every delta is anti-aligned with the
        # leave-one-out mean, and the gate makes the weights oscillate (benchmarks/default_job_tuning.py)
        return ReliabilityWeightedFedAvg(alignment=False, sharpness=4.0, tolerance=1.0, **common)
    if settings.strategy == "fedavg":
        return FedAvg(**common)
    if settings.strategy == "fedmedian":
        return FedMedian(**common)
    if settings.strategy == "fedtrimmedavg":
        return FedTrimmedAvg(beta=settings.trimmed_beta, **common)
    # MultiKrum is told the true number of unreliable participants: its best case.
    bad = len(settings.unreliable_ids)
    return MultiKrum(num_malicious_nodes=bad, num_nodes_to_select=max(1, settings.num_partitions - bad), **common)


@dataclass
class RoundRecord:
    """What the server saw in one round (public: replies' metadata and its own evaluation)."""

    round: int
    metrics: dict[str, float]
    seconds: float
    replies: int = 0
    failures: int = 0
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> reply metrics
    weights: dict[str, float] = field(default_factory=dict)  # node id -> aggregation weight


class RecordingStrategy(Strategy):
    """Wraps a strategy and records every round's replies (as Flower's DP wrappers wrap).

    It forwards configuration and aggregation unchanged; it only reads reply metadata and
    metrics (node id, partition id, ``fm-epsilon``, ``num-examples``).
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.rounds: dict[int, RoundRecord] = {}
        self.round_started = time.perf_counter()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.round_started = time.perf_counter()
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord(server_round, {}, 0.0))
        record.replies = len(replies)
        record.failures = sum(1 for m in replies if m.has_error())
        for msg in replies:
            if msg.has_error():
                continue
            node = str(msg.metadata.src_node_id)
            try:
                metrics = msg.content["metrics"]
                record.nodes[node] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            except (KeyError, TypeError, ValueError):
                record.nodes[node] = {}
        result = self.inner.aggregate_train(server_round, replies)
        record.weights = self._weights(server_round, record)
        return result

    def _weights(self, server_round: int, record: RoundRecord) -> dict[str, float]:
        history = getattr(self.inner, "reliability_history", None)
        if history:
            last = history[-1]
            weights = last.get("weights", last) if isinstance(last, dict) else getattr(last, "weights", {})
            return {str(k): float(v) for k, v in dict(weights).items()}
        if type(self.inner) is FedAvg:  # plain FedAvg: weights are the sample shares
            total = sum(m.get("num-examples", 0.0) for m in record.nodes.values())
            return {k: m.get("num-examples", 0.0) / total for k, m in record.nodes.items()} if total else {}
        return {}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


@dataclass
class RunResult:
    """Everything a run reports, saved as ``result.json`` (+ CSVs and a PNG) in ``result-dir``."""

    settings: dict[str, Any]
    rounds: list[dict[str, Any]]
    initial_metrics: dict[str, float]
    final_metrics: dict[str, float]
    reference: dict[str, float]
    participants: list[dict[str, Any]]
    epsilon_meaning: str
    seconds: float
    failures: int
    excluded: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_server(grid: Grid, settings: RunSettings, *, timeout: float | None = None) -> RunResult:
    """Run the experiment on ``grid``; print progress; write results to ``settings.result_dir``."""
    started = time.perf_counter()
    test, validation = server_splits(settings)
    model = make_model(settings)
    unreliable = set(settings.unreliable_ids)
    strategy = RecordingStrategy(make_strategy(settings, validation))
    main_metric = "r2" if settings.task == "regression" else "accuracy"
    node_partition: dict[str, int] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate_model(model, test, settings)
        if server_round == 0:
            log.info("[ppcdl] initial model: %s", _fmt(metrics))
            return _metric_record(metrics)
        record = strategy.rounds.setdefault(server_round, RoundRecord(server_round, {}, 0.0))
        record.metrics = metrics
        record.seconds = time.perf_counter() - strategy.round_started
        for node, m in record.nodes.items():
            if "partition-id" in m:
                node_partition[node] = int(m["partition-id"])
        log.info(
            "[ppcdl] round %d/%d  %s  %.2fs  failures=%d  weights: %s",
            server_round, settings.num_rounds, _fmt(metrics), record.seconds, record.failures,
            _fmt_weights(record.weights, node_partition, unreliable),
        )
        return _metric_record(metrics)

    log.info(
        "[ppcdl] %s on %s: %d participants (unreliable, %s: %s), %d rounds, strategy=%s; %s",
        settings.task, settings.dataset, settings.num_partitions, settings.unreliable_kind,
        sorted(unreliable), settings.num_rounds, settings.strategy, epsilon_meaning(settings),
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout if timeout is None else timeout,
        evaluate_fn=evaluate_fn,
    )
    reference = reference_metrics(settings)
    rounds = [asdict(strategy.rounds[r]) for r in sorted(strategy.rounds)]
    participants = _participants(strategy, node_partition, unreliable, settings)
    final = _floats(result.evaluate_metrics_serverapp.get(settings.num_rounds))
    initial = _floats(result.evaluate_metrics_serverapp.get(0))
    excluded = [
        {"round": entry.get("round"), "node_id": str(node), "reason": reason}
        for entry in getattr(strategy.inner, "reliability_history", []) or []
        for node, reason in dict(entry.get("excluded", {})).items()
    ]
    run = RunResult(
        settings=asdict(settings),
        rounds=rounds,
        initial_metrics=initial,
        final_metrics=final,
        reference=reference,
        participants=participants,
        epsilon_meaning=epsilon_meaning(settings),
        seconds=time.perf_counter() - started,
        failures=sum(r["failures"] for r in rounds),
        excluded=excluded,
    )
    out = save_results(run, settings)
    ratio = final.get(main_metric, float("nan")) / reference[main_metric] if reference.get(main_metric) else float("nan")
    log.info(
        "[ppcdl] done in %.1fs: final %s | non-private centralised reference on the same features "
        "(reliable records): %s | ratio %s = %.2f | max epsilon spent per participant = %s | results: %s",
        run.seconds, _fmt(run.final_metrics), _fmt(reference), main_metric, ratio,
        max((p["epsilon"] for p in participants), default=0.0), out,
    )
    return run


def _metric_record(metrics: dict[str, float]) -> MetricRecord:
    return MetricRecord(cast(dict[str, Any], metrics))


def _floats(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def _participants(strategy: RecordingStrategy, node_partition: dict[str, int], unreliable: set[int], settings: RunSettings) -> list[dict[str, Any]]:
    """One row per node that replied: its partition, ground-truth flag, epsilon, first/last round.

    A node whose last reply came before the final round dropped out; a node that first replied
    after round 1 (e.g. a restarted SuperNode under a new node id) joined late, it did not drop.
    """
    final_round = max(strategy.rounds, default=0)
    rows = []
    for node, pid in sorted(node_partition.items(), key=lambda kv: (kv[1], kv[0])):
        seen = sorted(r.round for r in strategy.rounds.values() if node in r.nodes)
        eps = max((strategy.rounds[r].nodes[node].get("fm-epsilon", 0.0) for r in seen), default=0.0)
        last = seen[-1] if seen else 0
        rows.append({
            "node_id": node,
            "partition_id": pid,
            "unreliable": pid in unreliable,  # ground truth, for evaluation only
            "epsilon": eps,
            "rounds_participated": len(seen),
            "first_round": seen[0] if seen else None,
            "last_round": last,
            "dropped_after_round": last if last < final_round else None,
        })
    return rows


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

    task = run.settings["task"]
    metric = "r2" if task == "regression" else "accuracy"
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


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()))


def _fmt_weights(weights: dict[str, float], node_partition: dict[str, int], unreliable: set[int]) -> str:
    if not weights:
        return "(n/a)"
    parts = []
    for node, w in sorted(weights.items(), key=lambda kv: node_partition.get(kv[0], 0)):
        pid = node_partition.get(node)
        tag = f"p{pid}" if pid is not None else node
        parts.append(f"{tag}{'*' if pid in unreliable else ''}={w:.3f}")
    return " ".join(parts) + "  (* = unreliable, ground truth)"


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: settings come from ``[tool.flwr.app.config]``."""
    config = dict(context.run_config)
    settings = RunSettings.from_config(config)
    run_server(grid, settings)
