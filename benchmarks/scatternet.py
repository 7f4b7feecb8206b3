"""Issue 26: FM beside Opacus DP-SGD on the ScatterNet body, and the two regimes where FM can lead.

Run (after ``benchmarks/scatternet_features.py`` has cached the features once):

    OMP_NUM_THREADS=1 nice -n 10 PYTHONPATH=. python benchmarks/scatternet.py --section all
    PYTHONPATH=. python benchmarks/scatternet.py --report        # the tables of docs/results-scatternet.md
    PYTHONPATH=. python benchmarks/scatternet.py --write-doc     # ... filled into it

Every cell appends one row to ``benchmarks/results/scatternet.csv`` as soon as it is measured (a
re-run skips the rows already there). Fashion-MNIST, (epsilon = 1, delta = 1e-5), IID partitions of
the 60,000 training images, the official 10,000 test images.

* **FM** runs through the App's own code (:func:`benchmarks.harness.run_fm`: the ClientApp and
  ``run_server`` over an in-process grid) with ``body = scatternet``: statistics and parameter
  protocols, reliability and FedAvg, 30 rounds, no tuning (the App's defaults). Its epsilon is
  replace-one; the ``add-remove-one`` rows run the same code with the participants' mechanism and
  the server's expectation switched to add/remove-one neighbours (what Opacus accounts; ``n`` is
  then published).
* **DP-SGD** is Opacus (:func:`benchmarks.harness.opacus_local`: Poisson batches, per-example
  clipping, noise multiplier from the RDP accountant over all steps of all rounds, add/remove-one)
  on the same partitions and labels, averaged by FedAvg (equal partitions: the average Flower's
  FedAvg computes) or by Flower's robust rules (``flwr.server.strategy.aggregate``), 20 rounds x 1
  local epoch. lr x clip is tuned on a **validation split** (each participant keeps 90 % of its
  records; the other 10 % are pooled) at the tuning seed, then reported on the test set at the
  report seeds with the whole partitions. Features: the same 128-dim body output as FM, and the
  full 3,969 ScatterNet + GroupNorm features.
* **Ceilings** (non-private): the App's oracle (logistic regression on the pooled 128-dim
  features) and FM at epsilon = inf (exact LDA on the summed statistics).

Seeds: tuning seed 100 (DP-SGD's lr x clip, validation split); report seeds 0, 1, 2 (partitions,
unreliable participants, DP-SGD sampling; FM noise is the OS CSPRNG's, never seeded). The App's
default body was chosen on the ``default`` section's seeds 0, 1, 2 and is checked on held-out seeds
3, 4, 5 (``heldout``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE = Path(os.environ.get("SCATTERNET_BENCH_CACHE", "/work/cache/i26"))
os.environ.setdefault("FLWR_PPCDL_CACHE_DIR", str(CACHE / "features"))  # before any body is built

from benchmarks import harness  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    DELTA,
    PRIVACY_NONE,
    PRIVACY_OPACUS,
    RDP_ALPHAS,
    OpacusPlan,
    Scenario,
    code_version,
    hardware,
    opacus_local,
    run_fm,
)
from flwr_ppcdl.app.experiment import _partitions, load_participant, reference_metrics  # noqa: E402
from flwr_ppcdl.app.settings import RunSettings  # noqa: E402

OUT = Path("benchmarks/results/scatternet.csv")
DOC = Path("docs/results-scatternet.md")
TUNING_SEED = 100
REPORT_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (3, 4, 5)  # the App's default body: chosen at REPORT_SEEDS, checked here
FM_ROUNDS = 30  # the App's default
SGD_ROUNDS = 20
BODY = "scatternet"
FIELDS = (
    "section", "contender", "rule", "protocol", "neighbouring", "features", "partitions", "unreliable_fraction",
    "seed", "seed_role", "split", "rounds", "value", "epsilon_spent", "delta", "privacy", "hyper",
    "client_cpu_s_whole_run", "client_cpu_s_first_round", "wall_s", "weight_on_unreliable", "code_version",
    "versions", "hardware", "error",
)
ROBUST_RULES = ("fedavg", "fedmedian", "fedtrimmedavg", "multikrum")


def versions() -> str:
    import flwr
    import kymatio
    import opacus

    return json.dumps({"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                       "flwr": flwr.__version__, "opacus": opacus.__version__, "kymatio": kymatio.__version__})


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    """A cell: what it runs (grid points differ by their hyper-parameters; a test cell's are its result)."""
    fields = ("section", "contender", "rule", "protocol", "neighbouring", "features", "partitions", "unreliable_fraction",
              "seed", "split")
    return tuple(str(row.get(k, "")) for k in fields) + ((str(row.get("hyper", "")),) if row.get("split") == "validation" else ())


class Table:
    """The CSV: rows already measured, and an append that writes each row as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, str]] = []
        if path.exists():
            with path.open() as fh:
                self.rows = list(csv.DictReader(fh))
        self.done = {_key(r) for r in self.rows if not r.get("error")}  # failed cells are tried again

    def has(self, probe: dict[str, Any]) -> bool:
        return _key(probe) in self.done

    def add(self, row: dict[str, Any]) -> None:
        row = {**row, "code_version": code_version(), "versions": versions(), "hardware": hardware()}
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.rows.append({k: str(v) for k, v in row.items()})
        self.done.add(_key(row))
        print(f"[scatternet] {row['section']} {row['contender']} {row.get('rule', '')} {row.get('neighbouring', '')} "
              f"K={row['partitions']} frac={row['unreliable_fraction']} seed={row['seed']} {row['split']}: "
              f"{float(row['value']):.4f} {row.get('error') or ''}", flush=True)


def _measure(table: Table, probe: dict[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    if table.has(probe):
        return None
    t0 = time.perf_counter()
    try:
        result = run()
    except Exception as exc:  # noqa: BLE001 - one failed cell is a row with its error, not a lost run
        result = {"value": math.nan, "error": f"{type(exc).__name__}: {exc}"[:300]}
    row = {**probe, **result, "wall_s": round(time.perf_counter() - t0, 2)}
    table.add(row)
    return row


# --------------------------------------------------------------------------------------------------
# FM through the App
# --------------------------------------------------------------------------------------------------


@contextmanager
def neighbouring(relation: str) -> Iterator[None]:
    """Participants release, and the server expects, under ``relation`` (the App's default: replace-one)."""
    if relation == "replace-one":
        yield
        return
    import flwr_ppcdl.app.client_app as client_app

    original_config, original_strategy = client_app.trainer_config, harness.make_strategy

    def config(settings: RunSettings, partition_id: int) -> dict[str, Any]:
        return {**original_config(settings, partition_id), "neighbouring": relation}

    def strategy(settings: RunSettings, validation: Any = None) -> Any:
        made = original_strategy(settings, validation)
        if getattr(made, "expected_release", None) is not None:
            made.expected_release = dataclasses.replace(made.expected_release, neighbouring=relation)
        return made

    client_app.trainer_config, harness.make_strategy = config, strategy
    try:
        yield
    finally:
        client_app.trainer_config, harness.make_strategy = original_config, original_strategy


def fm_cell(section: str, strategy: str, protocol: str, relation: str, k: int, fraction: float, seed: int,
            *, body: str = BODY, epsilon: float = 1.0) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        scn = Scenario("fashion-mnist", "flipped-labels", fraction, epsilon, seed=seed, partitions=k,
                       rounds=FM_ROUNDS, tag=section)
        extra = {"body": body} if body != "auto" else {}
        if protocol != "auto":
            extra["protocol"] = protocol
        with neighbouring(relation):
            out = run_fm(scn, strategy, extra=extra)
        out.pop("reference", None)
        return {
            "value": out["value"], "epsilon_spent": out["epsilon_spent"], "delta": out["delta"],
            "privacy": out["privacy"].replace("per participant", f"{relation}, per participant"),
            "hyper": out["hyper"], "weight_on_unreliable": out.get("weight_on_unreliable", ""),
            "client_cpu_s_whole_run": round(out["client_cpu_s_per_round"] * FM_ROUNDS, 4),
            "client_cpu_s_first_round": round(out["client_s_first_round"], 4),
        }

    return run


def fm_probe(section: str, strategy: str, protocol: str, relation: str, k: int, fraction: float, seed: int,
             body: str = BODY, epsilon: float = 1.0) -> dict[str, Any]:
    name = "fm" if math.isfinite(epsilon) else "fm-noiseless"
    return {"section": section, "contender": name if body == BODY else f"{name}-{body}", "rule": strategy,
            "protocol": protocol, "neighbouring": relation if math.isfinite(epsilon) else "none",
            "features": f"{body}-128" if body == BODY else body, "partitions": k, "unreliable_fraction": fraction,
            "seed": seed, "seed_role": "report", "split": "test", "rounds": FM_ROUNDS, "hyper": ""}


# --------------------------------------------------------------------------------------------------
# DP-SGD (Opacus) on the cached features
# --------------------------------------------------------------------------------------------------

_GN: np.ndarray | None = None
_H: np.ndarray | None = None


def features(kind: str) -> np.ndarray:
    """All 70,000 records' features: ``"128"`` (the body's output) or ``"gn"`` (3,969, before the projection)."""
    global _GN, _H
    if kind == "gn":
        if _GN is None:
            _GN = np.load(CACHE / "fashion_gn.npy", mmap_mode="r")
        return _GN
    if _H is None:
        _H = np.load(CACHE / "fashion_h128.npy")
    return _H


def participants(k: int, fraction: float, seed: int) -> tuple[RunSettings, list[np.ndarray], list[np.ndarray], list[bool]]:
    """The App's partitions (indices into the 60,000 training records) and labels (corrupted if unreliable)."""
    settings = RunSettings(dataset="fashion-mnist", num_partitions=k, unreliable_fraction=fraction,
                           unreliable_kind="flipped-labels", seed=seed, body=BODY)
    parts = _partitions(settings)
    labels, flags = [], []
    for pid in range(k):
        p = load_participant(settings, pid)
        labels.append(p.targets.numpy())
        flags.append(p.unreliable)
    return settings, list(parts), labels, flags


def _aggregate(rule: str, heads: list[list[np.ndarray]], sizes: list[int], bad: int) -> list[np.ndarray]:
    from flwr.server.strategy.aggregate import (
        aggregate,
        aggregate_krum,
        aggregate_median,
        aggregate_trimmed_avg,
    )

    results = list(zip(heads, sizes, strict=True))
    if rule == "fedavg":
        return aggregate(results)
    if rule == "fedmedian":
        return aggregate_median(results)
    if rule == "fedtrimmedavg":
        return aggregate_trimmed_avg(results, 0.2)
    if rule == "multikrum":  # told the true number of unreliable participants: its best case
        return aggregate_krum(results, bad, max(1, len(heads) - bad))
    raise ValueError(f"unknown rule {rule!r}")


def dpsgd_federated(settings: RunSettings, train: list[tuple[torch.Tensor, torch.Tensor]],
                    test: tuple[torch.Tensor, torch.Tensor], *, lr: float, clip: float, batch: int, seed: int,
                    rule: str = "fedavg", bad: int = 0, epsilon: float = 1.0) -> dict[str, Any]:
    """Opacus DP-SGD clients (``opacus_local``) averaged by ``rule`` for SGD_ROUNDS rounds."""
    from opacus.accountants.utils import get_noise_multiplier

    n_min = min(len(x) for x, _ in train)
    q = min(1.0, batch / n_min)
    steps = max(1, round(1 / q))
    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=DELTA, sample_rate=q, steps=steps * SGD_ROUNDS,
                                 accountant="rdp", epsilon_tolerance=0.005, alphas=RDP_ALPHAS)
    plan = OpacusPlan(float(sigma), q, steps, lr, clip, batch)
    width = train[0][0].shape[1]
    global_head = torch.nn.Linear(width, 10)
    with torch.no_grad():
        global_head.weight.zero_()
        global_head.bias.zero_()
    cpu = [0.0] * len(train)
    for rnd in range(SGD_ROUNDS):
        states, sizes = [], []
        for pid, (x, y) in enumerate(train):
            head = torch.nn.Linear(width, 10)
            head.load_state_dict(global_head.state_dict())
            c0 = time.thread_time()
            opacus_local(head, x, y, settings, plan, pid, seed * 1_000_003 + pid * 1009 + rnd)
            cpu[pid] += time.thread_time() - c0
            states.append([head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()])
            sizes.append(len(x))
        weight, bias = _aggregate(rule, states, sizes, bad)
        with torch.no_grad():
            global_head.weight.copy_(torch.as_tensor(weight))
            global_head.bias.copy_(torch.as_tensor(bias))
    with torch.no_grad():
        accuracy = float((global_head(test[0]).argmax(1) == test[1]).float().mean())
    spent = max(acc.get_epsilon(DELTA, alphas=RDP_ALPHAS) for acc in plan.accountants.values())
    return {"value": accuracy, "epsilon_spent": round(spent, 4), "delta": DELTA, "privacy": PRIVACY_OPACUS + " (add-remove-one)",
            "client_cpu_s_whole_run": round(float(np.mean(cpu)), 4),
            "hyper": json.dumps({"lr": lr, "clip": clip, "batch": batch, "noise_multiplier": round(plan.noise_multiplier, 4),
                                 "steps_per_round": steps, "sample_rate": round(q, 5)})}


def _tensor(kind: str, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(features(kind)[np.sort(rows)], dtype=np.float32))


def dpsgd_data(kind: str, k: int, fraction: float, seed: int, validation: bool):
    """(settings, train parts, evaluation set, flags): ``validation`` keeps 90 % of each partition and
    evaluates on the pooled other 10 %; otherwise the whole partitions and the official test set."""
    settings, parts, labels, flags = participants(k, fraction, seed)
    train, held_x, held_y = [], [], []
    for pid, (idx, y) in enumerate(zip(parts, labels, strict=True)):
        order = np.argsort(idx)  # the partition's records in index order, labels alongside
        idx, y = np.asarray(idx)[order], y[order]
        keep = np.ones(len(idx), dtype=bool)
        if validation:
            held = np.random.default_rng([seed, pid, 5]).permutation(len(idx))[: len(idx) // 10]
            keep[held] = False
            held_x.append(idx[~keep])
            held_y.append(y[~keep])
        train.append((_tensor(kind, idx[keep]), torch.as_tensor(y[keep])))
    if validation:
        rows = np.concatenate(held_x)
        order = np.argsort(rows)
        evaluation = (_tensor(kind, rows), torch.as_tensor(np.concatenate(held_y)[order]))
    else:
        from benchmarks.scatternet_features import fashion_images

        _, all_labels = fashion_images()
        evaluation = (torch.from_numpy(np.ascontiguousarray(features(kind)[60_000:], dtype=np.float32)),
                      torch.as_tensor(all_labels[60_000:]))
    return settings, train, evaluation, flags


def dpsgd_batch(k: int) -> int:
    """Expected batch: 256 records, at most a quarter of a partition (60,000 / k records)."""
    return min(256, 60_000 // k // 4)


DPSGD_GRID = {"128": [(lr, clip) for lr in (4.0, 16.0, 64.0, 256.0) for clip in (0.5, 1.0)],
              "gn": [(lr, 1.0) for lr in (0.25, 1.0, 4.0, 16.0, 64.0)]}


def tuned_dpsgd(table: Table, kind: str, k: int) -> tuple[float, float]:
    """lr x clip with the best validation accuracy at the tuning seed (each grid point is a row)."""
    best: tuple[float, tuple[float, float]] = (-1.0, DPSGD_GRID[kind][0])
    for lr, clip in DPSGD_GRID[kind]:
        probe = {"section": "tuning", "contender": "opacus-dpsgd", "rule": "fedavg", "protocol": "", "neighbouring": "add-remove-one",
                 "features": _features_name(kind), "partitions": k, "unreliable_fraction": 0.0, "seed": TUNING_SEED,
                 "seed_role": "tuning", "split": "validation", "rounds": SGD_ROUNDS,
                 "hyper": json.dumps({"lr": lr, "clip": clip})}

        def run(lr: float = lr, clip: float = clip) -> dict[str, Any]:
            settings, train, val, _ = dpsgd_data(kind, k, 0.0, TUNING_SEED, validation=True)
            out = dpsgd_federated(settings, train, val, lr=lr, clip=clip, batch=dpsgd_batch(k), seed=TUNING_SEED)
            out["hyper"] = json.dumps({"lr": lr, "clip": clip})  # the probe's key; noise etc. in the final rows
            return out

        _measure(table, probe, run)
        for row in table.rows:
            if _key(row) == _key(probe) and math.isfinite(float(row["value"])) and float(row["value"]) > best[0]:
                best = (float(row["value"]), (lr, clip))
    return best[1]


def _features_name(kind: str) -> str:
    return "scatternet-128" if kind == "128" else "scatternet-gn-3969"


def dpsgd_cell(table: Table, section: str, kind: str, k: int, fraction: float, seed: int, rule: str = "fedavg") -> None:
    lr, clip = tuned_dpsgd(table, kind, k)
    probe = {"section": section, "contender": "opacus-dpsgd", "rule": rule, "protocol": "", "neighbouring": "add-remove-one",
             "features": _features_name(kind), "partitions": k, "unreliable_fraction": fraction, "seed": seed,
             "seed_role": "report", "split": "test", "rounds": SGD_ROUNDS, "hyper": ""}

    def run() -> dict[str, Any]:
        settings, train, test, flags = dpsgd_data(kind, k, fraction, seed, validation=False)
        return dpsgd_federated(settings, train, test, lr=lr, clip=clip, batch=dpsgd_batch(k), seed=seed, rule=rule,
                               bad=sum(flags))

    _measure(table, probe, run)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------

FM_VARIANTS = [(s, p, r) for r in ("replace-one", "add-remove-one") for p in ("statistics", "parameters")
               for s in ("reliability", "fedavg")]


def section_main(table: Table) -> None:
    """10 x 6,000, nobody unreliable: every contender; the App's default body beside it."""
    for seed in REPORT_SEEDS:
        for strategy, protocol, relation in FM_VARIANTS:
            _measure(table, fm_probe("main", strategy, protocol, relation, 10, 0.0, seed),
                     fm_cell("main", strategy, protocol, relation, 10, 0.0, seed))
        _measure(table, fm_probe("main", "fedavg", "statistics", "replace-one", 10, 0.0, seed, epsilon=math.inf),
                 fm_cell("main", "fedavg", "statistics", "replace-one", 10, 0.0, seed, epsilon=math.inf))
        for kind in ("128", "gn"):
            dpsgd_cell(table, "main", kind, 10, 0.0, seed)
        _measure(table, {"section": "main", "contender": "centralized-logistic", "rule": "", "protocol": "",
                         "neighbouring": "none", "features": "scatternet-128", "partitions": 10, "unreliable_fraction": 0.0,
                         "seed": seed, "seed_role": "report", "split": "test", "rounds": "", "hyper": ""},
                 lambda seed=seed: centralized(10, 0.0, seed))


def section_default(table: Table) -> None:
    """The App's defaults (statistics, reliability, eps = 1) with today's auto body and with the ScatterNet."""
    for seed in REPORT_SEEDS:
        for fraction in (0.0, 0.3):
            for body in ("pool4", BODY):
                _measure(table, fm_probe("default", "reliability", "auto", "replace-one", 10, fraction, seed, body=body),
                         fm_cell("default", "reliability", "auto", "replace-one", 10, fraction, seed, body=body))


def section_heldout(table: Table) -> None:
    """The App's default (``body = auto``, now the ScatterNet) at seeds no choice was made on: the
    default section's seeds 0-2 chose the body, so the issue's bar is checked at seeds 3-5."""
    for seed in HELDOUT_SEEDS:
        for fraction in (0.0, 0.3):
            for body in ("pool4", BODY):
                probe = {**fm_probe("heldout", "reliability", "auto", "replace-one", 10, fraction, seed, body=body),
                         "seed_role": "held-out"}
                _measure(table, probe, fm_cell("heldout", "reliability", "auto", "replace-one", 10, fraction, seed, body=body))


def section_unreliable(table: Table) -> None:
    """30 % flipped labels (the same derangement at every unreliable participant), 10 x 6,000."""
    for seed in REPORT_SEEDS:
        for strategy, protocol, relation in FM_VARIANTS:
            _measure(table, fm_probe("unreliable", strategy, protocol, relation, 10, 0.3, seed),
                     fm_cell("unreliable", strategy, protocol, relation, 10, 0.3, seed))
        for rule in ROBUST_RULES:
            dpsgd_cell(table, "unreliable", "128", 10, 0.3, seed, rule=rule)
        _measure(table, {"section": "unreliable", "contender": "centralized-logistic", "rule": "", "protocol": "",
                         "neighbouring": "none", "features": "scatternet-128", "partitions": 10, "unreliable_fraction": 0.3,
                         "seed": seed, "seed_role": "report", "split": "test", "rounds": "", "hyper": ""},
                 lambda seed=seed: centralized(10, 0.3, seed))


def section_kscale(table: Table) -> None:
    """K = 30 and 100 participants over the same 60,000 records (K = 10 is the main section)."""
    for k in (30, 100):
        for seed in REPORT_SEEDS:
            for strategy, protocol, relation in FM_VARIANTS:
                if protocol == "parameters" and k == 100 and relation == "add-remove-one":
                    continue
                _measure(table, fm_probe("kscale", strategy, protocol, relation, k, 0.0, seed),
                         fm_cell("kscale", strategy, protocol, relation, k, 0.0, seed))
            dpsgd_cell(table, "kscale", "128", k, 0.0, seed)


def centralized(k: int, fraction: float, seed: int) -> dict[str, Any]:
    settings = RunSettings(dataset="fashion-mnist", num_partitions=k, unreliable_fraction=fraction,
                           unreliable_kind="flipped-labels", seed=seed, body=BODY)
    return {"value": reference_metrics(settings)["accuracy"], "privacy": PRIVACY_NONE + ", reliable records only",
            "hyper": json.dumps({"model": "sklearn LogisticRegression(max_iter=500)"})}


def feature_cost(table: Table) -> None:
    """Client CPU seconds per participant (6,000 records, 1 torch thread) of each piece of work:
    the ScatterNet body (no cache; paid by every contender) and FM's release on its output (the App's
    configuration: hardened Gaussian sampler). DP-SGD's local training is measured in its own rows."""
    from benchmarks.scatternet_features import fashion_images
    from flwr_ppcdl.app.experiment import trainer_config
    from flwr_ppcdl.clients import TrainerConfig
    from flwr_ppcdl.privacy import PrivacyLedger
    from flwr_ppcdl.scatternet import ScatterNetBody

    base = {"section": "cost", "rule": "", "protocol": "", "neighbouring": "", "features": "scatternet-128", "partitions": 10,
            "unreliable_fraction": 0.0, "seed": 0, "seed_role": "", "split": "", "rounds": ""}

    def body_cost() -> dict[str, Any]:
        images, _ = fashion_images()
        body = ScatterNetBody(cache=None)
        c0 = time.process_time()
        body(torch.from_numpy(images[:6000]))
        return {"value": math.nan, "client_cpu_s_whole_run": round(time.process_time() - c0, 3)}

    def release_cost(relation: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            settings = RunSettings(dataset="fashion-mnist", unreliable_fraction=0.0, unreliable_kind="flipped-labels", body=BODY)
            config = TrainerConfig(**{**trainer_config(settings, 0), "neighbouring": relation})
            _, parts, labels, _ = participants(10, 0.0, 0)
            h = features("128")[np.sort(parts[0])].astype(np.float64)
            y = labels[0][np.argsort(parts[0])]
            times = []
            for _ in range(5):
                mechanism = config.mechanism(PrivacyLedger(max_epsilon=None, delta=config.ledger_delta))
                c0 = time.process_time()
                mechanism.release(h, y)
                times.append(time.process_time() - c0)
            return {"value": math.nan, "client_cpu_s_whole_run": round(float(np.median(times)), 4),
                    "hyper": json.dumps({"records": len(h), "dimension": h.shape[1] + 1, "repeats": 5, "statistic": "median"})}

        return run

    _measure(table, {**base, "contender": "scatternet-body", "hyper": json.dumps({"images": 6000, "torch_threads": 1})}, body_cost)
    for relation in ("replace-one", "add-remove-one"):
        _measure(table, {**base, "contender": "fm-release", "neighbouring": relation, "hyper": ""}, release_cost(relation))


SECTIONS: dict[str, Callable[[Table], None]] = {
    "cost": feature_cost, "main": section_main, "default": section_default, "heldout": section_heldout,
    "unreliable": section_unreliable,
    "kscale": section_kscale,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", nargs="+", default=["all"], choices=["all", *SECTIONS])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="print the CSV's tables (docs/results-scatternet.md)")
    ap.add_argument("--write-doc", type=Path, nargs="?", const=DOC, help=f"fill the tables into a doc (default {DOC})")
    a = ap.parse_args(argv)
    if a.report or a.write_doc:
        from benchmarks.scatternet_report import fill_doc, write_report

        if a.write_doc:
            fill_doc(a.write_doc, a.out)
        else:
            print(write_report(a.out))
        return
    if not (CACHE / "fashion_h128.npy").exists():
        sys.exit(f"no cached features under {CACHE}: run benchmarks/scatternet_features.py first")
    torch.set_num_threads(1)
    table = Table(a.out)
    for name in (SECTIONS if "all" in a.section else a.section):
        SECTIONS[name](table)


if __name__ == "__main__":
    main()
