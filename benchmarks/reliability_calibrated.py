"""Calibrated reliability (issue #13) against the legacy rule and Flower's robust rules, FM clients.

Exact command of the committed CSV (``benchmarks/results/reliability_calibrated.csv``: App defaults,
Gaussian noise, 3 seeds, both protocols, about 20 min on 2 CPU cores; a re-run only measures the rows
missing from the CSV, ``--rules calibrated`` re-measures one rule after its rows are deleted) and of
its goals table (``reliability_calibrated_summary.txt``):

    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_calibrated --out benchmarks/results/reliability_calibrated.csv
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_calibrated --out benchmarks/results/reliability_calibrated.csv \
        --summary > benchmarks/results/reliability_calibrated_summary.txt

Every contender of a cell sees the same releases (``insecure-noise-seed`` = 1000 + seed: NOT private,
for this comparison only).

``--quick`` runs a handful of cells; ``--only census2000`` / ``--only fashion-mnist`` one data set.

What runs. The App's own participants (``flwr_ppcdl.app.experiment``: partitions, corruptions, frozen
bodies, ``trainer_config``) as :class:`~flwr_ppcdl.clients.trainer.FunctionalMechanismTrainer` objects:
each releases once (the hardened discrete sampler, as in the App), then every round minimises its
noisy objective from the global model (``local-steps`` steps, as in the App). Rounds are driven here
without Flower's messaging: every contender sees the same releases and, for a given global model,
the same uploads; the aggregation rules are

* ``fedavg``, ``fedmedian``, ``fedtrimmedavg`` (beta 0.2), ``multikrum`` (told the true number of
  unreliable participants, selecting K - f): the arithmetic of Flower's Message-API strategies;
* ``oracle``: FedAvg over the reliable participants only;
* ``legacy``: the pre-#13 App configuration (``method="truth_discovery"``, ``alignment=False``,
  ``sharpness=4``, ``tolerance=1``, ``count_cap=10``, ``max_share=0.5``);
* ``calibrated``: the new default, :class:`~flwr_ppcdl.reliability.ReliabilityAggregator` with
  ``ReliabilityOptions()`` -- the same object the Flower strategies call -- given each participant's
  release view (:func:`~flwr_ppcdl.strategies.releases.release_view`), as the App's FM participants
  share their release (``share-release = auto``) and the strategy scores it beside the parameters;
* ``calibrated-params``: the same estimator on the parameters alone (plain clients, ``share-release =
  never``), the behaviour before the release views.

Statistics protocol (``--protocol statistics``): participants share their release; the server sums the
releases with keep-fractions from the estimator (as ``SummedStatisticsFedAvg``), ``legacy`` and
``calibrated`` against the plain sum (``fedavg``) and the sum over reliable participants (``oracle``).

Columns: final metric (accuracy or R²) per rule; for the weighting rules the AUROC of the final
round's weights (reliable above unreliable), the unreliable weight mass over its FedAvg share
(``bad_mass``), the fraction of honest participant-rounds at >= 0.8x their FedAvg share
(``honest_kept``), and the rounds reported undecidable. The summary (``--summary``) checks the
issue's goals per cell.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

from benchmarks._fl_common import append_rows  # noqa: E402
from flwr_ppcdl.app.experiment import (  # noqa: E402
    evaluate_model,
    load_participant,
    make_model,
    split_data,
    trainer_config,
)
from flwr_ppcdl.app.settings import RunSettings  # noqa: E402
from flwr_ppcdl.clients import TrainerConfig  # noqa: E402
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer  # noqa: E402
from flwr_ppcdl.privacy import combine_releases, linear_head_parameters  # noqa: E402
from flwr_ppcdl.reliability import ReliabilityAggregator, ReliabilityOptions, ScoredView, Upload  # noqa: E402
from flwr_ppcdl.strategies.releases import release_view  # noqa: E402

LEGACY = {"method": "truth_discovery", "alignment": False, "sharpness": 4.0, "tolerance": 1.0, "memory_rate": 0.5,
          "count_cap": 10.0, "max_share": 0.5}
FIELDS = ("dataset", "protocol", "kind", "fraction", "partitioning", "epsilon", "seed", "rounds", "rule",
          "metric", "value", "auroc", "bad_mass", "honest_kept", "undecidable_rounds", "seconds")
Aggregate = Callable[[int, list[np.ndarray], list[list[np.ndarray]], np.ndarray], tuple[list[np.ndarray] | None, np.ndarray | None, bool]]


# ---------------------------------------------------------------------------------------- participants
_PARTICIPANTS: dict[tuple[Any, ...], tuple[RunSettings, list[FunctionalMechanismTrainer], np.ndarray]] = {}


def participants(cfg: dict[str, Any]) -> tuple[RunSettings, list[FunctionalMechanismTrainer], np.ndarray]:
    """The App's participants for ``cfg`` (released once, cached), and the ground-truth flags."""
    key = tuple(sorted(cfg.items()))
    if key not in _PARTICIPANTS:
        _PARTICIPANTS.clear()
        settings = RunSettings.from_config({"plot": False, "result-dir": "/tmp/flwr_ppcdl_calib", **cfg})
        trainers, bad = [], []
        for p in range(settings.num_partitions):
            part = load_participant(settings, p)
            trainer = FunctionalMechanismTrainer(
                make_model(settings), (part.inputs, part.targets), TrainerConfig(**trainer_config(settings, p))
            )
            trainer.ensure_release()
            trainers.append(trainer)
            bad.append(part.unreliable)
        _PARTICIPANTS[key] = (settings, trainers, np.array(bad))
    return _PARTICIPANTS[key]


def evaluate(settings: RunSettings, state: dict[str, np.ndarray]) -> float:
    model = make_model(settings)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    _, test = split_data(settings)
    return float(evaluate_model(model, test, settings)[settings.metric])


# ---------------------------------------------------------------------------------------- rules
def weighted(ups: list[list[np.ndarray]], w: np.ndarray) -> list[np.ndarray]:
    return [sum(float(wk) * u[layer].astype(np.float64) for wk, u in zip(w, ups, strict=True) if wk > 0) for layer in range(len(ups[0]))]


def rule_fedavg(r: int, g: list[np.ndarray], ups: list[list[np.ndarray]], counts: np.ndarray) -> tuple[Any, Any, bool]:
    w = counts / counts.sum()
    return weighted(ups, w), w, False


def rule_median(r: int, g: list[np.ndarray], ups: list[list[np.ndarray]], counts: np.ndarray) -> tuple[Any, Any, bool]:
    return [np.median(np.stack([u[layer] for u in ups]), axis=0) for layer in range(len(g))], None, False


def rule_trimmed(r: int, g: list[np.ndarray], ups: list[list[np.ndarray]], counts: np.ndarray, beta: float = 0.2) -> tuple[Any, Any, bool]:
    out = []
    for layer in range(len(g)):
        stack = np.sort(np.stack([u[layer] for u in ups]), axis=0)
        cut = int(beta * len(ups))
        out.append(stack[cut:len(ups) - cut].mean(axis=0))
    return out, None, False


def rule_multikrum(f: int) -> Aggregate:
    def agg(r: int, g: list[np.ndarray], ups: list[list[np.ndarray]], counts: np.ndarray) -> tuple[Any, Any, bool]:
        flat = np.stack([np.concatenate([a.ravel() for a in u]) for u in ups]).astype(np.float64)
        norms = (flat**2).sum(1)
        dist = norms[:, None] + norms[None, :] - 2 * flat @ flat.T
        closest = max(1, len(ups) - f - 2)
        scores = [np.sum(dist[i, np.argsort(dist[i])[1:closest + 1]]) for i in range(len(ups))]
        best = np.argsort(scores)[: max(1, len(ups) - f)]
        w = np.zeros(len(ups))
        w[best] = counts[best] / counts[best].sum()
        return weighted(ups, w), w, False
    return agg


def rule_reliability(views: list[ScoredView] | None = None, **options: Any) -> Aggregate:
    agg = ReliabilityAggregator(ReliabilityOptions(seed=0, **options))

    def run(r: int, g: list[np.ndarray], ups: list[list[np.ndarray]], counts: np.ndarray) -> tuple[Any, Any, bool]:
        agg.remember_global(g)
        out = agg.aggregate(r, [Upload(1000 + i, u, c, view=None if views is None else views[i])
                                for i, (u, c) in enumerate(zip(ups, counts, strict=True))])
        rep = agg.history[-1]
        w = np.array([rep.weights.get(1000 + i, 0.0) for i in range(len(ups))])
        return out.arrays, w, rep.undecidable is not None
    return run


def rules(bad: np.ndarray, views: list[ScoredView]) -> dict[str, tuple[Aggregate, bool]]:
    """Every parameter-protocol rule; ``calibrated`` also scores each participant's release view (the App's
    default for FM clients, which share their release), ``calibrated-params`` the parameters alone."""
    f = int(bad.sum())
    return {
        "fedavg": (rule_fedavg, False), "oracle": (rule_fedavg, True), "fedmedian": (rule_median, False),
        "fedtrimmedavg": (rule_trimmed, False), "multikrum": (rule_multikrum(f), False),
        "legacy": (rule_reliability(**LEGACY), False), "calibrated": (rule_reliability(views), False),
        "calibrated-params": (rule_reliability(), False),
    }


# ---------------------------------------------------------------------------------------- runs
def run_parameters(settings: RunSettings, trainers: list[FunctionalMechanismTrainer], aggregate: Aggregate,
                   use: list[int]) -> tuple[float, list[np.ndarray | None], int]:
    """The parameter protocol: every round each participant minimises its noisy objective from the global model."""
    model = make_model(settings)
    keys = list(model.state_dict().keys())
    glob = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    history: list[np.ndarray | None] = []
    undecidable = 0
    for rnd in range(1, settings.num_rounds + 1):
        ups, counts = [], []
        for i in use:
            metrics = trainers[i].fit(glob)
            state = trainers[i].model.state_dict()
            ups.append([state[k].detach().numpy().copy() for k in keys])
            counts.append(metrics["num-examples"])
        arrays, w, und = aggregate(rnd, [glob[k] for k in keys], ups, np.array(counts, dtype=np.float64))
        history.append(w)
        undecidable += int(und)
        if arrays is not None:
            glob = {k: np.asarray(a, dtype=glob[k].dtype) for k, a in zip(keys, arrays, strict=True)}
    return evaluate(settings, glob), history, undecidable


def run_statistics(settings: RunSettings, trainers: list[FunctionalMechanismTrainer], rule: str,
                   use: list[int]) -> tuple[float, list[np.ndarray | None], int]:
    """The statistics protocol: the server sums the releases with the estimator's keep-fractions."""
    from flwr_ppcdl.strategies.releases import clip_scored_view, release_scoring_view

    releases = [trainers[i].release for i in use]
    counts = np.array([r.num_examples for r in releases], dtype=np.float64)
    shares = counts / counts.sum()
    history: list[np.ndarray | None] = []
    undecidable = 0
    if rule in ("fedavg", "oracle"):
        keep = np.ones(len(use))
        history = [shares] * settings.num_rounds
    else:
        options = ReliabilityOptions(seed=0, **(LEGACY if rule == "legacy" else {}))
        agg = ReliabilityAggregator(options)
        if rule == "calibrated":
            views = [release_scoring_view(r) for r in releases]  # as SummedStatisticsFedAvg does
            local, noise = [v[0] for v in views], [v[1] for v in views]
        else:
            local, noise = [[np.asarray(r.solve())] for r in releases], None
        from flwr_ppcdl.reliability import estimate_reliability

        prior, seen = None, None
        for rnd in range(settings.num_rounds):
            res = estimate_reliability(local, counts, options, noise_variance=noise, prior_evidence=prior, prior_rounds=seen,
                                       bounded_influence=rule != "calibrated" or clip_scored_view(releases[0].task))  # as SummedStatisticsFedAvg
            if options.memory_rate is not None:
                prior, seen = res.carried_evidence, np.full(len(use), float(rnd + 1))
            history.append(res.weights)
            undecidable += int(res.undecidable is not None)
        del agg
        ratio = history[-1] / shares
        keep = ratio / ratio.max()
    combined = combine_releases(releases, keep)
    weight, bias = linear_head_parameters(combined.solve(decoder=settings.decoder), combined)
    model = make_model(settings)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    keys = list(state)
    state[keys[-2]] = weight.astype(state[keys[-2]].dtype).reshape(state[keys[-2]].shape)
    state[keys[-1]] = bias.astype(state[keys[-1]].dtype).reshape(state[keys[-1]].shape)
    return evaluate(settings, state), history, undecidable


def auroc(w: np.ndarray, bad: np.ndarray) -> float:
    good, poor = w[~bad], w[bad]
    if not len(good) or not len(poor):
        return math.nan
    return float(((good[:, None] > poor[None, :]).sum() + 0.5 * (good[:, None] == poor[None, :]).sum()) / (len(good) * len(poor)))


def measure(cfg: dict[str, Any], protocol: str, only_rules: set[str] | None = None) -> list[dict[str, Any]]:
    settings, trainers, bad = participants(cfg)
    counts = np.array([t.release.num_examples for t in trainers], dtype=np.float64)  # type: ignore[union-attr]
    fedavg_share = counts / counts.sum()
    rows = []
    names = rules(bad, [release_view(t.release) for t in trainers]) if protocol == "parameters" else {n: (None, n == "oracle") for n in ("fedavg", "oracle", "legacy", "calibrated")}
    for name, (aggregate, oracle) in names.items():
        if only_rules is not None and name not in only_rules:
            continue
        use = [i for i in range(len(trainers)) if not (oracle and bad[i])]
        t0 = time.perf_counter()
        if protocol == "parameters":
            assert aggregate is not None
            value, history, undecidable = run_parameters(settings, trainers, aggregate, use)
        else:
            value, history, undecidable = run_statistics(settings, trainers, name, use)
        row: dict[str, Any] = {
            "dataset": settings.dataset, "protocol": protocol, "kind": settings.unreliable_kind,
            "fraction": settings.unreliable_fraction, "partitioning": settings.partitioning,
            "epsilon": settings.epsilon, "seed": settings.seed, "rounds": settings.num_rounds, "rule": name,
            "metric": settings.metric, "value": value, "auroc": math.nan, "bad_mass": math.nan,
            "honest_kept": math.nan, "undecidable_rounds": undecidable, "seconds": time.perf_counter() - t0,
        }
        if name in ("legacy", "calibrated", "calibrated-params", "multikrum") and history and history[-1] is not None:
            ws = np.stack([h for h in history if h is not None])
            ratio = ws / fedavg_share
            row["honest_kept"] = float(np.mean(ratio[:, ~bad] >= 0.8))
            if bad.any():
                row["auroc"] = auroc(ws[-1], bad)
                row["bad_mass"] = float(ws[-1][bad].sum() / fedavg_share[bad].sum())
        rows.append(row)
    return rows


RULES = {"parameters": ("fedavg", "oracle", "fedmedian", "fedtrimmedavg", "multikrum", "legacy", "calibrated",
                        "calibrated-params"),
         "statistics": ("fedavg", "oracle", "legacy", "calibrated")}
KEY = ("dataset", "protocol", "kind", "fraction", "partitioning", "epsilon", "seed")


def cells(quick: bool, only: str | None, seeds: list[int], protocols: list[str]) -> list[tuple[dict[str, Any], str]]:
    """Every (configuration, protocol) to measure; the protocols of one configuration are adjacent, so
    they share its participants' releases (one release per participant, as in the App)."""
    out: list[tuple[dict[str, Any], str]] = []
    grid = [("census2000", ["random-targets"], 30), ("fashion-mnist", ["flipped-labels", "random-labels"], 20)]
    for seed in seeds:
        for dataset, kinds, rounds in grid:
            if only and dataset != only:
                continue
            for part in ("iid", "dirichlet"):
                for eps in (1.0, 10.0):
                    for kind in kinds:
                        for frac in (0.0, 0.1, 0.3, 0.4):
                            if frac == 0.0 and kind != kinds[0]:
                                continue
                            if quick and (eps != 1.0 or frac not in (0.0, 0.3)):
                                continue
                            # insecure-noise-seed: NOT private -- every contender, and every later re-run of
                            # one contender, sees the same releases (benchmark only, never in the App)
                            cfg = {"dataset": dataset, "unreliable-kind": kind, "unreliable-fraction": frac,
                                   "partitioning": part, "epsilon": eps, "seed": seed, "num-rounds": rounds,
                                   "insecure-noise-seed": 1000 + seed}
                            out.extend((cfg, protocol) for protocol in protocols)
    return out


def _key(cfg: dict[str, Any], protocol: str) -> tuple[Any, ...]:
    return (cfg["dataset"], protocol, cfg["unreliable-kind"], float(cfg["unreliable-fraction"]), cfg["partitioning"],
            float(cfg["epsilon"]), int(cfg["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_calibrated.csv"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("census2000", "fashion-mnist"))
    parser.add_argument("--protocol", choices=("parameters", "statistics", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rules", nargs="+", help="measure only these rules (the others' rows are kept)")
    parser.add_argument("--summary", action="store_true", help="only print the goals table from --out")
    args = parser.parse_args()
    if not args.summary:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        done: set[tuple[Any, ...]] = set()
        if args.out.exists():
            with args.out.open() as fh:
                done = {(r["dataset"], r["protocol"], r["kind"], float(r["fraction"]), r["partitioning"], float(r["epsilon"]),
                         int(r["seed"]), r["rule"]) for r in csv.DictReader(fh)}
        protocols = ["parameters", "statistics"] if args.protocol == "both" else [args.protocol]
        for cfg, protocol in cells(args.quick, args.only, args.seeds, protocols):
            wanted = {r for r in RULES[protocol] if args.rules is None or r in args.rules}
            missing = {r for r in wanted if (*_key(cfg, protocol), r) not in done}
            if not missing:
                continue
            t0 = time.perf_counter()
            rows = measure(cfg, protocol, missing)
            append_rows(args.out, FIELDS, rows)
            print(f"{protocol[:5]} {cfg['dataset'][:7]} {cfg['unreliable-kind'][:7]} {cfg['partitioning'][:3]} eps={cfg['epsilon']:g} "
                  f"{cfg['unreliable-fraction']:.0%} s{cfg['seed']}: "
                  + " ".join(f"{r['rule']}={r['value']:.3f}" + (f"(auc {r['auroc']:.2f} mass {r['bad_mass']:.2f} kept {r['honest_kept']:.2f})"
                                                              if r["rule"] in ("legacy", "calibrated") else "") for r in rows)
                  + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    summary(args.out)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summary(path: Path) -> None:
    """The issue's goals per cell (means over the seeds), the old rule and the new default side by side.

    ``new`` is the default (``calibrated``: in the parameter protocol it also scores each participant's
    shared release under its known noise law); ``p-only`` the calibrated estimator on the parameters alone
    (``calibrated-params``: plain clients, or ``share-release = never``).

    Damage = oracle - FedAvg; recovery = (new - FedAvg) / damage; best Flower = the best of FedMedian,
    FedTrimmedAvg and MultiKrum in the parameter protocol on the same releases (also the comparison for
    the statistics protocol: what Flower's robust rules make of the same private participants). Goals:
    0 % unreliable: honest participants at >= 0.8x their FedAvg share in >= 95 % of participant-rounds and
    the metric within 0.005 of FedAvg; where the damage exceeds 0.02 (accuracy) / 0.01 (R^2): AUROC >= .95,
    unreliable mass <= 0.2x its FedAvg share, recovery >= 90 %, within 0.005 of the best Flower rule.
    """
    if not path.exists():
        return
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for r in rows:
        key = (r["protocol"], r["dataset"], r["kind"], r["partitioning"], r["epsilon"], r["fraction"])
        groups.setdefault(key, {}).setdefault(r["rule"], []).append(r)
    print(f"\n{'protocol':10} {'data':8} {'kind':8} {'split':5} {'eps':>4} {'bad':>4} {'n':>1} | {'FedAvg':>6} {'oracle':>6} {'bestFl':>6} "
          f"{'legacy':>6} {'new':>6} {'p-only':>6} | {'dmg':>6} {'recov':>6} | {'AUROC old/new':>13} {'mass old/new':>12} {'kept old/new':>12} {'und':>3} | goals")
    for key, by in sorted(groups.items()):
        protocol, dataset, kind, part, eps, frac = key

        def f(rule: str, col: str = "value", by: dict[str, list[dict[str, str]]] = by) -> float:
            return _mean([float(r[col]) if r[col] not in ("", "nan") else math.nan for r in by.get(rule, [])])

        flower_by = groups.get(("parameters", *key[1:]), {})

        def fl(rule: str, flower_by: dict[str, list[dict[str, str]]] = flower_by) -> float:
            return _mean([float(r["value"]) for r in flower_by.get(rule, [])])

        harm = 0.01 if dataset == "census2000" else 0.02
        fa, orc, new, leg = f("fedavg"), f("oracle"), f("calibrated"), f("legacy")
        flower = [v for v in (fl(r) for r in ("fedmedian", "fedtrimmedavg", "multikrum")) if math.isfinite(v)]
        best = max(flower) if flower else math.nan
        damage = orc - fa
        recov = (new - fa) / damage if damage > 0 else math.nan
        goals = []
        if float(frac) == 0.0:
            goals.append("kept" if f("calibrated", "honest_kept") >= 0.95 else "KEPT<.95")
            goals.append("~FA" if new >= fa - 0.005 else "METRIC")
        elif damage > harm:
            goals.append("auc" if f("calibrated", "auroc") >= 0.95 else "AUC")
            goals.append("mass" if f("calibrated", "bad_mass") <= 0.2 else "MASS")
            goals.append("recov" if recov >= 0.9 else "RECOV")
            if flower:
                goals.append("flower" if new >= best - 0.005 else "FLOWER")
        else:
            goals.append("(harmless)" + ("" if not flower or new >= best - 0.005 else " FLOWER")
                         + ("" if new >= fa - 0.005 else " <FA"))
        und = sum(int(r["undecidable_rounds"]) for r in by.get("calibrated", []))
        seeds = len(by.get("calibrated", by.get("fedavg", [])))
        print(f"{protocol:10} {dataset[:8]:8} {kind[:8]:8} {part[:5]:5} {float(eps):>4g} {float(frac):>4.0%} {seeds:>1} | {fa:>6.3f} {orc:>6.3f} "
              f"{best:>6.3f} {leg:>6.3f} {new:>6.3f} {f('calibrated-params'):>6.3f} | {damage:>+6.3f} {recov:>6.2f} | {f('legacy', 'auroc'):>6.2f}/{f('calibrated', 'auroc'):<6.2f} "
              f"{f('legacy', 'bad_mass'):>5.2f}/{f('calibrated', 'bad_mass'):<6.2f} {f('legacy', 'honest_kept'):>5.2f}/{f('calibrated', 'honest_kept'):<6.2f} "
              f"{und:>3} | {' '.join(goals)}")


if __name__ == "__main__":
    main()
