"""Classification comparison (digits, mnist5k; fashion-mnist optional) with 30 % flipped or random
labels, ε ∈ {1, 10, ∞}: tuned reliability vs default reliability, FedAvg, FedMedian, MultiKrum
(told f) and the oracle (FedAvg without corruption). Mean ± sd of test accuracy over seeds.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/classification_tuning.py [--datasets digits mnist5k]
      [--seeds 0 1 2] [--protocol iter-ls5-r20]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks._fl_common import fmt, over_seeds

PROTOCOLS = {
    "iter-ls5-r20": {"solver": "iterative", "local-steps": 5, "num-rounds": 20, "proximal-mu": 0.0},
    "iter-ls20-r20": {"solver": "iterative", "local-steps": 20, "num-rounds": 20, "proximal-mu": 0.0},
    "closed-r10": {"solver": "closed-form", "local-steps": 1, "num-rounds": 10, "proximal-mu": 0.0},
}
STRATEGIES = [  # (the legacy rule's tuned variant went with it, issue #25: benchmarks/contenders)
    ("reliability (default)", "reliability", {}, None),
    ("fedavg", "fedavg", None, None),
    ("fedmedian", "fedmedian", None, None),
    ("multikrum (told f)", "multikrum", None, None),
    ("oracle (fedavg, no corruption)", "fedavg", None, 0.0),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--kinds", nargs="+", default=["flipped-labels", "random-labels"])
    ap.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 10.0, math.inf])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocol", default="iter-ls5-r20")
    ap.add_argument("--strategies", nargs="+", default=None, help="labels prefix filter")
    a = ap.parse_args()
    strategies = [s for s in STRATEGIES if a.strategies is None or any(s[0].startswith(p) for p in a.strategies)]
    for ds in a.datasets:
        for kind in a.kinds:
            print(f"\n## {ds}, 30 % {kind}, protocol {a.protocol} (test accuracy; u = weight share of unreliable)\n")
            print("| strategy | " + " | ".join(f"ε={e:g}" for e in a.epsilons) + " |")
            print("|---|" + "---|" * len(a.epsilons))
            ref = math.nan
            for label, strat, opts, frac in strategies:
                cells = []
                for eps in a.epsilons:
                    cfg = {"task": "classification", "dataset": ds, "unreliable-kind": kind, "epsilon": eps,
                           "strategy": strat, "protocol": "parameters", **PROTOCOLS[a.protocol]}
                    if frac is not None:
                        cfg["unreliable-fraction"] = frac
                    res = over_seeds(cfg, opts, a.seeds, f"clf-{ds}")
                    ref = res["reference"][0]
                    u = f" (u {np.mean(res['unreliable_share']):.2f})" if strat == "reliability" else ""
                    cells.append(fmt(res["final"]) + u)
                print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
            print(f"\nnon-private softmax reference (reliable participants' data): accuracy {ref:.3f}")


if __name__ == "__main__":
    main()
