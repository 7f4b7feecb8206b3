"""Aggregation time of the project's strategies against Flower's FedAvg on the same replies (issue #27).

Exact command of the committed result (``benchmarks/results/aggregation_speed.csv``; one run, every ratio
measured in the same process):

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.aggregation_speed --out benchmarks/results/aggregation_speed.csv

Parameters: K = 10, 100, 1,000 replies of P = 10^5 and 10^6 float32 parameters in 4 arrays (the last one
a 2-D head of 50 rows from P = 10^5 on, ``--layout 2d``: every 2-D array is (rows, 250)), library defaults
(``ReliabilityWeightedFedAvg()``: every statistic, the calibration, the memory), conversion from the
ArrayRecords included for both, the best of ``--repeats`` alternating runs. A size whose replies would
not fit in half the available memory is skipped and says so. ``SummedStatisticsFedAvg`` is timed beside
Flower's FedAvg on K functional-mechanism replies (release parsing and checks, the scoring views, the
sum and the pooled solve; FedAvg averages the same replies' parameters): its time per participant
should not grow with K.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from benchmarks.reliability_common import append_rows, provenance
from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.privacy import FunctionalMechanism
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

FIELDS = ("strategy", "layout", "clients", "parameters", "fedavg_s", "ours_s", "ratio", "per_client_ms", "note",
          "code_version", "packages")


def _instruction(node: int) -> Message:
    ins = Message(RecordDict({"config": ConfigRecord()}), node, "train")
    ins.metadata.__dict__["_message_id"] = f"m{node}"
    ins.metadata.__dict__["_src_node_id"] = 0
    return ins


def make_replies(k: int, p: int, layout: str, seed: int = 0) -> tuple[list[Message], ArrayRecord]:
    """K replies of P float32 parameters (honest-looking: a common update plus noise) and the global model."""
    rng = np.random.default_rng(seed)
    sizes: list[Any] = [p // 2, p // 4, p // 8, p - p // 2 - p // 4 - p // 8]
    if layout == "2d":
        sizes = [(s // 250, 250) if s % 250 == 0 else (s,) for s in sizes]
    glob = {f"l{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(sizes)}
    step = {k_: 0.01 * rng.normal(size=a.shape).astype(np.float32) for k_, a in glob.items()}
    InProcessGrid(lambda m, c: m, node_ids=[1])  # sets Flower's task identity outside a runtime
    replies = []
    for node in range(k):
        arrays = ArrayRecord({k_: Array(glob[k_] + step[k_] + 0.01 * rng.standard_normal(a.shape, dtype=np.float32))
                              for k_, a in glob.items()})
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 100 + node})})
        replies.append(Message(content, reply_to=_instruction(node + 1)))
    return replies, ArrayRecord({k_: Array(a) for k_, a in glob.items()})


def make_release_replies(k: int, seed: int = 0) -> tuple[list[Message], ArrayRecord]:
    """K replies of functional-mechanism participants sharing their release (classification, d = 48, 10
    classes, 60 records each: the 1,000-participant Fashion-MNIST shape)."""
    rng = np.random.default_rng(seed)
    d, classes = 48, 10
    fm = FunctionalMechanism(task="classification", num_classes=classes, epsilon=1.0, noise="gaussian", delta=1e-5,
                             sampler="numpy", insecure_noise_seed=seed)
    centres = rng.normal(size=(classes, d))
    centres /= 2.0 * np.linalg.norm(centres, axis=1, keepdims=True)
    head = {"w": np.zeros((classes, d), np.float32), "b": np.zeros(classes, np.float32)}
    InProcessGrid(lambda m, c: m, node_ids=[1])
    replies = []
    for node in range(k):
        y = rng.integers(0, classes, 60)
        x = centres[y] + 0.1 * rng.normal(size=(60, d))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)
        release = fm.release(x, y)
        content = RecordDict({"arrays": ArrayRecord({k_: Array(v + 0.01 * rng.normal(size=v.shape).astype(np.float32))
                                                     for k_, v in head.items()}),
                              "metrics": MetricRecord({"num-examples": 60}),
                              wire.FM_RELEASE: ConfigRecord({wire.RELEASE_JSON: wire.encode_release(release)})})
        replies.append(Message(content, reply_to=_instruction(node + 1)))
    return replies, ArrayRecord({k_: Array(v) for k_, v in head.items()})


def timed(strategy: Any, replies: list[Message], glob: ArrayRecord) -> float:
    if hasattr(strategy, "_reliability"):
        list(strategy.configure_train(1, glob, ConfigRecord(), InProcessGrid(lambda m, c: m, num_nodes=2)))
    gc.collect()
    t0 = time.perf_counter()
    strategy.aggregate_train(1, replies)
    return time.perf_counter() - t0


def available_bytes() -> float:
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return float(info["MemAvailable"].split()[0]) * 1024.0
    except (OSError, KeyError, ValueError):
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout", choices=("1d", "2d"), default="2d")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--parameters", type=int, nargs="+", default=[10**5, 10**6])
    parser.add_argument("--out", type=str, default="")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    prov = provenance()
    print(f"# {prov['code_version']}; {prov['packages']}; layout {args.layout}")
    print(f"{'strategy':22} {'K':>5} {'P':>9} {'FedAvg s':>9} {'ours s':>9} {'ratio':>6} {'ms/client':>9}")
    rows = []
    for k in args.clients:
        for p in args.parameters:
            need = 3.0 * k * p * 4
            if need > 0.5 * available_bytes():
                print(f"{'ReliabilityWeighted':22} {k:>5} {p:>9} skipped: needs about {need / 2**30:.1f} GiB")
                rows.append({"strategy": "ReliabilityWeightedFedAvg", "layout": args.layout, "clients": k, "parameters": p,
                             "note": f"skipped: needs about {need / 2**30:.1f} GiB, half of the available memory is less", **prov})
                continue
            replies, glob = make_replies(k, p, args.layout)
            ours = ReliabilityWeightedFedAvg()
            t_fedavg = t_ours = float("inf")
            for _ in range(args.repeats):  # alternate, so load changes hit both alike
                t_fedavg = min(t_fedavg, timed(FedAvg(), replies, glob))
                t_ours = min(t_ours, timed(ours, replies, glob))
            rows.append({"strategy": "ReliabilityWeightedFedAvg", "layout": args.layout, "clients": k, "parameters": p,
                         "fedavg_s": t_fedavg, "ours_s": t_ours, "ratio": t_ours / t_fedavg,
                         "per_client_ms": 1e3 * t_ours / k, "note": "", **prov})
            print(f"{'ReliabilityWeighted':22} {k:>5} {p:>9} {t_fedavg:>9.3f} {t_ours:>9.3f} {t_ours / t_fedavg:>6.2f} "
                  f"{1e3 * t_ours / k:>9.2f}", flush=True)
            del replies
            gc.collect()
        replies, glob = make_release_replies(k)
        summed = SummedStatisticsFedAvg()
        t_fedavg = t_summed = float("inf")
        for _ in range(args.repeats):
            t_fedavg = min(t_fedavg, timed(FedAvg(), replies, glob))
            t_summed = min(t_summed, timed(summed, replies, glob))
        rows.append({"strategy": "SummedStatisticsFedAvg", "layout": "release d=48", "clients": k, "parameters": 490,
                     "fedavg_s": t_fedavg, "ours_s": t_summed, "ratio": t_summed / t_fedavg,
                     "per_client_ms": 1e3 * t_summed / k, "note": "releases parsed, checked, scored and summed", **prov})
        print(f"{'SummedStatistics':22} {k:>5} {'release':>9} {t_fedavg:>9.3f} {t_summed:>9.3f} {t_summed / t_fedavg:>6.2f} "
              f"{1e3 * t_summed / k:>9.2f}", flush=True)
    if args.out:
        from pathlib import Path

        append_rows(Path(args.out), FIELDS, rows)


if __name__ == "__main__":
    main()
