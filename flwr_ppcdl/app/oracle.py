"""The simulation-only oracle: a non-private reference next to a finished run's result.

The ServerApp sees only its own test split and the participants' replies. The reference a report
shows next to the private result -- OLS (regression) or multinomial logistic regression
(classification) fitted on the reliable participants' *pooled records* -- needs every participant's
data, so it is computed here, after the run, outside the Flower App: by ``scripts/run.sh`` once
``flwr run`` has finished, by the sweep's runners and by the benchmarks. It exists only because a
simulation holds all the data in one place; a deployment has no such oracle.

    python -m flwr_ppcdl.app.oracle results/latest     # adds it to result.json, prints the summary
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from flwr_ppcdl.app.report import RunResult, fmt_metrics, plot_results
from flwr_ppcdl.app.settings import RunSettings, main_metric

ORACLE_NOTE = (
    "simulation-only oracle, computed outside the ServerApp after the run: non-private centralised "
    "fit (OLS / multinomial logistic regression) on the reliable participants' pooled records, same "
    "features, evaluated on the server's test split"
)


def attach_reference(result: dict[str, Any]) -> dict[str, Any]:
    """Add ``reference`` (and ``reference_note``) to a run's ``result.json`` content; return it."""
    from flwr_ppcdl.app.experiment import reference_metrics

    settings = RunSettings(**result["settings"])
    result["reference"] = reference_metrics(settings)
    result["reference_note"] = ORACLE_NOTE
    return result


def summary_line(result: dict[str, Any], result_dir: Path | str) -> str:
    """The one-line summary of a finished run: its result next to the oracle reference."""
    metric = main_metric(result["settings"]["task"])
    final = float(result["final_metrics"].get(metric, math.nan))
    ref = float(result.get("reference", {}).get(metric, math.nan))
    ratio = final / ref if ref and math.isfinite(ref) else math.nan
    eps = max((p["epsilon"] for p in result["participants"]), default=0.0)
    spent = result.get("privacy_spent", {}).get("text") or f"epsilon = {eps}"  # with delta and its meaning
    fedavg = result.get("fedavg_final_metrics", {}).get(metric)
    return (
        f"[ppcdl] done in {result['seconds']:.1f}s: final {fmt_metrics(result['final_metrics'])}"
        f"{f' (FedAvg on the same replies: {metric}={fedavg:.4f})' if fedavg is not None else ''} | "
        f"non-private centralised reference on the same features (reliable records; simulation-only "
        f"oracle, computed outside the ServerApp): {fmt_metrics(result.get('reference', {}))} | "
        f"ratio {metric} = {ratio:.2f} | spent per participant (max): {spent} | results: {result_dir}"
    )


def complete_run(result_dir: Path) -> dict[str, Any]:
    """Attach the reference to ``result_dir/result.json`` (rewriting it and ``summary.png``)."""
    path = result_dir / "result.json"
    result = attach_reference(json.loads(path.read_text()))
    run = RunResult(**result)
    path.write_text(run.to_json())
    if result["settings"].get("plot", True):
        plot_results(run, result_dir / "summary.png")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result_dir", type=Path, help="a finished run's result-dir (holding result.json)")
    args = parser.parse_args(argv)
    result_dir = args.result_dir.expanduser().resolve()
    if not (result_dir / "result.json").exists():
        print(f"[ppcdl] no result.json in {result_dir}: the run did not finish", file=sys.stderr)
        return 1
    print(summary_line(complete_run(result_dir), result_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
