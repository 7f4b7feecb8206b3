"""Time ReliabilityWeightedFedAvg.aggregate_train against Flower's FedAvg on the same replies.

Usage: .venv/bin/python benchmarks/aggregation_speed.py [--repeats 3] [--quick] [--layout 1d|2d]

Replies carry float32 ArrayRecords of P parameters (4 layers) from K nodes. Both strategies are
timed on identical fresh replies (conversion from ArrayRecord included for both), alternately,
in the same process; the best of --repeats runs is reported. ``--layout 2d`` shapes the layers
as (rows, 250) matrices, which exercises the per-unit (output-row) alignment statistics.
To time another checkout of the package, put it first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

import flwr_ppcdl
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg


def make_replies(k: int, p: int, seed: int = 0, layout: str = "1d") -> tuple[list[Message], ArrayRecord]:
    rng = np.random.default_rng(seed)
    sizes: list = [p // 2, p // 4, p // 8, p - p // 2 - p // 4 - p // 8]
    if layout == "2d":
        sizes = [(s // 250, 250) if s % 250 == 0 else (s,) for s in sizes]
    glob = ArrayRecord({f"l{i}": Array(np.zeros(s, dtype=np.float32)) for i, s in enumerate(sizes)})
    InProcessGrid(lambda m, c: m, node_ids=[1])  # sets Flower's task identity outside a runtime
    replies = []
    for node in range(k):
        ins = Message(RecordDict({"config": ConfigRecord()}), node + 1, "train")
        ins.metadata.__dict__["_message_id"] = f"m{node}"
        ins.metadata.__dict__["_src_node_id"] = 0
        arrays = ArrayRecord(
            {f"l{i}": Array(rng.normal(size=s).astype(np.float32)) for i, s in enumerate(sizes)}
        )
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 100 + node})})
        replies.append(Message(content, reply_to=ins))
    return replies, glob


def time_strategy(strategy, replies, glob, repeats: int) -> float:
    grid = InProcessGrid(lambda m, c: m, num_nodes=2)
    best = float("inf")
    for _ in range(repeats):
        if hasattr(strategy, "_reliability"):
            list(strategy.configure_train(1, glob, ConfigRecord(), grid))
        gc.collect()
        t0 = time.perf_counter()
        strategy.aggregate_train(1, replies)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only K=10")
    parser.add_argument("--layout", choices=("1d", "2d"), default="1d", help="layer shapes")
    args = parser.parse_args()
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(f"# flwr_ppcdl from {flwr_ppcdl.__file__}; layout {args.layout}")
    print(f"{'K':>4} {'P':>9} {'FedAvg s':>9} {'ours s':>9} {'ratio':>6}")
    for k in (10,) if args.quick else (10, 100):
        for p in (10**5, 10**6):
            replies, glob = make_replies(k, p, layout=args.layout)
            ours = ReliabilityWeightedFedAvg(memory_rate=None)
            t_fedavg = t_ours = float("inf")
            for _ in range(args.repeats):  # alternate, so load changes hit both alike
                t_fedavg = min(t_fedavg, time_strategy(FedAvg(), replies, glob, 1))
                t_ours = min(t_ours, time_strategy(ours, replies, glob, 1))
            print(f"{k:>4} {p:>9} {t_fedavg:>9.3f} {t_ours:>9.3f} {t_ours / t_fedavg:>6.2f}", flush=True)
            del replies
            gc.collect()


if __name__ == "__main__":
    main()
