"""The ServerApp of the Flower App (``flwr run .``): strategy, server-side evaluation, results.

``run_server`` is runtime-agnostic (any Flower ``Grid``): the ServerApp below calls it with the
simulation or deployment runtime's grid, the Hydra sweep and tests with an in-process grid
(:mod:`.grid`). It takes a strategy (or a wrapper around one) so benchmarks and users can swap the
aggregation without patching anything.

What the server reads: its own test split (and, for ``reliability-method = server-data``, a
validation part of it) and the participants' replies. Never their records: the non-private
reference a report shows next to the result is computed afterwards, outside the App
(:mod:`.oracle`).

The ServerApp takes ``result-dir`` from a run config that whoever submits the run controls: it is
confined to the results base (:func:`~flwr_ppcdl.app.checks.result_path`) before anything is
written. A new run first removes the previous run's files there
(:data:`~flwr_ppcdl.app.report.OUTPUT_FILES`); a run that cannot work stops with an error naming the
cause and the fix (a bad run config, a missing data set, too few SuperNodes, no successful reply in
the first round) and writes it to ``<result-dir>/error.txt``; ``result.json`` is written only by a
run that finished.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from flwr_ppcdl.app.checks import check_data_available, result_path
from flwr_ppcdl.app.console import LOG, SUMMARY, muted, verbosity
from flwr_ppcdl.app.experiment import evaluate_model, make_model, server_splits
from flwr_ppcdl.app.factory import make_strategy
from flwr_ppcdl.app.recording import RecordingStrategy
from flwr_ppcdl.app.report import (
    RunResult,
    clear_outputs,
    code_version,
    fmt_metrics,
    fmt_weights,
    participant_rows,
    privacy_spent,
    save_results,
)
from flwr_ppcdl.app.settings import (
    DEFAULT_PARTITIONS,
    RunSettings,
    epsilon_meaning,
    privacy_warnings,
)

ERROR_FILE = "error.txt"
NODE_STALL_SECONDS = 5.0
"""Give up waiting for SuperNodes when none has connected for this long (simulation: at once)."""
NODE_WAIT_SECONDS = 60.0
"""Never wait longer than this for the SuperNodes a run needs."""
NODE_SETTLE_SECONDS = 1.0
"""``num-partitions = 0``: the federation is complete once no node has joined for this long."""


class RunFailed(RuntimeError):
    """The run cannot produce a meaningful result (the message says why and what to do)."""


def run_server(
    grid: Grid,
    settings: RunSettings,
    *,
    strategy: Strategy | None = None,
    timeout: float | None = None,
    result_dir: Path | None = None,
) -> RunResult:
    """Run the experiment on ``grid``; print progress; write the results.

    ``strategy`` defaults to :func:`~flwr_ppcdl.app.factory.make_strategy` for ``settings`` (and
    then FedAvg of the same replies is evaluated beside it each round). The results go to
    ``result_dir``, by default ``settings.result_dir`` taken as the caller's own choice (an absolute
    path as given, a relative one under the results base; the ServerApp passes the confined path).
    The previous run's files there are removed first. ``num-partitions = 0`` becomes the number of
    connected SuperNodes. Raises :class:`RunFailed` (after writing ``error.txt``) when the run
    cannot work.
    """
    out = result_dir if result_dir is not None else result_path(settings.result_dir, confine=False)
    clear_outputs(out)  # the folder holds only what this run writes
    with verbosity(settings.verbosity):
        try:
            check_data_available(settings)
            return _run(grid, settings, strategy, timeout, out)
        except BaseException as err:
            write_error(out, err)
            raise


def write_error(result_dir: Path, err: BaseException) -> Path:
    """Write ``error.txt`` (the reason first, then the traceback) into ``result_dir``."""
    result_dir.mkdir(parents=True, exist_ok=True)
    path = result_dir / ERROR_FILE
    reason = f"{type(err).__name__}: {err}"
    path.write_text(reason + "\n\n" + "".join(traceback.format_exception(err)))
    LOG.error("[ppcdl] run failed: %s (written to %s)", reason, path)
    return path


def wait_for_nodes(grid: Grid, settings: RunSettings) -> int:
    """Wait until the SuperNodes this run needs are connected; :class:`RunFailed` with the fix otherwise.

    Needed: ``min-nodes``, else every partition (one participant per SuperNode), else (``num-partitions
    = 0``) at least one, and then every node that joins until none has for
    :data:`NODE_SETTLE_SECONDS`. Gives up when no new node has connected for
    :data:`NODE_STALL_SECONDS` (a simulation has all its nodes at once) or after
    :data:`NODE_WAIT_SECONDS`.
    """
    needed = settings.min_nodes or settings.num_partitions or 1
    started = last_change = time.monotonic()
    count = len(list(grid.get_node_ids()))
    while count < needed or (not settings.num_partitions and time.monotonic() - last_change < NODE_SETTLE_SECONDS):
        now = time.monotonic()
        if count < needed and (now - last_change > NODE_STALL_SECONDS or now - started > NODE_WAIT_SECONDS):
            raise RunFailed(_too_few_nodes(settings, needed, count))
        time.sleep(0.2)
        new = len(list(grid.get_node_ids()))
        if new != count:
            count, last_change = new, time.monotonic()
    return count


def _too_few_nodes(settings: RunSettings, needed: int, count: int) -> str:
    pinned = settings.num_partitions
    return (
        f"this run needs {needed} SuperNodes (num-partitions={pinned}"
        f"{f', min-nodes={settings.min_nodes}' if settings.min_nodes else ''}: one participant per "
        f"SuperNode) but {count} are connected. Flower's local simulation starts 2 SuperNodes unless "
        f"told otherwise. Type one of:\n"
        f"    bash scripts/run.sh                      (sets the SuperNodes for you)\n"
        f"    flwr run . --federation-config \"num-supernodes={pinned or needed}\"\n"
        f"    flwr run . --run-config \"num-partitions=0\"   (one participant per SuperNode: {count})\n"
        f"In a deployment, start {needed - count} more flower-supernode(s) "
        f"(--node-config \"partition-id=i num-partitions={pinned or needed}\")."
    )


def _run(grid: Grid, settings: RunSettings, strategy: Strategy | None, timeout: float | None, out: Path) -> RunResult:
    started = time.perf_counter()
    connected = wait_for_nodes(grid, settings)
    from_federation = not settings.num_partitions
    settings = settings.with_partitions(connected)
    LOG.info(
        "[ppcdl] %s on %s: %d participants%s (unreliable, %s: %s), %d rounds, strategy=%s, protocol=%s; %s",
        settings.task, settings.dataset, settings.num_partitions,
        (" (one per SuperNode" + (f"; the default job has {DEFAULT_PARTITIONS}: flwr run . --federation-config "
                                  f"\"num-supernodes={DEFAULT_PARTITIONS}\")" if connected < DEFAULT_PARTITIONS else ")"))
        if from_federation else "",
        settings.unreliable_kind, sorted(settings.unreliable_ids), settings.num_rounds, settings.strategy,
        settings.protocol + (" (participants also share their releases)"
                             if settings.protocol == "parameters" and settings.shares_release else ""),
        epsilon_meaning(settings),
    )
    test, validation = server_splits(settings)
    model = make_model(settings)
    unreliable = set(settings.unreliable_ids)
    fedavg = None
    if strategy is None and settings.strategy != "fedavg":  # FedAvg of the same replies, for comparison
        from dataclasses import replace

        with muted():  # its construction warnings are the run's strategy's too
            fedavg = make_strategy(replace(settings, strategy="fedavg"), validation)
    recorder = RecordingStrategy(strategy if strategy is not None else make_strategy(settings, validation), fedavg)
    stalled: list[int] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate_model(model, test, settings)
        if server_round == 0:
            LOG.info("[ppcdl] round 0 (the initial model): %s", fmt_metrics(metrics))
            return MetricRecord(cast(dict[str, Any], metrics))
        record = recorder.record_evaluation(server_round, metrics)
        if server_round in recorder.fedavg_arrays:
            model.load_state_dict(recorder.fedavg_arrays.pop(server_round).to_torch_state_dict())
            record.fedavg_metrics = evaluate_model(model, test, settings)
        if record.successes == 0:
            _no_successful_reply(server_round, record.replies, record.errors, stalled)
        LOG.info(
            "[ppcdl] round %d/%d  %s%s  %.2fs  failures=%d  weights: %s",
            server_round, settings.num_rounds, fmt_metrics(metrics),
            f" (FedAvg, same replies: {settings.metric}={record.fedavg_metrics[settings.metric]:.4f})"
            if settings.metric in record.fedavg_metrics else "",
            record.seconds, record.failures, fmt_weights(record.weights, recorder.node_partition, unreliable),
        )
        return MetricRecord(cast(dict[str, Any], metrics))

    result = recorder.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout if timeout is None else timeout,
        evaluate_fn=evaluate_fn,
    )
    rounds = [asdict(recorder.rounds[r]) for r in sorted(recorder.rounds)]
    participants = participant_rows(recorder, unreliable)
    history = getattr(recorder.inner, "reliability_history", None) or []
    excluded = [
        {"round": report.round, "node_id": str(node), "reason": reason}
        for report in history
        for node, reason in report.excluded.items()
    ]
    undecidable = [
        {"round": report.round, "reason": report.undecidable} for report in history if getattr(report, "undecidable", None)
    ]
    overruled = [{"round": report.round, "node_id": str(node)} for report in history for node in getattr(report, "overruled", [])]
    if undecidable:
        LOG.warning("[ppcdl] reliability could not decide in %d round(s): %s", len(undecidable), undecidable[-1]["reason"])
    run = RunResult(
        settings=asdict(settings),
        rounds=rounds,
        initial_metrics=_floats(result.evaluate_metrics_serverapp.get(0)),
        final_metrics=_floats(result.evaluate_metrics_serverapp.get(settings.num_rounds)),
        participants=participants,
        epsilon_meaning=epsilon_meaning(settings),
        seconds=time.perf_counter() - started,
        failures=sum(r["failures"] for r in rounds),
        excluded=excluded,
        rounds_without_update=stalled,
        not_private=privacy_warnings(settings),
        undecidable=undecidable,
        overruled=overruled,
        privacy_spent=privacy_spent(participants, settings),
        fedavg_final_metrics=dict(rounds[-1]["fedavg_metrics"]) if rounds else {},
        versions=code_version(),
    )
    save_results(run, out, plot=settings.plot)
    fedavg_final = run.fedavg_final_metrics.get(settings.metric)
    LOG.info(
        "[ppcdl] finished in %.1fs: final %s%s | spent per participant (max): %s",
        run.seconds, fmt_metrics(run.final_metrics),
        f" (FedAvg on the same replies: {settings.metric}={fedavg_final:.4f})" if fedavg_final is not None else "",
        run.privacy_spent["text"], extra=SUMMARY,
    )
    LOG.info("[ppcdl] results: %s", out, extra=SUMMARY)
    return run


def _no_successful_reply(server_round: int, replies: int, errors: list[str], stalled: list[int]) -> None:
    """Round ``server_round`` got no reply with content: fail at once if nothing has worked yet."""
    stalled.append(server_round)
    what = f"{replies} replies, all errors" if replies else "no reply within round-timeout"
    detail = f"; first errors: {' | '.join(errors)}" if errors else ""
    if len(stalled) == server_round:  # every round so far: a configuration problem, not a dropout
        raise RunFailed(f"round {server_round}: no participant replied successfully ({what}){detail}")
    LOG.warning("[ppcdl] round %d: no participant replied successfully (%s)%s; the model is unchanged",
                server_round, what, detail)


def _floats(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: settings come from ``[tool.flwr.app.config]``.

    ``result-dir`` is confined to the results base first (nothing is written anywhere else, also
    for an otherwise invalid run config); a bad run config then fails with the key and the value
    named, written to ``error.txt`` too.
    """
    config = dict(context.run_config)
    try:
        out = result_path(str(config.get("result-dir", RunSettings.result_dir)), confine=True)
    except ValueError as err:
        LOG.error("[ppcdl] run refused: %s", err)
        raise
    try:
        settings = RunSettings.from_config(config)
    except ValueError as err:
        clear_outputs(out)
        write_error(out, err)
        raise
    run_server(grid, settings, result_dir=out)
