"""The ServerApp of the Flower App (``flwr run .``): strategy, server-side evaluation, results.

``run_server`` is runtime-agnostic (any Flower ``Grid``): the ServerApp below calls it with the
simulation or deployment runtime's grid, the Hydra sweep and tests with an in-process grid
(:mod:`.grid`). It takes a strategy (or a wrapper around one) so benchmarks and users can swap the
aggregation without patching anything.

What the server reads: its own test split (and, for ``reliability-method = server-data``, a
validation part of it) and the participants' replies. Never their records: the non-private
reference a report shows next to the result is computed afterwards, outside the App
(:mod:`.oracle`).

A run that cannot work stops with an error naming the cause (too few SuperNodes, no successful
reply in the first round) and writes it to
``<result-dir>/error.txt``; ``result.json`` is written only by a run that finished.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from flwr_ppcdl.app.experiment import evaluate_model, make_model, server_splits
from flwr_ppcdl.app.factory import make_strategy
from flwr_ppcdl.app.recording import RecordingStrategy
from flwr_ppcdl.app.report import (
    RunResult,
    fmt_metrics,
    fmt_weights,
    participant_rows,
    privacy_spent,
    save_results,
)
from flwr_ppcdl.app.settings import RunSettings, epsilon_meaning, privacy_warnings

log = logging.getLogger("flwr")

ERROR_FILE = "error.txt"
RESULT_FILE = "result.json"
NODE_STALL_SECONDS = 5.0
"""Give up waiting for SuperNodes when none has connected for this long (simulation: at once)."""
NODE_WAIT_SECONDS = 60.0
"""Never wait longer than this for the SuperNodes a run needs."""


class RunFailed(RuntimeError):
    """The run cannot produce a meaningful result (the message says why and what to do)."""


def run_server(
    grid: Grid, settings: RunSettings, *, strategy: Strategy | None = None, timeout: float | None = None
) -> RunResult:
    """Run the experiment on ``grid``; print progress; write results to ``settings.result_dir``.

    ``strategy`` defaults to :func:`~flwr_ppcdl.app.factory.make_strategy` for ``settings``.
    Raises :class:`RunFailed` (after writing ``error.txt``) when the run cannot work.
    """
    out = Path(settings.result_dir).expanduser().resolve()
    for name in (RESULT_FILE, ERROR_FILE):  # a failed run must never leave an older success behind
        (out / name).unlink(missing_ok=True)
    try:
        return _run(grid, settings, strategy, timeout)
    except BaseException as err:
        write_error(out, err)
        raise


def write_error(result_dir: Path, err: BaseException) -> Path:
    """Write ``error.txt`` (the reason first, then the traceback) into ``result_dir``."""
    result_dir.mkdir(parents=True, exist_ok=True)
    path = result_dir / ERROR_FILE
    reason = f"{type(err).__name__}: {err}"
    path.write_text(reason + "\n\n" + "".join(traceback.format_exception(err)))
    log.error("[ppcdl] run failed: %s (written to %s)", reason, path)
    return path


def wait_for_nodes(grid: Grid, settings: RunSettings) -> int:
    """Wait until the SuperNodes this run needs are connected; :class:`RunFailed` with the fix otherwise.

    Needed: ``min-nodes`` (or every partition, one participant per SuperNode). Gives up when no new
    node has connected for :data:`NODE_STALL_SECONDS` (a simulation has all its nodes at once) or
    after :data:`NODE_WAIT_SECONDS`.
    """
    needed = settings.min_nodes or settings.num_partitions
    started = last_change = time.monotonic()
    count = len(list(grid.get_node_ids()))
    while count < needed:
        now = time.monotonic()
        if now - last_change > NODE_STALL_SECONDS or now - started > NODE_WAIT_SECONDS:
            raise RunFailed(
                f"this run needs {needed} SuperNodes (num-partitions={settings.num_partitions}"
                f"{f', min-nodes={settings.min_nodes}' if settings.min_nodes else ''}: one participant per "
                f"SuperNode) but {count} are connected. Flower's local simulation starts 2 SuperNodes unless "
                f"told otherwise. Type one of:\n"
                f"    bash scripts/run.sh                      (sets the SuperNodes for you)\n"
                f"    flwr run . --federation-config \"num-supernodes={settings.num_partitions}\"\n"
                f"    flwr run . --run-config \"num-partitions={count}\"   (a {count}-participant experiment)\n"
                f"In a deployment, start {needed - count} more flower-supernode(s) "
                f"(--node-config \"partition-id=i num-partitions={settings.num_partitions}\")."
            )
        time.sleep(0.2)
        new = len(list(grid.get_node_ids()))
        if new != count:
            count, last_change = new, time.monotonic()
    return count


def _run(grid: Grid, settings: RunSettings, strategy: Strategy | None, timeout: float | None) -> RunResult:
    started = time.perf_counter()
    log.info(
        "[ppcdl] %s on %s: %d participants (unreliable, %s: %s), %d rounds, strategy=%s, protocol=%s; %s",
        settings.task, settings.dataset, settings.num_partitions, settings.unreliable_kind,
        sorted(settings.unreliable_ids), settings.num_rounds, settings.strategy,
        settings.protocol + (" (participants also share their releases)"
                             if settings.protocol == "parameters" and settings.shares_release else ""),
        epsilon_meaning(settings),
    )
    connected = wait_for_nodes(grid, settings)
    log.info("[ppcdl] %d SuperNodes connected", connected)
    test, validation = server_splits(settings)
    model = make_model(settings)
    unreliable = set(settings.unreliable_ids)
    recorder = RecordingStrategy(strategy if strategy is not None else make_strategy(settings, validation))
    stalled: list[int] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate_model(model, test, settings)
        if server_round == 0:
            log.info("[ppcdl] initial model: %s", fmt_metrics(metrics))
            return MetricRecord(cast(dict[str, Any], metrics))
        record = recorder.record_evaluation(server_round, metrics)
        if record.successes == 0:
            _no_successful_reply(server_round, record.replies, record.errors, stalled)
        log.info(
            "[ppcdl] round %d/%d  %s  %.2fs  failures=%d  weights: %s",
            server_round, settings.num_rounds, fmt_metrics(metrics), record.seconds, record.failures,
            fmt_weights(record.weights, recorder.node_partition, unreliable),
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
        final_metrics=_floats(result.evaluate_metrics_serverapp.get(settings.num_rounds)),
        participants=participants,
        epsilon_meaning=epsilon_meaning(settings),
        seconds=time.perf_counter() - started,
        failures=sum(r["failures"] for r in rounds),
        excluded=excluded,
        rounds_without_update=stalled,
        not_private=privacy_warnings(settings),
        undecidable=undecidable,
        privacy_spent=privacy_spent(participants, settings),
    )
    out = save_results(run, settings)
    log.info(
        "[ppcdl] ServerApp finished in %.1fs: final %s | spent per participant (max): %s | results: %s",
        run.seconds, fmt_metrics(run.final_metrics), run.privacy_spent["text"], out,
    )
    return run


def _no_successful_reply(server_round: int, replies: int, errors: list[str], stalled: list[int]) -> None:
    """Round ``server_round`` got no reply with content: fail at once if nothing has worked yet."""
    stalled.append(server_round)
    what = f"{replies} replies, all errors" if replies else "no reply within round-timeout"
    detail = f"; first errors: {' | '.join(errors)}" if errors else ""
    if len(stalled) == server_round:  # every round so far: a configuration problem, not a dropout
        raise RunFailed(f"round {server_round}: no participant replied successfully ({what}){detail}")
    log.warning("[ppcdl] round %d: no participant replied successfully (%s)%s; the model is unchanged",
                server_round, what, detail)


def _floats(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: settings come from ``[tool.flwr.app.config]``.

    A bad run config fails here with the key and value named, written to ``error.txt`` too.
    """
    config = dict(context.run_config)
    try:
        settings = RunSettings.from_config(config)
    except ValueError as err:
        write_error(Path(str(config.get("result-dir", RunSettings.result_dir))).expanduser().resolve(), err)
        raise
    run_server(grid, settings)
