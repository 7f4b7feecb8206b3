"""Plain (non-private) SGD clients in a quickstart-shaped Flower App: the one-line strategy swap.

Exact command of the committed CSV (``benchmarks/results/reliability_quickstart.csv``, about 10 min
on 2 CPU cores):

    PYTHONPATH=. .venv/bin/python benchmarks/reliability_quickstart.py --seeds 3 --out benchmarks/results/reliability_quickstart.csv

The shape of Flower's ``quickstart-pytorch``: a small CNN (conv 6 - pool - conv 16 - pool - fc 120 -
fc 84 - fc 10), every client trains one local epoch of SGD (lr 0.01, momentum 0.9, batch 32) on its
own partition and replies through a Message-API ClientApp; the server runs Flower's ``FedAvg``, the
legacy reliability rule (``method="truth_discovery"``, the pre-#13 App configuration) or
``ReliabilityWeightedFedAvg()`` with the library defaults (calibrated) -- the one-line swap --,
over :class:`~flwr_ppcdl.app.grid.InProcessGrid` (the real strategies, no Ray). Offline data:
Fashion-MNIST (1 x 28 x 28; the quickstart uses CIFAR-10, not available offline), 10 clients x 600
images, 2,000 test images, 10 rounds. All clients are honest:

* ``iid``: IID partitions;
* ``dirichlet``: label skew, Dirichlet(0.3);
* ``minority``: IID, but 3 of 10 clients hold a second, honest data mode (inverted intensities).

Reported per strategy: final test accuracy, the fraction of client-rounds at >= 0.8x the client's
FedAvg share (``honest_kept``), the minimum share ratio seen, and (``minority``) the second mode's
weight over its FedAvg share (mean over rounds).
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from benchmarks._fl_common import append_rows  # noqa: E402
from flwr_ppcdl.app.grid import InProcessGrid  # noqa: E402
from flwr_ppcdl.data import load_fashion_mnist, partition_indices  # noqa: E402
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg  # noqa: E402

CLIENTS, PER_CLIENT, TEST, ROUNDS = 10, 600, 2000, 10
LEGACY = {"method": "truth_discovery", "alignment": False, "sharpness": 4.0, "tolerance": 1.0,
          "count_cap": 10.0, "max_share": 0.5, "memory_rate": 0.5}


class Net(nn.Module):
    """The quickstart's CNN, for one input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def data(scenario: str, seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor], list[int]]:
    train = load_fashion_mnist(split="train")
    test = load_fashion_mnist(split="test")
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(train))[: CLIENTS * PER_CLIENT]
    x = np.asarray(train.features, dtype=np.float32)[pool].reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(train.targets)[pool]
    parts = partition_indices(y, CLIENTS, "dirichlet" if scenario == "dirichlet" else "iid", alpha=0.3, seed=seed)
    minority = [7, 8, 9] if scenario == "minority" else []
    clients = []
    for c, idx in enumerate(parts):
        xc = 1.0 - x[idx] if c in minority else x[idx]
        clients.append((torch.as_tensor(xc), torch.as_tensor(y[idx], dtype=torch.long)))
    t = rng.permutation(len(test))[:TEST]
    xt = np.asarray(test.features, dtype=np.float32)[t].reshape(-1, 1, 28, 28) / 255.0
    if scenario == "minority":  # the server's test set holds both modes in the same proportion
        xt[: int(0.3 * TEST)] = 1.0 - xt[: int(0.3 * TEST)]
    return clients, (torch.as_tensor(xt), torch.as_tensor(np.asarray(test.targets)[t], dtype=torch.long)), minority


def client_app(clients: list[tuple[torch.Tensor, torch.Tensor]], seed: int) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        x, y = clients[pid]
        net = Net()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(seed * 1000 + pid + 97 * int(msg.content["config"].get("server-round", 0)))
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            b = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
        content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content, reply_to=msg)

    return app


def run(scenario: str, strategy_name: str, seed: int) -> dict[str, Any]:
    clients, (xt, yt), minority = data(scenario, seed)
    torch.manual_seed(seed)
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": CLIENTS, "min_train_nodes": CLIENTS}
    if strategy_name == "fedavg":
        strategy: Any = FedAvg(**common)
    elif strategy_name == "legacy":
        strategy = ReliabilityWeightedFedAvg(**common, **LEGACY)
    else:
        strategy = ReliabilityWeightedFedAvg(**common)  # the one-line swap: library defaults
    grid = InProcessGrid(client_app(clients, seed), CLIENTS)
    net = Net()
    t0 = time.perf_counter()
    result = strategy.start(grid, ArrayRecord(net.state_dict()), num_rounds=ROUNDS)
    net.load_state_dict(result.arrays.to_torch_state_dict())
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    row: dict[str, Any] = {"scenario": scenario, "seed": seed, "strategy": strategy_name, "accuracy": acc,
                           "honest_kept": float("nan"), "min_share_ratio": float("nan"), "minority_share_ratio": float("nan"),
                           "seconds": time.perf_counter() - t0}
    history = getattr(strategy, "reliability_history", None)
    if history:
        pid = {nid: int(ctx.node_config["partition-id"]) for nid, ctx in grid.contexts.items()}
        ratios = np.array([[rep.weights[n] / rep.fedavg_share[n] for n in sorted(rep.weights)] for rep in history])
        row["honest_kept"] = float(np.mean(ratios >= 0.8))
        row["min_share_ratio"] = float(ratios.min())
        if minority:
            nodes = sorted(history[0].weights)
            cols = [i for i, n in enumerate(nodes) if pid[n] in minority]
            w = np.array([[rep.weights[n] for n in nodes] for rep in history])
            fa = np.array([[rep.fedavg_share[n] for n in nodes] for rep in history])
            row["minority_share_ratio"] = float(np.mean(w[:, cols].sum(1) / fa[:, cols].sum(1)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_quickstart.csv"))
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["scenario", "seed", "strategy", "accuracy", "honest_kept", "min_share_ratio", "minority_share_ratio", "seconds"]
    done: set[tuple[str, int, str]] = set()
    if args.out.exists():
        with args.out.open() as fh:
            done = {(r["scenario"], int(r["seed"]), r["strategy"]) for r in csv.DictReader(fh)}
    print(f"{'scenario':10} {'seed':>4} {'strategy':11} {'acc':>6} {'kept':>5} {'min':>5} {'minority':>8}")
    for seed in range(args.seeds):
        for scenario in ("iid", "dirichlet", "minority"):
            for name in ("fedavg", "legacy", "calibrated"):
                if (scenario, seed, name) in done:
                    continue
                row = run(scenario, name, seed)
                append_rows(args.out, fields, [row])
                print(f"{scenario:10} {seed:>4} {name:11} {row['accuracy']:>6.3f} {row['honest_kept']:>5.2f} "
                      f"{row['min_share_ratio']:>5.2f} {row['minority_share_ratio']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
