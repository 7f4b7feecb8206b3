"""The ServerApp of the Flower App (``flwr run .``): strategy, server-side evaluation, results.

``run_server`` is runtime-agnostic (any Flower ``Grid``): the ServerApp below calls it with the
simulation or deployment runtime's grid, the Hydra sweep and tests with an in-process grid
(:mod:`.grid`). It takes a strategy (or a wrapper around one) so benchmarks and users can swap the
aggregation without patching anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any, cast

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from flwr_ppcdl.app.experiment import evaluate_model, make_model, reference_metrics, server_splits
from flwr_ppcdl.app.factory import make_strategy
from flwr_ppcdl.app.recording import RecordingStrategy
from flwr_ppcdl.app.report import (
    RunResult,
    fmt_metrics,
    fmt_weights,
    participant_rows,
    save_results,
)
from flwr_ppcdl.app.settings import RunSettings, epsilon_meaning

log = logging.getLogger("flwr")


def run_server(
    grid: Grid, settings: RunSettings, *, strategy: Strategy | None = None, timeout: float | None = None
) -> RunResult:
    """Run the experiment on ``grid``; print progress; write results to ``settings.result_dir``.

    ``strategy`` defaults to :func:`~flwr_ppcdl.app.factory.make_strategy` for ``settings``.
    """
    started = time.perf_counter()
    test, validation = server_splits(settings)
    model = make_model(settings)
    unreliable = set(settings.unreliable_ids)
    recorder = RecordingStrategy(strategy if strategy is not None else make_strategy(settings, validation))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate_model(model, test, settings)
        if server_round == 0:
            log.info("[ppcdl] initial model: %s", fmt_metrics(metrics))
            return MetricRecord(cast(dict[str, Any], metrics))
        record = recorder.record_evaluation(server_round, metrics)
        log.info(
            "[ppcdl] round %d/%d  %s  %.2fs  failures=%d  weights: %s",
            server_round, settings.num_rounds, fmt_metrics(metrics), record.seconds, record.failures,
            fmt_weights(record.weights, recorder.node_partition, unreliable),
        )
        return MetricRecord(cast(dict[str, Any], metrics))

    log.info(
        "[ppcdl] %s on %s: %d participants (unreliable, %s: %s), %d rounds, strategy=%s; %s",
        settings.task, settings.dataset, settings.num_partitions, settings.unreliable_kind,
        sorted(unreliable), settings.num_rounds, settings.strategy, epsilon_meaning(settings),
    )
    result = recorder.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout if timeout is None else timeout,
        evaluate_fn=evaluate_fn,
    )
    reference = reference_metrics(settings)
    rounds = [asdict(recorder.rounds[r]) for r in sorted(recorder.rounds)]
    participants = participant_rows(recorder, unreliable)
    final = _floats(result.evaluate_metrics_serverapp.get(settings.num_rounds))
    excluded = [
        {"round": report.round, "node_id": str(node), "reason": reason}
        for report in getattr(recorder.inner, "reliability_history", None) or []
        for node, reason in report.excluded.items()
    ]
    undecidable = [
        {"round": report.round, "reason": report.undecidable}
        for report in getattr(recorder.inner, "reliability_history", None) or []
        if getattr(report, "undecidable", None)
    ]
    if undecidable:
        log.warning("[ppcdl] reliability could not decide in %d round(s): %s", len(undecidable), undecidable[-1]["reason"])
    run = RunResult(
        settings=asdict(settings),
        rounds=rounds,
        initial_metrics=_floats(result.evaluate_metrics_serverapp.get(0)),
        final_metrics=final,
        reference=reference,
        participants=participants,
        epsilon_meaning=epsilon_meaning(settings),
        seconds=time.perf_counter() - started,
        failures=sum(r["failures"] for r in rounds),
        excluded=excluded,
        undecidable=undecidable,
    )
    out = save_results(run, settings)
    metric = settings.metric
    ratio = final.get(metric, float("nan")) / reference[metric] if reference.get(metric) else float("nan")
    log.info(
        "[ppcdl] done in %.1fs: final %s | non-private centralised reference on the same features "
        "(reliable records): %s | ratio %s = %.2f | max epsilon spent per participant = %s | results: %s",
        run.seconds, fmt_metrics(run.final_metrics), fmt_metrics(reference), metric, ratio,
        max((p["epsilon"] for p in participants), default=0.0), out,
    )
    return run


def _floats(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: settings come from ``[tool.flwr.app.config]``."""
    run_server(grid, RunSettings.from_config(dict(context.run_config)))
