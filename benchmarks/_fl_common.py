"""Shared helpers of the tuning benchmarks: run one in-process job with optional
ReliabilityWeightedFedAvg kwargs (a strategy handed to ``run_inprocess``), summarise,
cache results in a JSON file so re-running a script only computes missing cells."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from benchmarks.reliability_common import append_rows  # noqa: E402,F401 (one CSV writer for every benchmark)
from flwr_ppcdl.app.settings import RunSettings, main_metric  # noqa: E402
from flwr_ppcdl.app.sweep import run_inprocess  # noqa: E402

CACHE_DIR = Path(os.environ.get("BENCH_CACHE", "/tmp/flwr_ppcdl_bench"))


def _strategy(settings: RunSettings, rel_kwargs: dict[str, Any]):
    """ReliabilityWeightedFedAvg with ``rel_kwargs`` for a reliability job; None keeps the App's choice."""
    if settings.strategy != "reliability" or not rel_kwargs:
        return None
    from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

    return ReliabilityWeightedFedAvg(
        fraction_train=1.0, fraction_evaluate=0.0,
        min_available_nodes=settings.num_partitions, min_train_nodes=settings.num_partitions,
        **rel_kwargs,
    )


def run_job(cfg: dict[str, Any], rel_kwargs: dict[str, Any] | None = None, cache: str = "default") -> dict[str, Any]:
    """Run one job; return a small summary dict (cached by cfg + rel_kwargs)."""
    rel_kwargs = rel_kwargs or {}
    key = json.dumps({"cfg": cfg, "rel": rel_kwargs}, sort_keys=True, default=str)
    path = CACHE_DIR / f"{cache}.json"
    store = json.loads(path.read_text()) if path.exists() else {}
    if key in store:
        return store[key]
    full = {"result-dir": "/tmp/flwr_ppcdl_bench/run", "plot": False, **cfg}
    t0 = time.perf_counter()
    r = run_inprocess(full, strategy=_strategy(RunSettings.from_config(full), rel_kwargs))
    metric = main_metric(r["settings"]["task"])
    flags = {p["node_id"]: p["unreliable"] for p in r["participants"]}
    ws = [rd.get("weights") or {} for rd in r["rounds"]]
    last = ws[-1] if ws else {}
    share = sum(w for n, w in last.items() if flags.get(n)) if last else math.nan
    osc = math.nan
    if len(ws) > 2 and all(ws):
        diffs = [sum(abs(b.get(n, 0) - a.get(n, 0)) for n in flags) for a, b in zip(ws[1:-1], ws[2:], strict=False)]
        osc = float(np.mean(diffs))
    out = {
        "final": float(r["final_metrics"].get(metric, math.nan)),
        "reference": float(r["reference"].get(metric, math.nan)),
        "unreliable_share": share,
        "oscillation": osc,
        "seconds": time.perf_counter() - t0,
    }
    store = json.loads(path.read_text()) if path.exists() else {}
    store[key] = out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store))
    return out


def fmt(values: list[float], digits: int = 3) -> str:
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def over_seeds(cfg: dict[str, Any], rel: dict[str, Any] | None, seeds, cache: str) -> dict[str, list[float]]:
    rows = [run_job({**cfg, "seed": s}, rel, cache) for s in seeds]
    return {k: [row[k] for row in rows] for k in rows[0]}
