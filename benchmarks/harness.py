"""One benchmark harness: every contender on the same partitions, seeds and corruptions.

Run:
    PYTHONPATH=. .venv/bin/python benchmarks/harness.py --profile quick            # CI, ~1 minute
    PYTHONPATH=. .venv/bin/python benchmarks/harness.py --profile full --out benchmarks/results
    PYTHONPATH=. .venv/bin/python benchmarks/make_readme_tables.py                 # tables + plots

Every cell (scenario x contender) appends one row to ``<out>/<profile>.csv`` as soon as it is
measured, and a re-run skips the rows already there (delete the CSV to start again).

Contenders (all share ``flwr_ppcdl.app.experiment.load_participant``: same partitions, seeds and corruptions; all train
a linear head on the same frozen, public feature map ``experiment.make_model(settings)[:-1]``):

* ``ppcdl-reliability``  functional-mechanism (FM) clients + ReliabilityWeightedFedAvg (this project);
* ``fm-fedavg`` / ``fm-fedmedian`` / ``fm-fedtrimmedavg`` (beta 0.2) / ``fm-multikrum`` (told the true
  number of unreliable participants: its best case): the same private clients, Flower's rules;
* ``fm-oracle``: the same private clients, FedAvg over the reliable participants only;
* ``fm-noiseless-fedavg``: epsilon = inf (noise-free FM / Taylor head), FedAvg;
* ``sgd-fedavg``: non-private clients, plain SGD on the exact softmax / squared loss, FedAvg;
* ``centralized``: non-private softmax regression / OLS on the reliable records (``flwr_ppcdl.app.experiment.reference_metrics``);
* ``flower-dp-fedavg``: ``DifferentialPrivacyClientSideFixedClipping`` around FedAvg, clients with
  ``fixedclipping_mod`` - CLIENT-level (epsilon, delta) over all rounds (RDP of the Gaussian mechanism,
  every client sampled every round);
* ``opacus-dpsgd-fedavg``: Opacus DP-SGD clients (Poisson batches, RDP accountant), FedAvg -
  RECORD-level (epsilon, delta=1e-5) accounted over all local steps of all rounds; tuned over a small
  lr x clip grid on the test set (a best case for Opacus; every grid point is in the CSV).

The epsilon of each contender means something different; the CSV's ``privacy`` column says what.
Timings: ``client_s_per_round`` (mean seconds a client spends in its ClientApp per round, summed over
all its work), ``agg_s_per_round`` (server ``aggregate_train``), ``wall_s_per_round`` (whole round,
server evaluation included) and the hardware they were measured on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import FedAvg, Strategy  # noqa: E402

import flwr_ppcdl.app.server_app as server_app  # noqa: E402
from benchmarks._provenance import git_commit  # noqa: E402
from flwr_ppcdl.app.client_app import app as fm_client_app  # noqa: E402
from flwr_ppcdl.app.experiment import (  # noqa: E402
    evaluate_model,
    load_participant,
    make_model,
    reference_metrics,
    server_splits,
    split_data,
)
from flwr_ppcdl.app.factory import make_strategy  # noqa: E402
from flwr_ppcdl.app.grid import InProcessGrid  # noqa: E402
from flwr_ppcdl.app.settings import DATASETS, RunSettings  # noqa: E402

DELTA = 1e-5
# RDP orders: Opacus's defaults stop at 63, which cannot certify eps < log(1/delta)/62 ~ 0.19
RDP_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512, 1024, 2048, 4096]

PRIVACY_FM = "record-level pure eps per participant, whole run (one FM release)"
PRIVACY_FM_GAUSSIAN = "record-level (eps, delta) per participant, whole run (one Gaussian FM release, rho-zCDP)"
PRIVACY_OPACUS = "record-level (eps, delta=1e-5), RDP over all local steps of all rounds"
PRIVACY_FLOWER = "CLIENT-level (eps, delta=1e-5), RDP over all rounds (Gaussian, q=1)"
PRIVACY_NONE = "none (non-private)"


# --------------------------------------------------------------------------------------------------
# Scenario and result row
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    dataset: str = "fashion-mnist"
    kind: str = "flipped-labels"
    fraction: float = 0.3
    epsilon: float = 1.0
    partitioning: str = "iid"
    alpha: float = 0.3
    seed: int = 0
    partitions: int = 10
    rounds: int = 20
    local_epochs: int = 1  # SGD / DP-SGD contenders (FM clients use their own local-steps)
    tag: str = "main"

    @property
    def task(self) -> str:
        return DATASETS[self.dataset].task

    @property
    def metric(self) -> str:
        return DATASETS[self.dataset].metric

    def run_config(self, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "dataset": self.dataset, "task": self.task, "num-partitions": self.partitions,
            "num-rounds": self.rounds, "epsilon": self.epsilon, "unreliable-fraction": self.fraction,
            "unreliable-kind": self.kind, "partitioning": self.partitioning,
            "dirichlet-alpha": self.alpha, "seed": self.seed, "plot": False,
            "result-dir": "/tmp/flwr_ppcdl_harness/run",
        }
        if DATASET_DIR:
            cfg["dataset-dir"] = DATASET_DIR
        cfg.update(extra)
        return cfg

    def settings(self, **extra: Any) -> RunSettings:
        return RunSettings.from_config(self.run_config(**extra))


ROW_FIELDS = (
    "profile", "tag", "dataset", "metric", "unreliable_kind", "unreliable_fraction", "partitioning",
    "dirichlet_alpha", "seed", "partitions", "rounds", "local_epochs", "epsilon_target", "contender",
    "value", "epsilon_spent", "delta", "privacy", "weight_on_unreliable", "auroc", "client_s_per_round",
    "client_s_first_round", "agg_s_per_round", "client_cpu_s_per_round", "agg_cpu_s_per_round", "wall_s_per_round", "peak_rss_mb", "peak_rss_growth_mb", "hyper", "tuning_best",
    "device", "hardware", "code_version", "error",
)


def base_row(profile: str, scn: Scenario, contender: str) -> dict[str, Any]:
    return {
        "profile": profile, "tag": scn.tag, "dataset": scn.dataset, "metric": scn.metric,
        "unreliable_kind": scn.kind, "unreliable_fraction": scn.fraction, "partitioning": scn.partitioning,
        "dirichlet_alpha": scn.alpha if scn.partitioning == "dirichlet" else "", "seed": scn.seed,
        "partitions": scn.partitions, "rounds": scn.rounds, "local_epochs": scn.local_epochs,
        "epsilon_target": scn.epsilon, "contender": contender, "device": DEVICE.type,
        "hardware": hardware(), "code_version": code_version(), "error": "",
    }


@lru_cache(maxsize=1)
def code_version() -> str:
    """Commit of the library code measured (+dirty when flwr_ppcdl/ has uncommitted changes)."""
    return git_commit(["flwr_ppcdl"])


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"
    if DEVICE.type == "cuda":
        desc += f", GPU {torch.cuda.get_device_name(DEVICE)}"
    return desc


DEVICE = torch.device("cpu")
SINGLE_NODE = False  # memory profile: one participant per process (its peak RSS = one client + server)
DATASET_DIR = ""  # --dataset-dir: Fashion-MNIST idx files elsewhere than the run config's default


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------------
# Timing wrappers shared by every contender
# --------------------------------------------------------------------------------------------------


class TimedApp:
    """Calls a ClientApp and records seconds per (round, node)."""

    def __init__(self, app: Callable[[Message, Context], Message]) -> None:
        self.app = app
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def __call__(self, msg: Message, ctx: Context) -> Message:
        t0, c0 = time.perf_counter(), time.thread_time()
        reply = self.app(msg, ctx)
        self.seconds.append(time.perf_counter() - t0)
        self.cpu_seconds.append(time.thread_time() - c0)
        return reply


class TimedStrategy(Strategy):
    """Delegates to ``inner``; times ``aggregate_train`` (attributes fall through to ``inner``)."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.agg_seconds: list[float] = []
        self.agg_cpu_seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        t0, c0 = time.perf_counter(), time.thread_time()
        out = self.inner.aggregate_train(server_round, replies)
        self.agg_seconds.append(time.perf_counter() - t0)
        self.agg_cpu_seconds.append(time.thread_time() - c0)
        return out

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        return None


def auroc(scores_unreliable: list[float], scores_reliable: list[float]) -> float:
    """P(weight of an unreliable participant < weight of a reliable one); ties count 1/2."""
    if not scores_unreliable or not scores_reliable:
        return math.nan
    wins = 0.0
    for u in scores_unreliable:
        for r in scores_reliable:
            wins += 1.0 if u < r else (0.5 if u == r else 0.0)
    return wins / (len(scores_unreliable) * len(scores_reliable))


def timing_fields(app: TimedApp, strat: TimedStrategy, nodes: int, rounds: int, wall: float) -> dict[str, Any]:
    secs = app.seconds
    return {
        "client_s_per_round": sum(secs) / max(1, nodes * rounds),
        "client_s_first_round": float(np.mean(secs[:nodes])) if secs else math.nan,
        "agg_s_per_round": float(np.mean(strat.agg_seconds)) if strat.agg_seconds else math.nan,
        "client_cpu_s_per_round": sum(app.cpu_seconds) / max(1, nodes * rounds),
        "agg_cpu_s_per_round": float(np.mean(strat.agg_cpu_seconds)) if strat.agg_cpu_seconds else math.nan,
        "wall_s_per_round": wall / max(1, rounds),
    }


# --------------------------------------------------------------------------------------------------
# Contenders 1-3: the project's FM clients via the library's own server logic (run_server)
# --------------------------------------------------------------------------------------------------


def run_fm(scn: Scenario, strategy: str, *, oracle: bool = False, epsilon: float | None = None,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """FM clients (``flwr_ppcdl.app.client_app.app``) + ``run_server`` over an in-process grid."""
    cfg = scn.run_config(strategy=strategy, **(extra or {}))
    if epsilon is not None:
        cfg["epsilon"] = epsilon
    settings = RunSettings.from_config(cfg)
    unreliable = set(settings.unreliable_ids)
    parts = [p for p in range(scn.partitions) if not (oracle and p in unreliable)]
    if SINGLE_NODE:
        parts, oracle = parts[:1], True
    if oracle:
        cfg["min-nodes"] = len(parts)
        settings = RunSettings.from_config(cfg)
    app = TimedApp(fm_client_app)
    grid = InProcessGrid(
        app, node_ids=[1001 + p for p in parts],
        node_config=lambda i, nid: {"partition-id": parts[i], "num-partitions": scn.partitions},
        run_config=cfg,
    )
    holder = {"s": TimedStrategy(make_strategy(settings, server_splits(settings)[1]))}
    t0 = time.perf_counter()
    run = server_app.run_server(grid, settings, strategy=holder["s"])
    wall = time.perf_counter() - t0
    res = json.loads(run.to_json())
    flags = {p["node_id"]: p["unreliable"] for p in res["participants"]}
    last = res["rounds"][-1].get("weights") or {} if res["rounds"] else {}
    privacy = PRIVACY_FM_GAUSSIAN if settings.noise == "gaussian" else PRIVACY_FM
    out: dict[str, Any] = {
        "value": float(res["final_metrics"].get(scn.metric, math.nan)),
        "epsilon_spent": max((p["epsilon"] for p in res["participants"]), default=math.nan),
        "delta": max((p.get("delta", 0.0) for p in res["participants"]), default=0.0),
        "privacy": privacy if math.isfinite(settings.epsilon) else PRIVACY_NONE + " (eps=inf FM/Taylor head)",
        "reference": float(res["reference"].get(scn.metric, math.nan)),
        **timing_fields(app, holder["s"], len(parts), scn.rounds, wall),
    }
    if last and any(flags.get(n) for n in last) and strategy != "fedavg":
        out["weight_on_unreliable"] = sum(w for n, w in last.items() if flags.get(n))
        out["auroc"] = auroc([w for n, w in last.items() if flags.get(n)], [w for n, w in last.items() if not flags.get(n)])
    out["hyper"] = json.dumps({"solver": settings.solver, "local-steps": settings.local_steps, "body": settings.body,
                               "protocol": getattr(settings, "protocol", "parameters"), "noise": settings.noise,
                               "delta": settings.delta if settings.noise == "gaussian" else 0.0,
                               "decoder": settings.decoder})
    return out


# --------------------------------------------------------------------------------------------------
# Contenders 3-5: own small ClientApps training the same linear head on the same features
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _features(settings: RunSettings, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Participant ``pid``'s (possibly corrupted) records through the frozen public body."""
    p = load_participant(settings, pid)
    body = make_model(settings)[:-1]
    with torch.no_grad():
        h = body(p.inputs).float()
    y = p.targets.float().reshape(-1, 1) if settings.task == "regression" else p.targets
    return h, y


@lru_cache(maxsize=16)
def _test_features(settings: RunSettings) -> tuple[torch.Tensor, torch.Tensor]:
    _, test = split_data(settings)
    body = make_model(settings)[:-1]
    with torch.no_grad():
        return body(torch.as_tensor(np.asarray(test.features), dtype=torch.float32)).float(), torch.as_tensor(np.asarray(test.targets))


def _new_head(settings: RunSettings) -> torch.nn.Linear:
    h, _ = _features(settings, 0)
    head = torch.nn.Linear(h.shape[1], 1 if settings.task == "regression" else 10)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return head


def _loss(settings: RunSettings, reduction: str = "mean") -> torch.nn.Module:
    if settings.task == "regression":
        return torch.nn.MSELoss(reduction=reduction)
    return torch.nn.CrossEntropyLoss(reduction=reduction)


def _evaluate_head(settings: RunSettings, arrays: ArrayRecord) -> dict[str, float]:
    model = make_model(settings)
    state = arrays.to_torch_state_dict()
    with torch.no_grad():
        model[-1].weight.copy_(state["weight"])
        model[-1].bias.copy_(state["bias"])
    _, test = split_data(settings)
    return evaluate_model(model, test, settings)


def sgd_local(head: torch.nn.Linear, h: torch.Tensor, y: torch.Tensor, settings: RunSettings, *,
              lr: float, epochs: int, batch: int, seed: int) -> int:
    """Plain (non-private) minibatch SGD; returns the number of steps."""
    head = head.to(DEVICE)
    h, y = h.to(DEVICE), y.to(DEVICE)
    opt = torch.optim.SGD(head.parameters(), lr=lr)
    loss_fn = _loss(settings)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(len(h), generator=gen).to(DEVICE)
        for i in range(0, len(h), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(head(h[idx]), y[idx]).backward()
            opt.step()
            steps += 1
    head.to("cpu")
    return steps


@dataclass
class OpacusPlan:
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    lr: float
    clip: float
    batch: int
    accountants: dict[int, Any] = field(default_factory=dict)


def plan_opacus(settings: RunSettings, scn: Scenario, *, epsilon: float, lr: float, clip: float, batch: int) -> OpacusPlan:
    """Calibrate the noise multiplier to (epsilon, DELTA) over ALL local steps of ALL rounds
    (the largest partition's sampling rate; smaller partitions sample at a higher rate and are
    accounted with their own rate, see ``epsilon_spent``)."""
    from opacus.accountants.utils import get_noise_multiplier

    n_min = min(len(_features(settings, p)[0]) for p in range(scn.partitions))
    q = min(1.0, batch / n_min)
    steps_per_round = max(1, round(scn.local_epochs / q))
    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=DELTA, sample_rate=q,
                                 steps=steps_per_round * scn.rounds, accountant="rdp", epsilon_tolerance=0.005,
                                 alphas=RDP_ALPHAS)
    return OpacusPlan(float(sigma), q, steps_per_round, lr, clip, batch)


def opacus_local(head: torch.nn.Linear, h: torch.Tensor, y: torch.Tensor, settings: RunSettings,
                 plan: OpacusPlan, pid: int, seed: int) -> int:
    """DP-SGD with Opacus: Poisson-sampled batches at ``plan.sample_rate`` for
    ``plan.steps_per_round`` steps, per-sample clipping at ``plan.clip``, noise ``plan.noise_multiplier``."""
    from opacus import GradSampleModule
    from opacus.accountants import RDPAccountant
    from opacus.optimizers import DPOptimizer

    head = head.to(DEVICE)
    h, y = h.to(DEVICE), y.to(DEVICE)
    q_own = min(1.0, plan.batch / len(h))
    gsm = GradSampleModule(head, loss_reduction="sum")
    opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=plan.lr), noise_multiplier=plan.noise_multiplier,
                      max_grad_norm=plan.clip, expected_batch_size=max(1, round(q_own * len(h))), loss_reduction="mean")
    loss_fn = _loss(settings, reduction="sum")
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q = q_own  # every record is in a batch with probability q (Poisson sampling)
    for _ in range(plan.steps_per_round):
        mask = torch.rand(len(h), generator=gen, device=DEVICE) < q
        if not mask.any():  # an empty batch: skipped (still accounted: conservative)
            continue
        opt.zero_grad()
        loss_fn(gsm(h[mask]), y[mask]).backward()
        opt.step()
    acc = plan.accountants.setdefault(pid, RDPAccountant())
    acc.history.append((plan.noise_multiplier, q, plan.steps_per_round))
    gsm._close()
    head.to("cpu")
    return plan.steps_per_round


def run_head_fed(scn: Scenario, local: Callable[..., int], *, mods: list | None = None,
                 wrap: Callable[[FedAvg], Strategy] | None = None, uniform: bool = False) -> dict[str, Any]:
    """A Message-API FedAvg run over ``InProcessGrid`` with a small ClientApp training the head."""
    settings = scn.settings(strategy="fedavg")
    app = ClientApp(mods=mods or [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        h, y = _features(settings, pid)
        head = _new_head(settings)
        head.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        rnd = int(msg.content["config"].get("server-round", 0))
        local(head, h, y, settings, pid=pid, seed=scn.seed * 1_000_003 + pid * 1009 + rnd)
        metrics = {"num-examples": float(len(h)), "dp-weight": 1.0}
        return Message(RecordDict({"arrays": ArrayRecord(head.state_dict()), "metrics": MetricRecord(metrics)}), reply_to=msg)

    timed = TimedApp(app)
    nodes = 1 if SINGLE_NODE else scn.partitions
    grid = InProcessGrid(timed, num_nodes=nodes, run_config=scn.run_config(strategy="fedavg"))
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes,
                    min_available_nodes=nodes, weighted_by_key="dp-weight" if uniform else "num-examples")
    strat = TimedStrategy(wrap(fedavg) if wrap else fedavg)
    final: dict[str, float] = {}

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        final.clear()
        final.update(_evaluate_head(settings, arrays))
        return MetricRecord(dict(final))

    t0 = time.perf_counter()
    strat.start(grid, ArrayRecord(_new_head(settings).state_dict()), num_rounds=scn.rounds,
                evaluate_fn=evaluate_fn)
    wall = time.perf_counter() - t0
    return {"value": float(final.get(scn.metric, math.nan)), **timing_fields(timed, strat, nodes, scn.rounds, wall)}


def gaussian_rdp_epsilon(sigma: float, rounds: int, delta: float = DELTA) -> float:
    """(eps, delta) of ``rounds`` compositions of the Gaussian mechanism (sensitivity 1, noise
    sigma, no subsampling) via RDP: eps = min_a rounds*a/(2 sigma^2) + log(1/delta)/(a-1)."""
    alphas = np.concatenate([np.linspace(1.01, 10, 500), np.linspace(10, 1e4, 5000)])
    return float(np.min(rounds * alphas / (2 * sigma**2) + math.log(1 / delta) / (alphas - 1)))


def flower_dp_sigma(epsilon: float, rounds: int) -> float:
    lo, hi = 1e-3, 1e4
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if gaussian_rdp_epsilon(mid, rounds) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


_REFERENCE: dict[tuple[Any, ...], dict[str, float]] = {}


def cached_reference_metrics(settings: RunSettings) -> dict[str, float]:
    """``reference_metrics`` (the non-private oracle fit of ``centralized``, ~1 min on Fashion-MNIST here)
    computed once per setting it depends on: the data, body, partitions, corruption and split."""
    key = tuple(getattr(settings, f) for f in (
        "dataset", "feature_set", "body", "dataset_dir", "num_partitions", "partitioning", "dirichlet_alpha", "seed",
        "unreliable_fraction", "unreliable_kind", "feature_noise_std", "test_fraction", "reliability_method",
        "server_validation"))
    if key not in _REFERENCE:
        _REFERENCE[key] = reference_metrics(settings)
    return _REFERENCE[key]


# --------------------------------------------------------------------------------------------------
# Contender functions: scenario -> list of (contender name, result fields)
# --------------------------------------------------------------------------------------------------


def c_fm(strategy: str, protocol: str = "", *, label: str = "", overrides: dict[str, Any] | None = None,
         **kw: Any) -> Callable[[Scenario, Profile], list[tuple[str, dict[str, Any]]]]:
    """FM clients with ``strategy``; ``protocol="statistics"``: the server sums the released
    statistics (``SummedStatisticsFedAvg``, reliability-weighted for "reliability"). ``overrides``:
    run-config keys of this contender (e.g. ``{"noise": "laplace"}``); ``label`` names it."""
    name = {"reliability": "ppcdl-reliability"}.get(strategy, f"fm-{strategy}")
    if kw.get("oracle"):
        name = "fm-oracle"
    if kw.get("epsilon") == math.inf:
        name = "fm-noiseless-fedavg"
    if protocol == "statistics":
        name = {"reliability": "ppcdl-statistics-reliability"}.get(strategy, f"fm-statistics-{strategy}")
        if kw.get("oracle"):
            name = "fm-statistics-oracle"
    name = label or name

    def run(scn: Scenario, prof: Profile) -> list[tuple[str, dict[str, Any]]]:
        if kw.get("oracle") and scn.fraction == 0:
            return []  # identical to fm-fedavg
        # the parameter protocol unless asked otherwise (the App's default "auto" would pick statistics)
        extra = {**prof.fm_extra, "protocol": protocol or "parameters", **(overrides or {})}
        return [(name, run_fm(scn, strategy, extra=extra, **kw))]

    run.__name__ = name
    return run


def c_centralized(scn: Scenario, prof: Profile) -> list[tuple[str, dict[str, Any]]]:
    settings = scn.settings(strategy="fedavg", **prof.fm_extra)
    t0 = time.perf_counter()
    value = cached_reference_metrics(settings)[scn.metric]
    return [("centralized", {"value": value, "privacy": PRIVACY_NONE + ", reliable records only",
                             "wall_s_per_round": time.perf_counter() - t0,
                             "hyper": json.dumps({"model": "sklearn LogisticRegression" if scn.task == "classification" else "OLS"})})]


def _tuned(name: str, grid: list[dict[str, Any]], runner: Callable[[dict[str, Any]], dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for hp in grid:
        try:
            r = runner(hp)
        except Exception as exc:  # noqa: BLE001 - a failed grid point is a row with its error
            r = {"value": math.nan, "error": f"{type(exc).__name__}: {exc}"[:300]}
        r["hyper"] = json.dumps(hp)
        rows.append(r)
    finite = [r for r in rows if math.isfinite(r["value"])]
    best = max(finite, key=lambda r: r["value"]) if finite else rows[0]
    out = []
    for r in rows:
        r["tuning_best"] = r is best
        out.append((name if r is best else name + "-grid", r))
    return out


def c_sgd(scn: Scenario, prof: Profile) -> list[tuple[str, dict[str, Any]]]:
    def runner(hp: dict[str, Any]) -> dict[str, Any]:
        def local(head, h, y, settings, *, pid, seed):
            return sgd_local(head, h, y, settings, lr=hp["lr"], epochs=scn.local_epochs, batch=hp["batch"], seed=seed)

        r = run_head_fed(scn, local)
        r.update(privacy=PRIVACY_NONE, delta=0.0, epsilon_spent=math.inf)
        return r

    return _tuned("sgd-fedavg", [{"lr": lr, "batch": 64} for lr in prof.sgd_lrs], runner)


def c_opacus(scn: Scenario, prof: Profile) -> list[tuple[str, dict[str, Any]]]:
    try:
        import opacus  # noqa: F401
    except ImportError:
        return [("opacus-dpsgd-fedavg", {"value": math.nan, "error": "opacus not installed (pip install 'flwr-ppcdl[bench]')"})]
    settings = scn.settings(strategy="fedavg")

    def runner(hp: dict[str, Any]) -> dict[str, Any]:
        plan = plan_opacus(settings, scn, epsilon=scn.epsilon, lr=hp["lr"], clip=hp["clip"], batch=hp["batch"])

        def local(head, h, y, settings, *, pid, seed):
            return opacus_local(head, h, y, settings, plan, pid, seed)

        r = run_head_fed(scn, local)
        spent = max(acc.get_epsilon(DELTA, alphas=RDP_ALPHAS) for acc in plan.accountants.values())
        r.update(privacy=PRIVACY_OPACUS, delta=DELTA, epsilon_spent=spent)
        hp.update(noise_multiplier=round(plan.noise_multiplier, 4), steps_per_round=plan.steps_per_round,
                  sample_rate=round(plan.sample_rate, 5))
        return r

    grid = [{"lr": lr, "clip": c, "batch": 256} for lr in prof.opacus_lrs for c in prof.opacus_clips]
    if prof.opacus_reduced is not None and (scn.tag not in ("main", "gauss") or scn.seed != 0):
        # the full grid is searched on the seed-0 "main" scenarios; elsewhere its best points are reused
        grid = [{"lr": lr, "clip": c, "batch": 256} for lr, c in prof.opacus_reduced[scn.dataset == "census2000"]]
    return _tuned("opacus-dpsgd-fedavg", grid, runner)


def c_flower_dp(scn: Scenario, prof: Profile) -> list[tuple[str, dict[str, Any]]]:
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

    sigma = flower_dp_sigma(scn.epsilon, scn.rounds)

    def runner(hp: dict[str, Any]) -> dict[str, Any]:
        def local(head, h, y, settings, *, pid, seed):
            return sgd_local(head, h, y, settings, lr=hp["lr"], epochs=scn.local_epochs, batch=64, seed=seed)

        def wrap(fedavg: FedAvg) -> Strategy:
            return DifferentialPrivacyClientSideFixedClipping(fedavg, noise_multiplier=sigma, clipping_norm=hp["clip"],
                                                              num_sampled_clients=scn.partitions)

        r = run_head_fed(scn, local, mods=[fixedclipping_mod], wrap=wrap, uniform=True)
        r.update(privacy=PRIVACY_FLOWER, delta=DELTA, epsilon_spent=gaussian_rdp_epsilon(sigma, scn.rounds))
        hp["noise_multiplier"] = round(sigma, 4)
        return r

    return _tuned("flower-dp-fedavg", [{"lr": lr, "clip": c} for lr in prof.flower_lrs for c in prof.flower_clips], runner)


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------


@dataclass
class Profile:
    name: str
    scenarios: list[Scenario]
    contenders: list[Callable[[Scenario, Profile], list[tuple[str, dict[str, Any]]]]]
    fm_extra: dict[str, Any] = field(default_factory=dict)
    sgd_lrs: tuple[float, ...] = (0.5,)
    opacus_lrs: tuple[float, ...] = (2.0,)
    opacus_clips: tuple[float, ...] = (1.0,)
    flower_lrs: tuple[float, ...] = (0.5,)
    flower_clips: tuple[float, ...] = (0.5,)
    contender_filter: Callable[[Scenario, str], bool] | None = None
    # (fashion grid, census grid) of (lr, clip) used outside the seed-0 "main" scenarios; None = full grid
    opacus_reduced: tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]] | None = None


ALL_FM = [c_fm("reliability"), c_fm("fedavg"), c_fm("fedmedian"), c_fm("fedtrimmedavg"), c_fm("multikrum"),
          c_fm("fedavg", oracle=True), c_fm("fedavg", epsilon=math.inf),
          c_fm("reliability", protocol="statistics"), c_fm("fedavg", protocol="statistics"),
          c_fm("fedavg", protocol="statistics", oracle=True)]


def quick_profile() -> Profile:
    scn = Scenario(dataset="digits", kind="flipped-labels", fraction=0.25, partitions=4, rounds=3, tag="quick")
    return Profile("quick", [scn], [c_fm("reliability"), c_fm("fedavg"), c_fm("reliability", protocol="statistics"),
                                    c_centralized, c_sgd, c_opacus, c_flower_dp],
                   fm_extra={"local-steps": 5})


def full_profile() -> Profile:
    """Priority order: Fashion-MNIST eps=1 0 %/30 % flipped (all contenders), census, then more."""
    scns: list[Scenario] = []
    for frac in (0.0, 0.3):
        scns.append(Scenario("fashion-mnist", "flipped-labels", frac, 1.0, tag="main"))
    for frac in (0.0, 0.3):
        scns.append(Scenario("census2000", "random-targets", frac, 1.0, tag="main"))
    for frac in (0.1, 0.5):
        scns.append(Scenario("fashion-mnist", "flipped-labels", frac, 1.0, tag="fraction"))
    for kind in ("random-labels", "feature-noise"):
        scns.append(Scenario("fashion-mnist", kind, 0.3, 1.0, tag="kind"))
    scns.append(Scenario("fashion-mnist", "flipped-labels", 0.3, 1.0, partitioning="dirichlet", tag="dirichlet"))
    for eps in (0.1, 0.5, 2.0, 5.0, 10.0):
        scns.append(Scenario("census2000", "random-targets", 0.3, eps, tag="epsilon"))
    for seed in (1, 2):
        for frac in (0.0, 0.3):
            scns.append(Scenario("fashion-mnist", "flipped-labels", frac, 1.0, seed=seed, tag="main"))
    for eps in (0.1, 0.5, 2.0, 5.0, 10.0):
        scns.append(Scenario("fashion-mnist", "flipped-labels", 0.3, eps, tag="epsilon"))
    for seed in (1, 2):  # more seeds where time allows
        for frac in (0.0, 0.3):
            scns.append(Scenario("census2000", "random-targets", frac, 1.0, seed=seed, tag="main"))
        scns.append(Scenario("fashion-mnist", "flipped-labels", 0.3, 1.0, partitioning="dirichlet", seed=seed, tag="dirichlet"))
        scns.append(Scenario("fashion-mnist", "flipped-labels", 0.5, 1.0, seed=seed, tag="fraction"))
    light = {"ppcdl-reliability", "ppcdl-statistics-reliability", "fm-fedavg", "fm-statistics-fedavg", "fm-oracle",
             "fm-statistics-oracle", "fm-multikrum", "c_opacus", "c_centralized"}

    def keep(scn: Scenario, fn_name: str) -> bool:  # Fashion epsilon sweep: the decisive contenders only
        return not (scn.tag == "epsilon" and scn.dataset == "fashion-mnist") or fn_name in light

    return Profile(
        "full", scns, [*ALL_FM, c_centralized, c_sgd, c_opacus, c_flower_dp], contender_filter=keep,
        sgd_lrs=(0.5, 2.0), opacus_lrs=(1.0, 4.0, 16.0), opacus_clips=(0.5, 1.0),
        flower_lrs=(0.5,), flower_clips=(0.1, 0.5),
        opacus_reduced=(((4.0, 1.0), (16.0, 0.5)), ((0.25, 1.0), (1.0, 1.0))),
    )


def tradeoff_profile() -> Profile:
    """Where each mechanism wins: fixed total eps (1 and 8), more rounds / local epochs.
    FM pays once (later rounds are free); DP-SGD's noise grows with the number of steps."""
    scns = []
    for eps in (1.0, 8.0):
        for rounds in (20, 100):
            for epochs in (1, 5):
                scns.append(Scenario("fashion-mnist", "flipped-labels", 0.0, eps, rounds=rounds, local_epochs=epochs, tag="tradeoff"))
    fm_once = [c_fm("fedavg"), c_fm("fedavg", protocol="statistics")]

    def keep(scn: Scenario, fn_name: str) -> bool:  # FM does not depend on local_epochs
        return not fn_name.startswith("fm-") or scn.local_epochs == 1

    return Profile("tradeoff", scns, [*fm_once, c_opacus], opacus_lrs=(4.0,), opacus_clips=(1.0,), contender_filter=keep)


def scale_profile() -> Profile:
    """100 and 1,000 simulated participants, light model (census, 3 features + bias), 3 rounds."""
    scns = [Scenario("census2000", "random-targets", 0.3, 1.0, partitions=k, rounds=3, tag="scale") for k in (100, 1000)]
    return Profile("scale", scns, [c_fm("fedavg"), c_fm("reliability"), c_fm("reliability", protocol="statistics"), c_sgd],
                   sgd_lrs=(0.5,))


def speed_profile() -> Profile:
    """Timings of every contender at its tuned setting, meant to run alone on a quiet machine
    (thread CPU time is recorded next to wall time, so contention shows as the gap)."""
    scns = [Scenario("fashion-mnist", "flipped-labels", 0.3, 1.0, tag="speed"),
            Scenario("census2000", "random-targets", 0.3, 1.0, tag="speed")]
    return Profile("speed", scns, [*ALL_FM[:5], *ALL_FM[7:], c_sgd, c_opacus, c_flower_dp], sgd_lrs=(2.0,),
                   opacus_lrs=(4.0,), opacus_clips=(1.0,), flower_lrs=(0.5,), flower_clips=(0.1,))


def device_profile() -> Profile:
    """Short CPU-vs-CUDA comparison of the contenders that train with torch on ``--device``."""
    scns = [Scenario("fashion-mnist", "flipped-labels", 0.0, 1.0, rounds=r, tag="device") for r in (20, 100)]
    return Profile("device", scns, [c_fm("fedavg"), c_sgd, c_opacus], sgd_lrs=(2.0,), opacus_lrs=(4.0,), opacus_clips=(1.0,))


def memory_profile() -> Profile:
    """Peak memory of ONE client per process: each contender runs in a fresh subprocess with a
    single participant (partition 0 of 10) for 3 rounds; RSS after imports and data loading is the
    baseline, the growth is what the client's training (and the server's evaluation) adds."""
    scn = Scenario("fashion-mnist", "flipped-labels", 0.0, 1.0, rounds=3, tag="memory")
    return Profile("memory", [scn], [c_fm("reliability"), c_fm("fedavg"), c_sgd, c_opacus, c_flower_dp],
                   sgd_lrs=(2.0,), opacus_lrs=(4.0,), opacus_clips=(1.0,))


def run_memory_profile(out: Path) -> Path:
    """Each contender of ``memory_profile`` in its own process (``--memory-cell NAME``)."""
    for fn in memory_profile().contenders:
        cmd = [sys.executable, __file__, "--memory-cell", fn.__name__, "--out", str(out)]
        if DATASET_DIR:
            cmd += ["--dataset-dir", DATASET_DIR]
        cmd += ["--device", DEVICE.type]
        subprocess.run(cmd, check=False)
    return out / "memory.csv"


def memory_cell(name: str, out: Path) -> None:
    global SINGLE_NODE
    SINGLE_NODE = True
    prof = memory_profile()
    scn = prof.scenarios[0]
    settings = scn.settings(strategy="fedavg")
    split_data(settings)
    _features(settings, 0)
    _test_features(settings)
    rss0 = peak_rss_mb()
    prof.contenders = [fn for fn in prof.contenders if fn.__name__ == name]
    path = run_profile(prof, out)
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        if row["contender_fn"] == name and not row.get("baseline_rss_mb"):
            row["baseline_rss_mb"] = f"{rss0:.1f}"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=(*ROW_FIELDS, "contender_fn", "baseline_rss_mb"), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def gaussian_profile() -> Profile:
    """Issue #14: the Gaussian FM (eps = 1, delta = 1e-5) against pure-eps Laplace FM and tuned Opacus
    DP-SGD on the same body, through the App's own path (real FM clients + the App's strategies).

    Fashion-MNIST 10 x 6,000 IID (body ``auto``: pool4 for Gaussian and for Opacus, pool4-rp16 for
    Laplace), 0 % and 30 % flipped labels; census2000 0 % and 30 % random targets (feature sets
    compared on the clean census); seeds 0-2; 20 rounds. Decoder ``auto`` (LDA for Gaussian images).
    """
    scns = [Scenario("fashion-mnist", "flipped-labels", f, 1.0, seed=s, tag="gauss") for s in (0, 1, 2) for f in (0.0, 0.3)]
    scns += [Scenario("census2000", "random-targets", f, 1.0, seed=s, tag="gauss") for s in (0, 1, 2) for f in (0.0, 0.3)]
    lap = {"noise": "laplace"}
    fm = [
        c_fm("fedavg", label="fm-gauss-params-fedavg"),
        c_fm("reliability", label="ppcdl-gauss-params-reliability"),
        c_fm("fedavg", "statistics", label="fm-gauss-stats-fedavg"),
        c_fm("reliability", "statistics", label="ppcdl-gauss-stats-reliability"),
        c_fm("fedavg", "statistics", oracle=True, label="fm-gauss-stats-oracle"),
        c_fm("fedavg", "statistics", label="fm-gauss-stats-fedavg-taylor", overrides={"decoder": "taylor"}),
        c_fm("fedavg", label="fm-gauss-params-closedform-fedavg", overrides={"solver": "closed-form"}),
        c_fm("fedavg", label="fm-laplace-params-fedavg", overrides=lap),
        c_fm("reliability", label="ppcdl-laplace-params-reliability", overrides=lap),
        c_fm("fedavg", "statistics", label="fm-laplace-stats-fedavg", overrides=lap),
    ]
    features = [
        c_fm("fedavg", "statistics", label=f"fm-{noise}-stats-fedavg-{fs}", overrides={"feature-set": fs, "noise": noise})
        for fs in ("region", "state") for noise in ("gaussian", "laplace")
    ]
    image_only = {"fm-gauss-stats-fedavg-taylor", "fm-gauss-params-closedform-fedavg"}
    feature_names = {fn.__name__ for fn in features}

    def keep(scn: Scenario, fn_name: str) -> bool:
        if fn_name in image_only:
            return scn.dataset == "fashion-mnist"
        if fn_name in feature_names:
            return scn.dataset == "census2000" and scn.fraction == 0.0
        return True

    return Profile(
        "gaussian", scns, [*fm, *features, c_centralized, c_opacus], contender_filter=keep,
        opacus_lrs=(1.0, 4.0, 16.0), opacus_clips=(0.5, 1.0),
        opacus_reduced=(((4.0, 1.0), (16.0, 0.5), (16.0, 1.0)), ((0.25, 1.0), (1.0, 1.0))),
    )


def gaussian_edge_profile() -> Profile:
    """Opacus beyond the edge of the ``gaussian`` profile's grid (its best lr, 16, was the largest):
    lr 32 / 64 x clip 0.25 / 0.5 / 1 on Fashion-MNIST, 0 % unreliable, seed 0."""
    scn = Scenario("fashion-mnist", "flipped-labels", 0.0, 1.0, seed=0, tag="gauss-edge")
    return Profile("gaussian_edge", [scn], [c_opacus], opacus_lrs=(32.0, 64.0), opacus_clips=(0.25, 0.5, 1.0))


PROFILES = {"quick": quick_profile, "full": full_profile, "tradeoff": tradeoff_profile, "scale": scale_profile,
            "device": device_profile, "memory": memory_profile,
            "speed": speed_profile, "gaussian": gaussian_profile, "gaussian_edge": gaussian_edge_profile}


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ("tag", "dataset", "unreliable_kind", "unreliable_fraction", "partitioning",
                                       "seed", "partitions", "rounds", "local_epochs", "epsilon_target", "contender_fn"))


def run_profile(prof: Profile, out: Path, *, only: set[str] | None = None, limit_s: float | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prof.name}.csv"
    done: set[tuple[str, ...]] = set()
    fields = (*ROW_FIELDS, "contender_fn")
    if path.exists():
        with path.open() as fh:
            reader = csv.DictReader(fh)
            old_rows = list(reader)
            old_fields = tuple(reader.fieldnames or ())
        done = {_key(row) for row in old_rows}
        if old_fields != fields:  # written by an older harness: rewrite under the current header
            extra = tuple(f for f in old_fields if f not in fields)
            fields = (*fields, *extra)
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(old_rows)
    started = time.perf_counter()
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        for scn in prof.scenarios:
            warmed = False
            for fn in prof.contenders:
                if only and fn.__name__ not in only:
                    continue
                if prof.contender_filter is not None and not prof.contender_filter(scn, fn.__name__):
                    continue
                if limit_s is not None and time.perf_counter() - started > limit_s:
                    print(f"[harness] time limit {limit_s:.0f}s reached; re-run to continue", flush=True)
                    return path
                probe = {**base_row(prof.name, scn, ""), "contender_fn": fn.__name__}
                if _key(probe) in done:
                    continue
                if not warmed:  # read the data and run one throw-away FM round, so no contender's
                    # first round pays the process's one-time costs (file reads, torch/numpy warm-up)
                    split_data(scn.settings(**prof.fm_extra))
                    try:
                        run_fm(replace(scn, rounds=1, fraction=0.0), "reliability", extra=prof.fm_extra)
                    except Exception:  # noqa: BLE001, S110 - the warm-up is best effort
                        pass
                    warmed = True
                t0 = time.perf_counter()
                rss0 = peak_rss_mb()
                try:
                    results = fn(scn, prof)
                except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the run
                    results = [(fn.__name__, {"value": math.nan, "error": f"{type(exc).__name__}: {exc}"[:300]})]
                for name, res in results:
                    res.pop("reference", None)
                    row = {**base_row(prof.name, scn, name), "contender_fn": fn.__name__, "peak_rss_mb": peak_rss_mb(),
                           "peak_rss_growth_mb": peak_rss_mb() - rss0, **res}
                    writer.writerow(row)
                    print(f"[harness] {scn.tag} {scn.dataset} {scn.kind} {scn.fraction} eps={scn.epsilon} seed={scn.seed} "
                          f"{name}: {row['value']:.4f} ({time.perf_counter() - t0:.1f}s) {row.get('error') or ''}", flush=True)
                fh.flush()
    return path


def main(argv: list[str] | None = None) -> None:
    global DEVICE, DATASET_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                    help="quick (CI), full (README), tradeoff (rounds x local epochs at fixed eps), scale (100/1000 participants)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="device of the SGD / DP-SGD local training (FM clients are CPU numpy/torch)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--only", nargs="*", help="contender function names to run (default all)")
    ap.add_argument("--limit-s", type=float, default=None, help="stop starting new cells after this many seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPUs)")
    ap.add_argument("--dataset-dir", default="", help="Fashion-MNIST idx folder (default: the run config's)")
    ap.add_argument("--memory-cell", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    DATASET_DIR = a.dataset_dir
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available here")
        DEVICE = torch.device("cuda")
    if a.memory_cell:
        memory_cell(a.memory_cell, a.out)
        return
    if a.profile == "memory":
        print(f"[harness] rows in {run_memory_profile(a.out)} ({hardware()})")
        return
    prof = PROFILES[a.profile]()
    path = run_profile(prof, a.out, only=set(a.only) if a.only else None, limit_s=a.limit_s)
    print(f"[harness] rows in {path} ({hardware()})")


__all__ = ["Scenario", "Profile", "run_profile", "quick_profile", "full_profile", "auroc", "main"]

if __name__ == "__main__":
    main()
