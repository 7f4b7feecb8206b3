"""Tune the census2000 default job (ε=1, 10 participants, 30 % random-target participants).

Run:  PYTHONPATH=. .venv/bin/python benchmarks/default_job_tuning.py [--seeds 0 1 2] [--stage all]

Stages (each prints a table, mean ± sd over seeds; results cached in /tmp/flwr_ppcdl_bench):
  A  training protocol (solver, local-steps, num-rounds, proximal-mu) × {reliability default, fedavg}
  B  ReliabilityWeightedFedAvg options on the best protocols (a strategy handed to run_inprocess)
  C  strategy comparison + oracle (fedavg, unreliable-fraction 0) at ε ∈ {1, 10, ∞}
  D  diagnosis of the weight oscillation (one run, per-round weights/reliability)
Columns: final R² (test), weight share of the unreliable nodes in the last round, mean L1 change
of the weight vector between consecutive rounds ("osc"; 0 = stable, 2 = complete swap).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks._fl_common import fmt, over_seeds

BASE = {"dataset": "census2000", "task": "regression", "epsilon": 1.0, "strategy": "reliability", "protocol": "parameters"}
CACHE = "census"

PROTOCOLS = {
    "iter ls1 r20": {"solver": "iterative", "local-steps": 1, "num-rounds": 20, "proximal-mu": 0.0},
    "iter ls1 r30": {"solver": "iterative", "local-steps": 1, "num-rounds": 30, "proximal-mu": 0.0},
    "iter ls5 r20": {"solver": "iterative", "local-steps": 5, "num-rounds": 20, "proximal-mu": 0.0},
    "iter ls5 r30": {"solver": "iterative", "local-steps": 5, "num-rounds": 30, "proximal-mu": 0.0},
    "iter ls20 r20": {"solver": "iterative", "local-steps": 20, "num-rounds": 20, "proximal-mu": 0.0},
    "iter ls20 r30": {"solver": "iterative", "local-steps": 20, "num-rounds": 30, "proximal-mu": 0.0},
    "closed r10": {"solver": "closed-form", "local-steps": 1, "num-rounds": 10, "proximal-mu": 0.0},
    "closed r20": {"solver": "closed-form", "local-steps": 1, "num-rounds": 20, "proximal-mu": 0.0},
    "closed r30": {"solver": "closed-form", "local-steps": 1, "num-rounds": 30, "proximal-mu": 0.0},
    "closed mu0.1 r30": {"solver": "closed-form", "local-steps": 1, "num-rounds": 30, "proximal-mu": 0.1},
    "closed mu1 r30": {"solver": "closed-form", "local-steps": 1, "num-rounds": 30, "proximal-mu": 1.0},
    "closed mu10 r30": {"solver": "closed-form", "local-steps": 1, "num-rounds": 30, "proximal-mu": 10.0},
}

REL_OPTIONS = {  # the calibrated estimator's options (the legacy rule's are gone with it, issue #25)
    "default": {},
    "use_deltas=False": {"use_deltas": False},
    "memory_rate=None": {"memory_rate": None},
    "false_alarm_rate=0.05": {"false_alarm_rate": 0.05},
}


def row(label: str, res: dict[str, list[float]]) -> str:
    return f"| {label} | {fmt(res['final'])} | {fmt(res['unreliable_share'], 2)} | {fmt(res['oscillation'], 2)} |"


def stage_a(seeds) -> None:
    print("\n## A. Training protocol (ε=1, 30 % random targets)\n")
    print("| protocol | reliability R² | fedavg R² | rel. unreliable share | rel. osc |")
    print("|---|---|---|---|---|")
    for name, proto in PROTOCOLS.items():
        rel = over_seeds({**BASE, **proto}, None, seeds, CACHE)
        avg = over_seeds({**BASE, **proto, "strategy": "fedavg"}, None, seeds, CACHE)
        print(f"| {name} | {fmt(rel['final'])} | {fmt(avg['final'])} | {fmt(rel['unreliable_share'], 2)} | {fmt(rel['oscillation'], 2)} |")


def stage_b(seeds, protocols) -> None:
    for pname in protocols:
        print(f"\n## B. Reliability options on '{pname}' (ε=1)\n")
        print("| options | R² | unreliable share (last round) | osc |")
        print("|---|---|---|---|")
        for oname, opts in REL_OPTIONS.items():
            print(row(oname, over_seeds({**BASE, **PROTOCOLS[pname]}, opts, seeds, CACHE)))


def stage_c(seeds, pname: str, rel_opts: dict) -> None:
    print(f"\n## C. Strategies on '{pname}', reliability options {rel_opts or 'default'}\n")
    print("| strategy | ε=1 | ε=10 | ε=∞ |")
    print("|---|---|---|---|")
    strategies = [("reliability (tuned)", "reliability", rel_opts, 0.3), ("reliability (default opts)", "reliability", {}, 0.3),
                  ("fedavg", "fedavg", None, 0.3), ("fedmedian", "fedmedian", None, 0.3),
                  ("fedtrimmedavg", "fedtrimmedavg", None, 0.3), ("multikrum (told f=3)", "multikrum", None, 0.3),
                  ("oracle: fedavg, no corruption", "fedavg", None, 0.0)]
    ref = None
    for label, strat, opts, frac in strategies:
        cells = []
        for eps in (1.0, 10.0, math.inf):
            res = over_seeds({**BASE, **PROTOCOLS[pname], "strategy": strat, "epsilon": eps, "unreliable-fraction": frac}, opts, seeds, CACHE)
            ref = res["reference"][0]
            cells.append(fmt(res["final"]) + (f" (u {np.mean(res['unreliable_share']):.2f})" if strat == "reliability" else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nnon-private OLS reference (all train data, clean): R² {ref:.3f}")


def stage_d(pname: str) -> None:
    """Per-round weights of one run, and the alignment cosines, to show the oscillation."""
    print(f"\n## D. Oscillation diagnosis on '{pname}', seed 0 (unreliable = partitions 5, 6, 9)\n")
    from flwr_ppcdl.app.sweep import run_inprocess
    from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

    for opts in ({}, {"alignment": False}, {"use_deltas": False}):
        cfg = {"result-dir": "/tmp/flwr_ppcdl_bench/diag", "plot": False, **BASE, **PROTOCOLS[pname], "seed": 0, "num-rounds": 8}
        parts = int(cfg.get("num-partitions", 10))
        strategy = ReliabilityWeightedFedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                             min_available_nodes=parts, min_train_nodes=parts, **opts)
        holder = {"s": strategy}
        r = run_inprocess(cfg, strategy=strategy)
        flags = {p["node_id"]: p["unreliable"] for p in r["participants"]}
        nodes = sorted(flags)
        print(f"options {opts or 'default'}: weights per round (nodes {' '.join(n[-2:] + ('*' if flags[n] else '') for n in nodes)})")
        for h in holder["s"].reliability_history:
            w = h.weights
            print(f"  round {h['round']:2d}: " + " ".join(f"{float(w.get(n, w.get(int(n), 0))):.2f}" for n in nodes)
                  + f"   R² after round {r['rounds'][h['round'] - 1]['metrics'].get('r2', float('nan')):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--stage", default="all")
    ap.add_argument("--protocols", nargs="+", default=["closed r30", "iter ls5 r30"])
    ap.add_argument("--best", default="closed r30")
    ap.add_argument("--best-opts", default="alignment=False")
    a = ap.parse_args()
    if a.stage in ("all", "A"):
        stage_a(a.seeds)
    if a.stage in ("all", "B"):
        stage_b(a.seeds, a.protocols)
    if a.stage in ("all", "C"):
        stage_c(a.seeds, a.best, REL_OPTIONS[a.best_opts])
    if a.stage in ("all", "D"):
        stage_d(a.best)


if __name__ == "__main__":
    main()
