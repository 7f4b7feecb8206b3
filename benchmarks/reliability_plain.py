"""Plain (non-private) SGD clients: the one-line strategy swap against Flower's rules (issues #25, #27).

Exact commands of the committed CSV (``benchmarks/results/reliability_plain.csv``: the reporting seeds
3-5 for the ``small`` and ``collusion`` groups, 16 minutes, then seed 3 for ``scale``, 12 minutes, on 2
shared cores; resumable) and of its goals summary:

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds 3 4 5 --groups small collusion \
        --out benchmarks/results/reliability_plain.csv
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds 3 --groups scale \
        --out benchmarks/results/reliability_plain.csv
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds 6 7 8 --groups small \
        --out benchmarks/results/reliability_plain.csv  # the fresh seeds (never tuned or reported on before stop 35)
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds 3 4 5 6 7 8 --groups small \
        --rules ours-server --out benchmarks/results/reliability_plain.csv  # then --again four times; and
    #   --seeds 3 4 5 --groups collusion --rules ours-server (stop 36: the server's records, ``ours-server``)
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds $(seq 16 45) --groups small \
        --scenarios none flipped --out benchmarks/results/reliability_plain.csv  # the study seeds (stop 37), every contender
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds $(seq 16 45) --groups small \
        --scenarios mode2 random-uploads --out benchmarks/results/reliability_plain.csv  # stop 38, 40 minutes; and
    #   --seeds $(seq 16 25) --groups collusion (stop 38, 6 minutes a seed)
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds $(seq 16 45) --groups small \
        --rules ours --again --out benchmarks/results/reliability_plain.csv  # stop 42, twice: three runs a study seed
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_plain --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \
        --groups small --scenarios none flipped random-labels sign-flip --rules fedavg oracle fedmedian fedtrimmedavg \
        multikrum ours --out ...  # stop 45, the tuning seeds' yardstick: one run; flipped, then the rest,
    #   each in two halves of the seeds, appended
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_plain --summary \
        --out benchmarks/results/reliability_plain.csv > benchmarks/results/reliability_plain_summary.txt

The summary ends each seed role with the harmful Dirichlet cells split by the unreliable clients' share of the data
(their FedAvg weight; 0.3 if the partition were even): on the study seeds flipped labels cost ``ours`` most where
three clients hold more than that (stop 39). ``--summary --candidate FILE`` (stop 44) gives the goals with a screened
candidate's rows in place of the library's wherever it measured a cell, seed and rule, then each cell's paired change
of ``ours`` on the seeds both measured. Stop 44's candidate (the memory as a discounted CUSUM, 319218a, in a worktree of
branch ``cusum-memory``): ``--seeds 3 4 5 --groups small --rules ours`` and then ``--again`` four times, the same for 6 7 8,
and ``--seeds $(seq 16 30)`` and ``$(seq 31 45)`` with ``--groups small --rules ours``, ``--scenarios none flipped``, then
``--scenarios random-labels sign-flip mode2 random-uploads``, each then ``--again`` twice; then (at 319218a, detached)
``--seeds 3 4 5`` and ``$(seq 16 25)`` ``--groups collusion --rules ours ours-server``, ``--seeds 3 4 5`` and ``6 7 8``
``--groups small --rules ours-server`` five times, ``--seeds $(seq 16 45) --groups small --rules ours-server`` once and
``--seeds 3 --groups scale --rules ours ours-server``; every run in a file of its own, joined in
``benchmarks/results/reliability_plain_candidate_cusum.csv``; its summary: ``--summary --out
benchmarks/results/reliability_plain.csv --candidate benchmarks/results/reliability_plain_candidate_cusum.csv``.
Stop 47's candidate (the hold of stop 46, 9e1fd42's library on 37f755e: 2869d41, branch ``flag-hold-raw``, from a
detached worktree): ``--groups small --rules ours`` on ``--seeds 3 4 5 6 7 8`` and then ``--again`` four times, on
``$(seq 37 45)`` and on ``$(seq 16 36)``, each then ``--again`` twice; ``--seeds 3 4 5 $(seq 16 25) --groups collusion
--rules ours`` and ``--seeds 3 --groups scale --rules ours``; joined in ``reliability_plain_candidate_hold.csv``, its
summary made as the CUSUM candidate's.

``--quick`` runs one seed of the K = 10 scenarios; ``--groups`` picks scenario groups (``small``,
``collusion``, ``scale``). ``--again`` measures the chosen rules once more where rows exist: ``ours`` samples
the coordinates it scores from OS entropy, so its K = 10 cells move from run to run by more than a goal's
margin; the summary averages every row of a cell (the committed ``small`` rows of ``ours``: five runs per
seed, ``--groups small --rules ours --again`` four times after the first).

What runs. Fashion-MNIST (offline, ``flwr_ppcdl.data``) and a small MLP (784-64-10); every client trains
one local epoch of SGD (lr 0.05, momentum 0.9, batch 32) on its own partition and replies through a
Message-API ClientApp over :class:`~flwr_ppcdl.app.grid.InProcessGrid`; every contender is a real
strategy (``benchmarks.reliability_common``): ``ours`` is ``ReliabilityWeightedFedAvg()`` with the library
defaults (the one-line swap), ``ours-server`` the same estimator with ``method="server_data"`` on
SERVER_RECORDS images no client holds (:func:`server_loss`), beside Flower's FedAvg, FedMedian,
FedTrimmedAvg, MultiKrum and Bulyan (told the true count), the legacy rule and the oracle (FedAvg over the
honest clients only). Groups:

* ``small`` -- K = 10 clients x 600 images, 10 rounds; IID and Dirichlet(0.3); nobody unreliable, 30 %
  flipped labels (y -> y + 1), 30 % random labels, 30 % sign-flipped updates scaled by 3
  (``g - 3 (w - g)``), an honest second data mode (30 % of the clients hold inverted images; the test set
  too, in the same proportion), and K = 20 with 50 % random uploads (Gaussian at each array's own scale);
* ``collusion`` -- K = 20 and 100 clients x 100 images, 5 rounds, IID: colluders that all send the same
  upload, three honest spreads from the honest mean in a fixed random direction (an omniscient adversary:
  the grid builds it from the honest replies of the round), 9/20, 45/100, 49/100, 50/100 and 60/100;
  recorded per round: the colluders' total weight over their FedAvg share, and every contender's
  aggregate distance from the honest mean in honest spreads (RMS distance of the honest uploads to it);
* ``scale`` -- K = 1,000 clients x 60 images, 3 rounds, IID: nobody, 10 % and 30 % flipped labels (the
  calibration at the actual K: the measured false-alarm rate; detection where the corruption does harm).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, MultiKrum  # noqa: E402

from benchmarks.contenders.truth_discovery import TruthDiscoveryFedAvg  # noqa: E402
from benchmarks.reliability_common import (  # noqa: E402
    append_rows,
    false_alarm_rate,
    goal_line,
    mean,
    provenance,
    read_rows,
    seed_means,
    seed_role,
    spread,
    weight_statistics,
)
from flwr_ppcdl.app.grid import InProcessGrid  # noqa: E402
from flwr_ppcdl.data import load_fashion_mnist, partition_indices  # noqa: E402
from flwr_ppcdl.reliability import ReliabilityOptions  # noqa: E402
from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg  # noqa: E402

FIELDS = ("group", "scenario", "partitioning", "clients", "bad", "seed", "seed_role", "rounds", "rule", "accuracy",
          "auroc", "bad_mass", "honest_kept", "min_honest", "false_alarms", "minority_share", "undecidable_rounds",
          "colluder_share", "distance", "seconds", "code_version", "packages", "overruled_bad", "overruled_honest")
RULES = ("fedavg", "oracle", "fedmedian", "fedtrimmedavg", "multikrum", "bulyan", "legacy", "ours", "ours-server",
         "ours-server-majority")
SERVER_RECORDS = 300
FLOWER = ("fedmedian", "fedtrimmedavg", "multikrum", "bulyan")
TEST = 2000


class Net(nn.Module):
    """A small MLP for 28 x 28 images."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


_DATA: dict[str, Any] = {}


def images(split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in _DATA:
        data = load_fashion_mnist(split=split)
        _DATA[split] = (np.asarray(data.features, dtype=np.float32).reshape(-1, 784) / 255.0, np.asarray(data.targets))
    return _DATA[split]


def clients(scenario: str, partitioning: str, k: int, per_client: int, bad: list[int], seed: int):
    """Every client's (inputs, labels) and the test set, with the scenario's data corruptions."""
    x, y = images("train")
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(y))[: k * per_client]
    parts = partition_indices(y[pool], k, partitioning, alpha=0.3, seed=seed)
    out = []
    for c, idx in enumerate(parts):
        xc, yc = x[pool][idx], y[pool][idx].copy()
        if c in bad and scenario == "flipped":
            yc = (yc + 1) % 10
        elif c in bad and scenario == "random-labels":
            yc = rng.integers(0, 10, len(yc))
        elif c in bad and scenario == "mode2":
            xc = 1.0 - xc
        out.append((torch.as_tensor(xc), torch.as_tensor(yc, dtype=torch.long)))
    xt, yt = images("test")
    t = rng.permutation(len(yt))[:TEST]
    xt = xt[t].copy()
    if scenario == "mode2":  # the test set holds both modes in the clients' proportion
        xt[: int(len(bad) / k * TEST)] = 1.0 - xt[: int(len(bad) / k * TEST)]
    return out, (torch.as_tensor(xt), torch.as_tensor(yt[t], dtype=torch.long)), t


def server_loss(scenario: str, k: int, per_client: int, nbad: int, seed: int, tested: np.ndarray,
                both_modes: bool = True):
    """``ours-server``'s loss: cross-entropy on SERVER_RECORDS training images no client holds (the pool is the
    first ``k * per_client`` of the clients' permutation), or where the clients hold every training image
    (K = 1,000) test images outside the evaluated ones (``tested``); both modes in the clients' proportion
    for mode2 (``ours-server-majority``, ``both_modes=False``: the majority's kind only)."""
    x, y = images("train")
    held = np.random.default_rng(seed).permutation(len(y))[k * per_client:]
    if held.size < SERVER_RECORDS:
        x, y = images("test")
        held = np.setdiff1d(np.arange(len(y)), tested)
    pick = np.random.default_rng(seed + 5_000).choice(held, SERVER_RECORDS, replace=False)
    xs, ys = torch.as_tensor(x[pick].copy()), torch.as_tensor(y[pick], dtype=torch.long)
    if scenario == "mode2" and both_modes:
        xs[: int(nbad / k * SERVER_RECORDS)] = 1.0 - xs[: int(nbad / k * SERVER_RECORDS)]
    net = Net()
    keys = list(net.state_dict())

    def loss(arrays: list[np.ndarray]) -> float:
        net.load_state_dict({key: torch.as_tensor(np.asarray(a)) for key, a in zip(keys, arrays, strict=True)})
        with torch.no_grad():
            return float(nn.functional.cross_entropy(net(xs), ys))

    return loss


def client_app(data: list[tuple[torch.Tensor, torch.Tensor]], scenario: str, bad: set[int], seed: int):
    """One local epoch of SGD from the global model; sign-flippers and random uploaders misbehave here."""

    def handle(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        x, y = data[pid]
        sent = msg.content["arrays"]
        net = Net()
        net.load_state_dict(sent.to_torch_state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        rnd = int(msg.content["config"].get("server-round", 0))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 100_003 + pid * 97 + rnd))
        for i in range(0, len(y), 32):
            b = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
        state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        if pid in bad and scenario == "sign-flip":
            state = {k: g - 3.0 * (state[k] - g) for k, g in ((k, sent[k].numpy()) for k in state)}
        elif pid in bad and scenario == "random-uploads":
            rng = np.random.default_rng(seed * 7919 + pid * 31 + rnd)
            state = {k: (rng.normal(size=v.shape) * float(np.std(v))).astype(v.dtype) for k, v in state.items()}
        content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in state.items()}),
                              "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content, reply_to=msg)

    return handle


class BenchmarkGrid(InProcessGrid):
    """The in-process grid, forgetting delivered messages (K = 1,000 x rounds of models otherwise stay in
    memory), and, with ``colluders``, an omniscient adversary: it replaces their replies by one shared
    upload three honest spreads from the honest mean, in a fixed random direction, and records every
    round's honest mean and spread and the aggregate it was sent."""

    def __init__(self, *args: Any, colluders: set[int] | None = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.colluders = colluders or set()
        self.seed = seed
        self.rounds: list[dict[str, Any]] = []

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.sent.clear()
        trains = [m for m in messages if m.metadata.message_type == "train"]
        if self.colluders and trains:
            sent = trains[0].content["arrays"]
            self.rounds.append({"sent": np.concatenate([sent[k].numpy().ravel() for k in sent])})
            self._collude(replies)
        return replies

    def _collude(self, replies: list[Message]) -> None:
        pid = {nid: int(ctx.node_config["partition-id"]) for nid, ctx in self.contexts.items()}
        honest = [r for r in replies if not r.has_error() and pid[r.metadata.src_node_id] not in self.colluders]
        keys = list(honest[0].content["arrays"].keys())
        flat = np.stack([np.concatenate([r.content["arrays"][k].numpy().ravel() for k in keys]) for r in honest])
        centre = flat.mean(axis=0)
        spread = float(np.sqrt(np.mean(np.sum((flat - centre) ** 2, axis=1))))
        direction = np.random.default_rng(self.seed + 424_242).normal(size=centre.shape)
        far = centre + 3.0 * spread * direction / np.linalg.norm(direction)
        self.rounds[-1].update(centre=centre, spread=spread)
        template = honest[0].content["arrays"]
        arrays, start = {}, 0
        for k in keys:
            a = template[k].numpy()
            arrays[k] = Array(far[start:start + a.size].reshape(a.shape).astype(a.dtype))
            start += a.size
        for r in replies:
            if pid[r.metadata.src_node_id] in self.colluders and not r.has_error():
                r.content["arrays"] = ArrayRecord(dict(arrays))


def strategy_for(rule: str, k: int, f: int, loss: Any = None) -> Any:
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": k, "min_train_nodes": k}
    if rule in ("fedavg", "oracle"):
        return FedAvg(**common)
    if rule == "fedmedian":
        return FedMedian(**common)
    if rule == "fedtrimmedavg":
        return FedTrimmedAvg(beta=0.2, **common)
    if rule == "multikrum":
        return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=max(1, k - f), **common)
    if rule == "bulyan":
        return Bulyan(num_malicious_nodes=f, **common) if k >= 4 * f + 3 else None
    if rule == "legacy":
        return TruthDiscoveryFedAvg(**common)
    if rule.startswith("ours-server"):  # the same estimator, its flags put to the server's records
        return ReliabilityWeightedFedAvg(method="server_data", server_loss_fn=loss, **common)
    if rule.startswith("ours:"):  # a variant of the defaults (benchmarks/reliability_tuning.py)
        return ReliabilityWeightedFedAvg(**common, **variant_options(rule))
    return ReliabilityWeightedFedAvg(**common)  # the one-line swap: library defaults


def variant_options(rule: str) -> dict[str, int | float | None]:
    """``"ours:memory_rate=0.8,false_alarm_rate=0.03"`` -> the option overrides (numbers, or None)."""
    out: dict[str, int | float | None] = {}
    for item in rule.partition(":")[2].split(","):
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"variant {rule!r}: expected name=value items after 'ours:', got {item!r}")
        value = value.strip()
        out[name.strip()] = None if value == "None" else int(value) if value.isdigit() else float(value)
    return out


def unreliable_nodes(cell: dict[str, Any]) -> list[int]:
    """The node ids of ``cell``'s harmful unreliable clients: the last ``bad`` (client ``c`` is node ``1001 + c``), none
    where they are an honest second data mode."""
    return [] if cell["scenario"] == "mode2" else [1001 + c for c in range(cell["clients"] - cell["bad"], cell["clients"])]


def run(cell: dict[str, Any], rule: str, made: list[Any] | None = None) -> dict[str, Any] | None:
    """One run of ``rule`` on ``cell``: accuracy and, for the reliability rules, their weight statistics; the strategy is
    appended to ``made`` where given (a caller that reads its history)."""
    k, nbad, seed, scenario = cell["clients"], cell["bad"], cell["seed"], cell["scenario"]
    bad = list(range(k - nbad, k))
    data, (xt, yt), tested = clients(scenario, cell["partitioning"], k, cell["per_client"], bad, seed)
    harm = set(unreliable_nodes(cell))  # an honest second mode is nobody's to exclude
    use = [c for c in range(k) if not (rule == "oracle" and 1001 + c in harm)]
    loss = (server_loss(scenario, k, cell["per_client"], nbad, seed, tested, both_modes=rule == "ours-server")
            if rule.startswith("ours-server") else None)
    strategy = strategy_for(rule, len(use), len(harm) if c_in(use, bad) else 0, loss)
    if strategy is None:
        return None
    if made is not None:
        made.append(strategy)
    colluders = set(bad) if scenario == "collude" else set()
    grid = BenchmarkGrid(client_app(data, scenario, set(bad), seed), node_ids=[1001 + c for c in use],
                         node_config=lambda i, nid: {"partition-id": use[i], "num-partitions": k},
                         colluders=colluders & set(use), seed=seed)
    torch.manual_seed(seed)
    net = Net()
    result = strategy.start(grid, ArrayRecord(net.state_dict()), num_rounds=cell["rounds"])
    net.load_state_dict(result.arrays.to_torch_state_dict())
    with torch.no_grad():
        accuracy = float((net(xt).argmax(1) == yt).float().mean())
    out: dict[str, Any] = {"accuracy": accuracy}
    flags = {1001 + c: 1001 + c in harm for c in use}
    minority = {1001 + c for c in bad} if scenario == "mode2" else None
    history = getattr(strategy, "reliability_history", None)
    if history:
        out.update(weight_statistics([r.weights for r in history], [r.fedavg_share for r in history], flags,
                                     [r.evidence for r in history], minority))
        out["undecidable_rounds"] = sum(r.undecidable is not None for r in history)
        if rule.startswith("ours-server"):  # flags the server's records overruled: of the unreliable (or the mode), and honest ones
            group = minority or {n for n in flags if flags[n]}
            flagged = sum(len(group & (set(r.down_weighted) | set(r.overruled))) for r in history)
            out["overruled_bad"] = sum(len(group & set(r.overruled)) for r in history) / flagged if flagged else math.nan
            out["overruled_honest"] = sum(len(set(r.overruled) - group) for r in history)
        if colluders:
            out["colluder_share"] = max(sum(r.weights[n] for n in r.weights if flags[n])
                                        / max(sum(r.fedavg_share[n] for n in r.weights if flags[n]), 1e-300) for r in history)
    elif isinstance(strategy, TruthDiscoveryFedAvg):
        out.update(weight_statistics(strategy.weights_history, strategy.shares_history, flags, None, minority))
    if colluders and grid.rounds:
        final = np.concatenate([result.arrays[key].numpy().ravel() for key in result.arrays])
        aggregates = [r["sent"] for r in grid.rounds[1:]] + [final]
        out["distance"] = max(float(np.linalg.norm(a - r["centre"])) / r["spread"] for a, r in zip(aggregates, grid.rounds, strict=True))
    return out


def measured(cell: dict[str, Any], rule: str, label: str | None = None) -> dict[str, Any]:
    """One timed run of ``rule`` on ``cell`` as a row of ``FIELDS`` (``label``: its rule name, default ``rule``), with
    the code and package versions."""
    t0 = time.perf_counter()
    got = run(cell, rule)
    return {**{f: math.nan for f in FIELDS}, **{k: cell[k] for k in ("group", "scenario", "partitioning", "clients", "bad", "seed")},
            "rounds": cell["rounds"], "seed_role": seed_role(cell["seed"]), "rule": label or rule, **provenance(), **(got or {}),
            "seconds": time.perf_counter() - t0}


def c_in(use: list[int], bad: list[int]) -> bool:
    return any(c in bad for c in use)


def _small(seed: int, quick: bool) -> list[dict[str, Any]]:
    out = [{"group": "small", "scenario": scenario, "partitioning": part, "clients": 10, "bad": bad, "per_client": 600,
            "rounds": 10, "seed": seed}
           for part in ("iid", "dirichlet")
           for scenario, bad in (("none", 0), ("flipped", 3), ("random-labels", 3), ("sign-flip", 3))]
    if not quick:
        out.append({"group": "small", "scenario": "mode2", "partitioning": "iid", "clients": 10, "bad": 3,
                    "per_client": 600, "rounds": 10, "seed": seed})
        out.append({"group": "small", "scenario": "random-uploads", "partitioning": "iid", "clients": 20, "bad": 10,
                    "per_client": 300, "rounds": 10, "seed": seed})
    return out


def _collusion(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [] if quick else [{"group": "collusion", "scenario": "collude", "partitioning": "iid", "clients": k, "bad": bad,
                              "per_client": 100, "rounds": 5, "seed": seed}
                             for k, bad in ((20, 9), (100, 45), (100, 49), (100, 50), (100, 60))]


def _scale(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [] if quick else [{"group": "scale", "scenario": "flipped" if bad else "none", "partitioning": "iid",
                              "clients": 1000, "bad": bad, "per_client": 60, "rounds": 3, "seed": seed}
                             for bad in (0, 100, 300)]


GROUPS: dict[str, Callable[[int, bool], list[dict[str, Any]]]] = {"small": _small, "collusion": _collusion, "scale": _scale}
"""Each group's cells for one seed (``quick``: the ``small`` group's eight corruption cells alone)."""


def cells(groups: list[str], seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    return [c for seed in seeds for name, made in GROUPS.items() if name in groups for c in made(seed, quick)]


def chosen_cells(groups: list[str], seeds: list[int], quick: bool, scenarios: list[str] | None) -> list[dict[str, Any]]:
    """:func:`cells`, only those of ``scenarios`` when given; a group or scenario that does not exist is refused, naming the
    ones that do (a misspelt name would otherwise run nothing)."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown groups {unknown}: the groups are {list(GROUPS)}")
    held = list(dict.fromkeys(c["scenario"] for c in cells(groups, [0], quick)))
    unknown = [s for s in scenarios or () if s not in held]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}: groups {groups}{' (--quick)' if quick else ''} hold {held}")
    return [c for c in cells(groups, seeds, quick) if not scenarios or c["scenario"] in scenarios]


SCALE_RULES = ("fedavg", "oracle", "fedmedian", "ours", "ours-server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_plain.csv"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--scenarios", nargs="+", help="run only these scenarios (e.g. none flipped)")
    parser.add_argument("--rules", nargs="+", help="measure only these contenders")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--again", action="store_true", help="measure once more where rows exist (the summary averages them)")
    parser.add_argument("--candidate", type=Path, help="with --summary: the goals with this file's rows in place of --out's for "
                        "every (cell, seed, rule) it measured (a screened candidate), then the paired change of ours per cell")
    args = parser.parse_args()
    if not args.summary:
        key = ("group", "scenario", "partitioning", "clients", "bad", "seed", "rule")
        done = set() if args.again else {tuple(r[k] for k in key) for r in read_rows(args.out)}
        for cell in chosen_cells(args.groups, args.seeds, args.quick, args.scenarios):
            rules = SCALE_RULES if cell["group"] == "scale" else RULES
            rules = [r for r in rules if r != "ours-server-majority" or cell["scenario"] == "mode2"]  # mode2's control
            rows, t_cell = [], time.perf_counter()
            for rule in rules:
                if (args.rules and rule not in args.rules) or tuple(str(cell[k]) for k in key[:-1]) + (rule,) in done:
                    continue
                rows.append(measured(cell, rule))
            if rows:
                append_rows(args.out, FIELDS, rows)
                print(f"{cell['group']:9} {cell['scenario']:14} {cell['partitioning'][:3]} K={cell['clients']} bad={cell['bad']} "
                      f"s{cell['seed']}: " + " ".join(f"{r['rule']}={r['accuracy']:.3f}" for r in rows)
                      + f" ({time.perf_counter() - t_cell:.0f}s)", flush=True)
    summary(args.out, args.candidate)


CELL = ("group", "scenario", "partitioning", "clients", "bad")


def summary(path: Path, candidate: Path | None = None) -> None:
    """Goals per scenario, reporting seeds, then fresh, study and tuning seeds, with one PASS/FAIL line per goal; with a
    ``candidate`` its rows replace the library's for every (cell, seed, rule) it measured, and each cell's paired
    change of ``ours`` (per seed, the mean of its runs) follows."""
    library = rows = read_rows(path)
    cand = [] if candidate is None else read_rows(candidate)
    if cand:
        replaced = {tuple(r[k] for k in (*CELL, "seed", "rule")) for r in cand}
        rows = [r for r in rows if tuple(r[k] for k in (*CELL, "seed", "rule")) not in replaced] + cand
    for role in ("report", "fresh", "study", "tune"):
        chosen = [r for r in rows if r["seed_role"] == role]
        if chosen:
            _table(chosen, role)
        if any(r["rule"] == "ours-server" for r in chosen):  # the goals again, for ours-server in the `ours` columns
            _table([r for r in chosen if r["rule"] != "ours"], role, me="ours-server")
        if chosen:
            _by_share(chosen)
    if cand:
        _paired(library, cand)


def _paired(library: list[dict[str, str]], cand: list[dict[str, str]]) -> None:
    """Per seed role and cell, ``ours``: the library's mean over the seeds the candidate measured, the candidate's, and the
    mean paired change +- its standard error (a seed's figure: the mean of its runs)."""
    def per_seed(rows: list[dict[str, str]], column: str) -> dict[tuple[str, ...], float]:
        return seed_means((r for r in rows if r["rule"] == "ours"), column, lambda r: (r["seed_role"], *(r[k] for k in CELL), r["seed"]))

    print(f"\n## paired: the candidate ({', '.join(sorted({r['code_version'] for r in cand}))}) against the library's ours rows")
    for column in ("accuracy", "auroc", "bad_mass", "false_alarms"):
        old, new = per_seed(library, column), per_seed(cand, column)
        for cell in sorted({key[:-1] for key in new if key in old}):
            pairs = [(old[key], new[key]) for key in new if key[:-1] == cell and key in old]
            diff = [b - a for a, b in pairs]
            error = spread(diff) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
            print(f"{column:12} {cell[0]:6} {' '.join(cell[1:]):40} {len(pairs):>3} | {mean(a for a, _ in pairs):6.3f} -> "
                  f"{mean(b for _, b in pairs):6.3f} ({mean(diff):+.3f} +- {error:.3f})")


def unreliable_share(seed: int, k: int = 10, nbad: int = 3, per_client: int = 600) -> float:
    """The unreliable clients' share of the data (their FedAvg weight) in a Dirichlet cell of the ``small`` group: the
    partition is the seed's, whatever the scenario."""
    data, _, _ = clients("none", "dirichlet", k, per_client, list(range(k - nbad, k)), seed)
    sizes = np.array([len(y) for _, y in data], dtype=np.float64)
    return float(sizes[k - nbad:].sum() / sizes.sum())


SHARE_SPLIT = 0.3
"""The unreliable clients' data share at which the Dirichlet cells are split (their count share is 0.3)."""


def _by_share(rows: list[dict[str, str]]) -> None:
    """The harmful Dirichlet cells of the ``small`` group split by the unreliable clients' share of the data: where three
    clients of ten hold more than 30 % of it, FedAvg's weights hand them that much unless they are found."""
    chosen = [r for r in rows if r["group"] == "small" and r["partitioning"] == "dirichlet" and r["scenario"] not in ("none", "mode2")]
    if not chosen:
        return
    print("\nDirichlet cells by the unreliable clients' share of the data (mean accuracy over the seeds of each row):")
    contenders = [c for c in ("fedavg", "oracle", *FLOWER, "legacy", "ours", "ours-server")
                  if any(r["rule"] == c and r["accuracy"] not in ("", "nan") for r in chosen)]
    shares = {seed: unreliable_share(seed) for seed in sorted({int(r["seed"]) for r in chosen})}
    for scenario in sorted({r["scenario"] for r in chosen}):
        for low in (True, False):
            seeds = {s for s in {int(r["seed"]) for r in chosen if r["scenario"] == scenario} if (shares[s] < SHARE_SPLIT) == low}
            if not seeds:
                continue
            got = {c: mean([float(r["accuracy"]) for r in chosen if r["scenario"] == scenario and r["rule"] == c
                            and int(r["seed"]) in seeds and r["accuracy"] not in ("", "nan")]) for c in contenders}
            label = f"share {'<' if low else '>='} {SHARE_SPLIT:g}"
            print(f"  {scenario:14} {label:11} {len(seeds):>3} seeds | " + "  ".join(f"{c} {got[c]:.3f}" for c in contenders))


def _table(rows: list[dict[str, str]], role: str, me: str = "ours") -> None:
    seeds = sorted({int(r["seed"]) for r in rows if r["rule"] == me})
    rows = [r for r in rows if int(r["seed"]) in seeds]
    if not rows:  # this contender was not run on these seeds (e.g. its rows deleted to be measured again)
        print(f"\n## {role} seeds: no rows of {me}")
        return
    print(f"\n## {role} seeds {seeds}, {me} (code {', '.join(sorted({r['code_version'] for r in rows if r['rule'] == me}))}; "
          f"the other contenders {', '.join(sorted({r['code_version'] for r in rows if r['rule'] != me}))}; {rows[0]['packages']})")
    runs = Counter((r["group"], r["scenario"], r["partitioning"], r["clients"], r["bad"], r["seed"]) for r in rows if r["rule"] == me)
    if runs:
        print(f"runs of {me} per cell and seed: {min(runs.values())}-{max(runs.values())} (every figure of a cell is the mean of its rows)")
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for r in rows:
        groups.setdefault((r["group"], r["scenario"], r["partitioning"], r["clients"], r["bad"]), {}).setdefault(r["rule"], []).append(r)
    print(f"{'group':9} {'scenario':14} {'split':5} {'K':>4} {'bad':>4} | {'FedAvg':>6} {'oracle':>6} {'bestFl':>6} {'legacy':>6} "
          f"{'ours':>6} | {'AUROC':>5} {'mass':>5} {'kept':>5} {'FA':>5} {'minor':>5} {'coll':>5} {'dist':>5} {'und':>3} | goals")
    tally: dict[str, list[bool]] = {}
    alarms: list[str] = []
    stated = ReliabilityOptions().false_alarm_rate
    for key, by in sorted(groups.items()):
        group, scenario, part, k, nbad = key
        if me not in by:  # a cell this contender was not run on
            continue
        mine = {r["seed"] for r in by[me]}  # every contender on the seeds this one was run on
        by = {rule: [r for r in got if r["seed"] in mine] for rule, got in by.items()}

        def v(rule: str, col: str = "accuracy", by: dict[str, list[dict[str, str]]] = by) -> float:
            return mean([float(r[col]) for r in by.get(rule, []) if r[col] not in ("", "nan")])

        fa, orc, ours = v("fedavg"), v("oracle"), v(me)
        flower = [v(f) for f in FLOWER if by.get(f)]
        best = max([x for x in flower if math.isfinite(x)] or [math.nan])
        goals: list[tuple[str, bool]] = []
        if scenario == "none":
            goals.append(("honest kept >= .95 where nobody is unreliable", v(me, "honest_kept") >= 0.95))
            rate, low, high = false_alarm_rate(by[me])
            goals.append(("false-alarm rate within 2x of the stated", stated / 2 <= rate <= 2 * stated))
            alarms.append(f"{part[:5]} K={k} {rate:.3f} [{low:.3f}, {high:.3f}]")
        elif scenario == "mode2":
            goals.append(("second data mode keeps >= 0.5x its share", v(me, "minority_share") >= 0.5))
        elif scenario == "random-uploads":
            goals.append(("50 % random uploads found (AUROC >= .95)", v(me, "auroc") >= 0.95))
        elif scenario == "collude":
            goals.append(("colluders within their FedAvg share", v(me, "colluder_share") <= 1.0))
            if int(nbad) * 2 < int(k):
                goals.append(("aggregate within 1 honest spread", v(me, "distance") <= 1.0))
        elif orc - fa >= 0.02:
            goals.append(("recovers >= 90 % or >= best Flower rule", (ours - fa) / (orc - fa) >= 0.9 or ours >= best - 0.005))
            goals.append(("AUROC >= .95 where harmful", v(me, "auroc") >= 0.95))
        for name, ok in goals:
            tally.setdefault(name, []).append(ok)
        counted = [r for r in by.get(me, []) if r["undecidable_rounds"] not in ("", "nan")]  # over the seeds, per run
        undecided = round(sum(float(r["undecidable_rounds"]) for r in counted) * len({r["seed"] for r in counted}) / max(len(counted), 1))
        print(f"{group:9} {scenario:14} {part[:5]:5} {k:>4} {nbad:>4} | {fa:>6.3f} {orc:>6.3f} {best:>6.3f} {v('legacy'):>6.3f} "
              f"{ours:>6.3f} | {v(me, 'auroc'):>5.2f} {v(me, 'bad_mass'):>5.2f} {v(me, 'honest_kept'):>5.2f} "
              f"{v(me, 'false_alarms'):>5.3f} {v(me, 'minority_share'):>5.2f} {v(me, 'colluder_share'):>5.2f} "
              f"{v(me, 'distance'):>5.2f} {undecided:>3} | "
              + (f"overruled {v(me, 'overruled_bad'):.3f} / honest {v(me, 'overruled_honest'):.1f} | " if me == "ours-server" else "")
              + " ".join(n.split(" ")[0] if ok else "FAIL:" + n.split(" ")[0]
                                                                            for n, ok in goals))
    print()
    for name, oks in tally.items():
        print(goal_line(name, sum(oks), len(oks), f"(stated {stated}; {', '.join(alarms)})" if name.startswith("false") else ""))
    dist = {r["rule"]: [] for r in rows if r["scenario"] == "collude"}
    for r in rows:
        if r["scenario"] == "collude" and r["distance"] not in ("", "nan") and int(r["bad"]) * 2 < int(r["clients"]):
            dist[r["rule"]].append(float(r["distance"]))
    if dist:
        print("aggregate distance from the honest mean (honest spreads, worst round, colluding minorities): "
              + ", ".join(f"{rule} {mean(d):.2f}" for rule, d in sorted(dist.items()) if d))
    control = [float(r["minority_share"]) for r in rows if r["rule"] == "ours-server-majority" and r["minority_share"] not in ("", "nan")]
    if control and me == "ours-server":
        print(f"second data mode with records of the majority's kind only (ours-server-majority, {len(control)} runs): "
              f"{mean(control):.2f}x its share")


if __name__ == "__main__":
    main()
