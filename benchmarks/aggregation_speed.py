"""Time ReliabilityWeightedFedAvg.aggregate_train against Flower's FedAvg on the same replies.

Usage: .venv/bin/python benchmarks/aggregation_speed.py [--repeats 3] [--quick]

Replies carry float32 ArrayRecords of P parameters (4 layers) from K nodes. Both strategies are
timed on identical fresh replies (conversion from ArrayRecord included for both).
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg
from flwr_ppcdl.testing import InProcessGrid


def make_replies(k: int, p: int, seed: int = 0) -> tuple[list[Message], ArrayRecord]:
    rng = np.random.default_rng(seed)
    sizes = [p // 2, p // 4, p // 8, p - p // 2 - p // 4 - p // 8]
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
    args = parser.parse_args()
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(f"{'K':>4} {'P':>9} {'FedAvg s':>9} {'ours s':>9} {'ratio':>6}")
    for k in (10,) if args.quick else (10, 100):
        for p in (10**5, 10**6):
            replies, glob = make_replies(k, p)
            t_fedavg = time_strategy(FedAvg(), replies, glob, args.repeats)
            t_ours = time_strategy(ReliabilityWeightedFedAvg(memory_rate=None), replies, glob, args.repeats)
            print(f"{k:>4} {p:>9} {t_fedavg:>9.3f} {t_ours:>9.3f} {t_ours / t_fedavg:>6.2f}", flush=True)
            del replies
            gc.collect()


if __name__ == "__main__":
    main()
