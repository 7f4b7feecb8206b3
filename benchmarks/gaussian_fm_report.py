"""Tables of the ``gaussian`` harness profile (issue #14) from ``benchmarks/results/gaussian.csv``.

    .venv/bin/python -m benchmarks.gaussian_fm_report [--csv benchmarks/results/gaussian.csv]

Prints, per data set and fraction of unreliable participants, every contender's test metric (mean
± sd over seeds, and the number of seeds), the (ε, δ) it spent with the meaning of its ε, and the
client compute per participant for the whole run (seconds in the ClientApp summed over rounds; the
first round holds the FM release). Opacus rows are the tuned best of their grid.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def _f(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/results/gaussian.csv"))
    args = parser.parse_args()
    app_tables(args.csv)
    results = args.csv.parent
    edge = results / "gaussian_edge.csv"
    if edge.exists():
        print("\n### Opacus beyond the grid edge (Fashion-MNIST, 0 %, seed 0)\n")
        print("| lr | clip | test accuracy |\n|---|---|---|")
        for r in csv.DictReader(edge.open()):
            hp = json.loads(r["hyper"])
            print(f"| {hp['lr']:g} | {hp['clip']:g} | {_f(r['value']):.4f} |")
    tuning = results / "gaussian_tuning.csv"
    if tuning.exists():
        from benchmarks.gaussian_fm_tuning import report

        print("\n### Validation tuning (benchmarks/gaussian_fm_tuning.py; 10 x 5,400, validation 6,000, seeds 100-102)")
        report(list(csv.DictReader(tuning.open())))
    compute = results / "gaussian_compute.csv"
    if compute.exists():
        rows = list(csv.DictReader(compute.open()))
        dpsgd = _f(rows[-1]["cpu_s"])
        print("\n### Client CPU per participant (benchmarks/gaussian_fm_compute.py; one thread, medians of 3)\n")
        print("| noise | body | what | CPU s | ÷ DP-SGD whole run |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['noise']} | {r['body']} | {r['what']} | {_f(r['cpu_s']):.4f} | {_f(r['cpu_s']) / dpsgd:.3f} |")


def app_tables(path: Path) -> None:
    """The App-path tables of the ``gaussian`` harness profile."""
    args = argparse.Namespace(csv=path)
    rows = [r for r in csv.DictReader(args.csv.open()) if not r["contender"].endswith("-grid") and not r["error"]]
    groups: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["dataset"], r["unreliable_fraction"])][r["contender"]].append(r)
    for (dataset, fraction), contenders in sorted(groups.items()):
        metric = next(iter(contenders.values()))[0]["metric"]
        print(f"\n### {dataset}, {float(fraction):.0%} unreliable, ε = 1 (test {metric}; mean ± sd over seeds)\n")
        print("| contender | noise / body / protocol / decoder | test | seeds | ε spent (max) | δ | privacy | client wall s per participant, whole run (first round) | client thread-CPU s, whole run |")
        print("|---|---|---|---|---|---|---|---|---|")
        order = sorted(contenders, key=lambda c: -np.mean([_f(r["value"]) for r in contenders[c]]))
        for name in order:
            items = contenders[name]
            values = [_f(r["value"]) for r in items]
            hyper = json.loads(items[0]["hyper"] or "{}")
            keys = ("noise", "body", "protocol", "solver", "decoder")
            setting = " / ".join(str(hyper.get(k, "")) for k in keys if k in hyper)
            if hyper.get("protocol") == "parameters" and hyper.get("solver") == "iterative":
                setting = setting.rsplit(" / ", 1)[0]  # the iterative solver uses no decoder
            if not setting and hyper:
                setting = ", ".join(f"{k}={v}" for k, v in hyper.items() if k in ("lr", "clip", "noise_multiplier"))
            eps = max(_f(r["epsilon_spent"]) for r in items)
            delta = max(_f(r["delta"]) for r in items)
            rounds = _f(items[0]["rounds"])
            client = [_f(r["client_s_per_round"]) * rounds for r in items]
            first = [_f(r["client_s_first_round"]) for r in items]
            compute = "-" if not all(math.isfinite(c) for c in client) else f"{np.mean(client):.2f} ({np.mean(first):.2f})"
            cpu = [_f(r["client_cpu_s_per_round"]) * rounds for r in items]
            cpu_text = "-" if not all(math.isfinite(c) for c in cpu) else f"{np.mean(cpu):.2f}"
            print(f"| {name} | {setting} | {_fmt(values)} | {len(values)} | {eps:.4g} | {delta:.0e} | {items[0]['privacy']} | {compute} | {cpu_text} |")


if __name__ == "__main__":
    main()
