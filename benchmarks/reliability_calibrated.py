"""Functional-mechanism participants, both protocols: the real strategies side by side (issues #13, #25).

Exact commands of the committed CSV (``benchmarks/results/reliability_calibrated.csv``; App defaults,
Gaussian noise, the reporting seeds 3-5 in quick mode, both protocols: 35 minutes on 2 shared cores;
resumable: a re-run measures only the rows missing from the CSV; the full grid, ``--seeds 3 4 5``
without ``--quick``, takes about 1.5 hours) and of its goals summary:

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_calibrated --quick --seeds 3 4 5 \
        --out benchmarks/results/reliability_calibrated.csv
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_calibrated --quick --seeds 6 7 8 \
        --out benchmarks/results/reliability_calibrated.csv
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_calibrated --quick --seeds $(seq 16 45) \
        --rules ours fedavg oracle --out benchmarks/results/reliability_calibrated.csv  # the study seeds (stop 37), then
    #   --protocol parameters --rules fedmedian fedtrimmedavg multikrum legacy (Bulyan left out: 30-50 s a cell)
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_calibrated --seeds 3 4 5 --rules ours fedavg oracle \
        --out benchmarks/results/reliability_calibrated.csv  # the whole grid beside the previous estimator's (stop 38, 11 min)
    #   then --protocol parameters --rules fedmedian fedtrimmedavg multikrum legacy (stop 38, 25 min; no Bulyan), and
    #   --only census2000 --seeds $(seq 16 45) --rules ours fedavg oracle (stop 38: the census grid on the study seeds, 25 min)
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_calibrated --summary \
        --out benchmarks/results/reliability_calibrated.csv > benchmarks/results/reliability_calibrated_summary.txt

Seeds 6-8 are fresh (``benchmarks.reliability_common``): the previous estimator's rows for them were
measured by its own benchmark at 49c50b0 (``git worktree add <dir> 49c50b0``, then ``--quick --seeds 6 7 8
--rules calibrated`` there).

``--quick`` measures a handful of cells (epsilon = 1; 0 and 30 % unreliable); ``--only census2000`` one
data set; ``--rules ours`` one contender; ``--fractions 0`` the cells with that unreliable fraction. The census
tuning rows of stop 37 (``reliability_calibrated_census_tuning*.csv``): ``--quick --only census2000 --seeds $(seq
46 75) --rules ours fedavg oracle`` at 5ba62bb, and ``--rules ours`` at 0382ca0 (reverted). Stop 41 screened the
first-pass heterogeneity over every voice (``reliability_calibrated_tuning_tau*.csv``: ``--only census2000 --seeds
$(seq 46 60) --rules ours`` and ``--only fashion-mnist --seeds 0 1 2 --rules ours``, at 5a6472b and, in a worktree of
branch ``tau-all``, at f0e1ca3), then measured every ``ours`` row again at 3f2b007: the rows deleted from a copy,
``--seeds 3 4 5``, ``--quick --seeds 6 7 8``, ``--quick --only fashion-mnist --seeds $(seq 16 45)`` and ``--only
census2000 --seeds $(seq 16 45)``, each with ``--rules ours`` into a file of its own, then appended. Stop 42 screened
a known law's heterogeneity with a sampling part in the counts (``reliability_calibrated_tuning_sampling.csv``, at
53b3cb4 on branch ``sampling-het``, reverted: ``--only census2000 --seeds 46 47 48`` and ``--only fashion-mnist --seeds
0 1 2``, ``--rules ours``; its summary sets them beside the same seeds' rows of ``reliability_calibrated_tuning_tau.csv``).
Stop 43 measured that candidate on every held-out ``ours`` row (``reliability_calibrated_heldout_sampling.csv``, at
fe41a87 on branch ``sampling-heldout``, reverted: the four commands of stop 41, each ``--rules ours`` into a file of its
own, concatenated; ``reliability_calibrated_heldout_covmean_tail.csv`` the same at 06bf9a1), and screened a
regression release's covariance views on the tuning seeds
(``reliability_calibrated_tuning_{cov,covmean,covmean_median,covmean_gram,covmean_tail}.csv``: ``--only census2000
--seeds $(seq 46 60) --rules ours`` at c49bad5, c151c1f, a946b1d, 9968b2a and 06bf9a1, the first two stopped after
eight and seven seeds, and ``--only fashion-mnist --seeds 0 1 2 --rules ours`` at 9968b2a and 06bf9a1; reverted).
Stop 44: ``reliability_calibrated_candidate_cusum_params.csv``, ``--quick --seeds 3 4 5`` and ``6 7 8 --rules ours-params``
at 319218a (the memory as a discounted CUSUM, branch ``cusum-memory``, reverted; the only rows it can move: releases get
no allowance), each into a file of its own, concatenated.
Each file's goals, with its ``ours`` rows in place of the library's, and its paired changes (``*_summary.txt``):

    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_calibrated --summary --out benchmarks/results/reliability_calibrated.csv \
        --candidate benchmarks/results/reliability_calibrated_heldout_sampling.csv > benchmarks/results/reliability_calibrated_heldout_sampling_summary.txt  # and _covmean_tail
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_calibrated --summary --out benchmarks/results/reliability_calibrated_tuning_tau.csv \
        --candidate benchmarks/results/reliability_calibrated_tuning_cov.csv > benchmarks/results/reliability_calibrated_tuning_cov_summary.txt  # and the other three

What runs. The App's own participants (``flwr_ppcdl.app.experiment``: partitions, corruptions, frozen
bodies, ``trainer_config``; the Fashion-MNIST body pinned to ``pool4``, see ``FASHION_BODY``) as :class:`~flwr_ppcdl.clients.trainer.FunctionalMechanismTrainer` objects,
each releasing once (``insecure-noise-seed`` = 1000 + seed: every contender sees the same releases --
NOT private, for this comparison only), behind a ClientApp that replies as the App's does (arrays, the
count, and the release where the App shares it). Every contender is a real strategy started on an
:class:`~flwr_ppcdl.app.grid.InProcessGrid` (``benchmarks.reliability_common``):

* parameter protocol: ``ours`` (the App's ``ReliabilityWeightedFedAvg``, scoring each shared release's
  known-law view beside the parameters), ``ours-params`` (the same, ``score_releases=False``: plain
  clients), Flower's ``fedavg``, ``fedmedian``, ``fedtrimmedavg`` (beta 0.2), ``multikrum`` and
  ``bulyan`` (told the true count; Bulyan needs K >= 4f + 3 and is left out where it is not), the
  legacy truth-discovery rule (``legacy``) and ``oracle`` (FedAvg over the reliable participants);
* statistics protocol: ``ours`` (the App's ``SummedStatisticsFedAvg``), ``fedavg`` (its plain sum) and
  ``oracle`` (the plain sum of the reliable participants' releases); the participants only reply (the
  strategy sums their releases, it never reads their parameters).

``previous`` in the summary is the estimator of main before issue #25 (commit 49c50b0), measured by that
commit's benchmark on the same releases (``reliability_calibrated_previous.csv``).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import Bulyan  # noqa: E402

from benchmarks.contenders.truth_discovery import TruthDiscoveryFedAvg  # noqa: E402
from benchmarks.reliability_common import (  # noqa: E402
    append_rows,
    false_alarm_rate,
    goal_line,
    mean,
    provenance,
    read_rows,
    seed_role,
    spread,
    weight_statistics,
)
from flwr_ppcdl import wire  # noqa: E402
from flwr_ppcdl.app.experiment import (  # noqa: E402
    evaluate_model,
    load_participant,
    make_model,
    split_data,
    trainer_config,
)
from flwr_ppcdl.app.factory import make_strategy  # noqa: E402
from flwr_ppcdl.app.grid import InProcessGrid  # noqa: E402
from flwr_ppcdl.app.settings import RunSettings  # noqa: E402
from flwr_ppcdl.clients import TrainerConfig  # noqa: E402
from flwr_ppcdl.clients.trainer import FunctionalMechanismTrainer  # noqa: E402
from flwr_ppcdl.reliability import ReliabilityOptions  # noqa: E402

FIELDS = ("dataset", "protocol", "kind", "fraction", "partitioning", "epsilon", "seed", "seed_role", "rounds", "rule",
          "metric", "value", "auroc", "bad_mass", "honest_kept", "min_honest", "false_alarms", "undecidable_rounds",
          "seconds", "code_version", "packages")
RULES = {"parameters": ("fedavg", "oracle", "fedmedian", "fedtrimmedavg", "multikrum", "bulyan", "legacy", "ours",
                        "ours-params"),
         "statistics": ("fedavg", "oracle", "ours")}
FLOWER = ("fedmedian", "fedtrimmedavg", "multikrum", "bulyan")
FASHION_BODY = "pool4"
"""The Fashion-MNIST cells' frozen body: ``pool4``, the App's image body when the previous estimator's rows
(``reliability_calibrated_previous.csv``) were measured, so ``ours`` and ``prev`` score the same releases
(the App's default image body is the ScatterNet since issue 26)."""
_CACHE: dict[tuple[Any, ...], tuple[RunSettings, list[FunctionalMechanismTrainer], np.ndarray]] = {}


def participants(cfg: dict[str, Any]) -> tuple[RunSettings, list[FunctionalMechanismTrainer], np.ndarray]:
    """The App's participants for ``cfg`` (released once, cached for every contender), and who is unreliable."""
    key = tuple(sorted(cfg.items()))
    if key not in _CACHE:
        _CACHE.clear()
        settings = settings_for(cfg)
        trainers, bad = [], []
        for p in range(settings.num_partitions):
            part = load_participant(settings, p)
            trainer = FunctionalMechanismTrainer(make_model(settings), (part.inputs, part.targets),
                                                 TrainerConfig(**trainer_config(settings, p)))
            trainer.ensure_release()
            trainers.append(trainer)
            bad.append(part.unreliable)
        _CACHE[key] = (settings, trainers, np.array(bad))
    return _CACHE[key]


def client_app(trainers: list[FunctionalMechanismTrainer], train: bool):
    """Reply as the App's ClientApp does (arrays, count, partition id, the release where it is shared); with
    ``train=False`` (statistics protocol: the strategy reads only the releases) the arrays are those sent."""

    def handle(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        trainer = trainers[pid]
        arrays = msg.content["arrays"]
        if train:
            trainer.fit(arrays.to_torch_state_dict())
            arrays = ArrayRecord(trainer.model.state_dict())
        release = trainer.release
        assert release is not None
        records: dict[str, Any] = {"arrays": arrays, "metrics": MetricRecord(
            {wire.NUM_EXAMPLES: float(release.num_examples), wire.PARTITION_ID: pid})}
        shared = trainer.shared_release_json()
        if shared is not None:
            records[wire.FM_RELEASE] = ConfigRecord({wire.RELEASE_JSON: shared})
        return Message(RecordDict(records), reply_to=msg)

    return handle


def settings_for(cfg: dict[str, Any], **overrides: Any) -> RunSettings:
    return RunSettings.from_config({"plot": False, "result-dir": "/tmp/flwr_ppcdl_calib", **cfg, **overrides})


def strategy_for(rule: str, cfg: dict[str, Any], k: int, f: int) -> Any:
    """The contender ``rule`` as the App (or Flower) builds it; None where it cannot run (Bulyan, K < 4f + 3)."""
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": k, "min_train_nodes": k}
    if rule == "bulyan":
        return Bulyan(num_malicious_nodes=f, **common) if k >= 4 * f + 3 else None
    if rule == "legacy":
        return TruthDiscoveryFedAvg(**common)
    name = {"oracle": "fedavg", "ours": "reliability", "ours-params": "reliability"}.get(rule, rule)
    strategy = make_strategy(settings_for(cfg, strategy=name, **{"min-nodes": k}))
    if rule == "ours-params":
        strategy.score_releases = False
    return strategy


def run(cfg: dict[str, Any], trainers: list[FunctionalMechanismTrainer], bad: np.ndarray, rule: str) -> dict[str, Any] | None:
    """Start ``rule`` for the run's rounds on the participants; the final metric and the weight statistics."""
    settings = settings_for(cfg)
    use = [p for p in range(len(trainers)) if not (rule == "oracle" and bad[p])]
    strategy = strategy_for(rule, cfg, len(use), int(bad[use].sum()))
    if strategy is None:
        return None
    nodes = [101 + p for p in use]
    grid = InProcessGrid(client_app(trainers, settings.protocol == "parameters"), node_ids=nodes,
                         node_config=lambda i, nid: {"partition-id": use[i], "num-partitions": len(trainers)})
    model = make_model(settings)
    result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=settings.num_rounds)
    state = result.arrays.to_torch_state_dict()
    model.load_state_dict(state)
    _, test = split_data(settings)
    value = float(evaluate_model(model, test, settings)[settings.metric])
    flags = {101 + p: bool(bad[p]) for p in use}
    history = getattr(strategy, "reliability_history", None)
    if history:
        stats = weight_statistics([r.weights for r in history], [r.fedavg_share for r in history], flags,
                                  [r.evidence for r in history])
        undecidable = sum(r.undecidable is not None for r in history)
    elif isinstance(strategy, TruthDiscoveryFedAvg):
        stats = weight_statistics(strategy.weights_history, strategy.shares_history, flags)
        undecidable = 0
    else:
        stats, undecidable = {}, 0
    return {"value": value, "undecidable_rounds": undecidable, **stats}


def cells(quick: bool, only: str | None, seeds: list[int], protocols: list[str]) -> list[tuple[dict[str, Any], str]]:
    """Every (configuration, protocol); the protocols of one configuration are adjacent (shared releases)."""
    out: list[tuple[dict[str, Any], str]] = []
    grid = [("census2000", ["random-targets"], 30), ("fashion-mnist", ["flipped-labels", "random-labels"], 20)]
    body = {"fashion-mnist": {"body": FASHION_BODY}, "census2000": {}}
    for seed in seeds:
        for dataset, kinds, rounds in grid:
            if only and dataset != only:
                continue
            for part in ("iid", "dirichlet"):
                for eps in (1.0, 10.0):
                    for kind in kinds:
                        for frac in (0.0, 0.1, 0.3, 0.4):
                            if (frac == 0.0 and kind != kinds[0]) or (quick and (eps != 1.0 or frac not in (0.0, 0.3))):
                                continue
                            cfg = {"dataset": dataset, "unreliable-kind": kind, "unreliable-fraction": frac,
                                   "partitioning": part, "epsilon": eps, "seed": seed, "num-rounds": rounds,
                                   "insecure-noise-seed": 1000 + seed, **body[dataset]}
                            out.extend((dict(cfg, protocol=p), p) for p in protocols)
    return out


def measure(cfg: dict[str, Any], protocol: str, rules: set[str]) -> list[dict[str, Any]]:
    _, trainers, bad = participants({k: v for k, v in cfg.items() if k != "protocol"})
    settings = settings_for(cfg)
    rows = []
    for rule in RULES[protocol]:
        if rule not in rules:
            continue
        t0 = time.perf_counter()
        got = run(cfg, trainers, bad, rule)
        base = {"dataset": settings.dataset, "protocol": protocol, "kind": settings.unreliable_kind,
                "fraction": settings.unreliable_fraction, "partitioning": settings.partitioning,
                "epsilon": settings.epsilon, "seed": settings.seed, "seed_role": seed_role(settings.seed),
                "rounds": settings.num_rounds, "rule": rule, "metric": settings.metric, **provenance()}
        got = {k: v for k, v in (got or {}).items() if k in FIELDS}
        rows.append({**base, **{f: math.nan for f in FIELDS if f not in base}, **got, "seconds": time.perf_counter() - t0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_calibrated.csv"))
    parser.add_argument("--previous", type=Path, default=Path("benchmarks/results/reliability_calibrated_previous.csv"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("census2000", "fashion-mnist"))
    parser.add_argument("--protocol", choices=("parameters", "statistics", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rules", nargs="+", help="measure only these contenders (the others' rows are kept)")
    parser.add_argument("--fractions", type=float, nargs="+", help="measure only cells with these unreliable fractions")
    parser.add_argument("--summary", action="store_true", help="only print the goals from --out")
    parser.add_argument("--candidate", type=Path, help="with --summary: the goals with this file's ``ours`` rows in place of "
                        "--out's (a screened candidate), then each cell's paired change on the seeds both measured")
    args = parser.parse_args()
    if not args.summary:
        done = {tuple(r[k] for k in ("dataset", "protocol", "kind", "fraction", "partitioning", "epsilon", "seed", "rule"))
                for r in read_rows(args.out)}
        protocols = ["parameters", "statistics"] if args.protocol == "both" else [args.protocol]
        for cfg, protocol in cells(args.quick, args.only, args.seeds, protocols):
            if args.fractions is not None and float(cfg["unreliable-fraction"]) not in args.fractions:
                continue
            key = (cfg["dataset"], protocol, cfg["unreliable-kind"], str(float(cfg["unreliable-fraction"])),
                   cfg["partitioning"], str(float(cfg["epsilon"])), str(cfg["seed"]))
            missing = {r for r in RULES[protocol] if (args.rules is None or r in args.rules) and (*key, r) not in done}
            if not missing:
                continue
            t0 = time.perf_counter()
            rows = measure(cfg, protocol, missing)
            append_rows(args.out, FIELDS, rows)
            print(f"{protocol[:5]} {cfg['dataset'][:7]} {cfg['unreliable-kind'][:7]} {cfg['partitioning'][:3]} "
                  f"eps={cfg['epsilon']:g} {cfg['unreliable-fraction']:.0%} s{cfg['seed']}: "
                  + " ".join(f"{r['rule']}={r['value']:.3f}" for r in rows) + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    summary(args.out, args.previous, args.candidate)


def summary(path: Path, previous: Path, candidate: Path | None = None) -> None:
    """The goals per cell, reporting (3-5), fresh (6-8), study (16-45) and tuning seeds in separate tables, and one
    PASS/FAIL line per goal (see ``docs/reliability.md``, "Measured"); with a ``candidate``, its ``ours`` rows replace
    those of ``path`` and the paired changes follow (:func:`paired`)."""
    rows, prev = read_rows(path), read_rows(previous)
    cand = None if candidate is None else read_rows(candidate)
    shown = rows if cand is None else [r for r in rows if r["rule"] != "ours"] + cand
    for role in ("report", "fresh", "study", "tune"):
        _summary_table([r for r in shown if r["seed_role"] == role], [r for r in prev if seed_role(int(r["seed"])) == role], role)
    if cand is not None:
        paired([r for r in rows if r["rule"] == "ours"], cand)


def paired(base: list[dict[str, str]], cand: list[dict[str, str]]) -> None:
    """Per seed role and cell, over the seeds both files measured: the mean value before -> after, the mean paired
    change with its standard error, and the AUROC, honest kept and false-alarm rate before -> after."""
    def key(r: dict[str, str]) -> tuple[str, ...]:
        return (r["seed_role"], *_cell(r), r["seed"])

    before = {key(r): r for r in base}
    cells: dict[tuple[str, ...], list[tuple[dict[str, str], dict[str, str]]]] = {}
    for r in cand:
        if (k := key(r)) in before:
            cells.setdefault(k[:-1], []).append((before[k], r))
    print(f"\n## paired: the candidate ({', '.join(sorted({r['code_version'] for r in cand}))}) against the rows it replaces\n"
          f"{'role':6} {'protocol':10} {'data':8} {'kind':8} {'split':5} {'eps':>4} {'bad':>4} {'n':>3} | value before -> after (change +- se) | "
          "AUROC | honest kept | false alarms")
    for c, pairs in sorted(cells.items()):
        def m(col: str, i: int, pairs: list[tuple[dict[str, str], dict[str, str]]] = pairs) -> float:
            return mean([float(p[i][col]) for p in pairs if p[i][col] not in ("", "nan")])

        d = [float(b["value"]) - float(a["value"]) for a, b in pairs]
        se = spread(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        print(f"{c[0]:6} {c[1]:10} {c[2][:8]:8} {c[3][:8]:8} {c[4][:5]:5} {float(c[5]):>4g} {float(c[6]):>4.0%} {len(pairs):>3} | "
              f"{m('value', 0):>6.3f} -> {m('value', 1):>6.3f} ({mean(d):+.3f} +- {se:.3f}) | {m('auroc', 0):.2f} -> {m('auroc', 1):.2f} | "
              f"{m('honest_kept', 0):.2f} -> {m('honest_kept', 1):.2f} | {m('false_alarms', 0):.4f} -> {m('false_alarms', 1):.4f}")


def _summary_table(rows: list[dict[str, str]], prev: list[dict[str, str]], role: str) -> None:
    if not rows:
        return
    seeds = sorted({int(r["seed"]) for r in rows})
    versions = sorted({r["code_version"] for r in rows})
    print(f"\n## {role} seeds {seeds} (code {', '.join(versions)}; {rows[0]['packages']})")
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for r in rows:
        groups.setdefault(_cell(r), {}).setdefault(r["rule"], []).append(r)
    before: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in prev:  # the previous estimator on the same seeds only
        if r["rule"] == "calibrated" and int(r["seed"]) in seeds:
            before.setdefault(_cell(r), []).append(r)
    print(f"{'protocol':10} {'data':8} {'kind':8} {'split':5} {'eps':>4} {'bad':>4} | {'FedAvg':>6} {'oracle':>6} {'bestFl':>6} "
          f"{'legacy':>6} {'prev':>6} {'ours':>6} {'p-only':>6} | {'AUROC':>5} {'mass':>5} {'kept':>5} {'FA':>5} {'und':>3} | goals")
    tally: dict[str, list[bool]] = {}
    for key, by in sorted(groups.items()):
        protocol, dataset, kind, part, eps, frac = key

        def v(rule: str, col: str = "value", by: dict[str, list[dict[str, str]]] = by) -> list[float]:
            return [float(r[col]) for r in by.get(rule, []) if r[col] not in ("", "nan")]

        flower_by = groups.get(("parameters", *key[1:]), {})
        best = max([mean(v(f, by=flower_by)) for f in FLOWER if v(f, by=flower_by)] or [math.nan])
        fa, orc, ours = mean(v("fedavg")), mean(v("oracle")), mean(v("ours"))
        old = [float(r["value"]) for r in before.get(key, [])]
        old_mass = mean([float(r["bad_mass"]) for r in before.get(key, []) if r["bad_mass"] not in ("", "nan")])
        harm = 0.01 if dataset == "census2000" else 0.02
        damage = orc - fa
        goals: list[tuple[str, bool]] = []
        if old:  # no regression: at least the previous estimator's value, within its seed-to-seed spread
            goals.append(("no regression", ours >= mean(old) - max(spread(old), 0.002)))
        if float(frac) == 0.0:
            goals.append(("honest kept", mean(v("ours", "honest_kept")) >= 0.95))
        elif damage > harm:
            goals += [("auroc", mean(v("ours", "auroc")) >= 0.95), ("mass", mean(v("ours", "bad_mass")) <= 0.2),
                      ("recovery", (ours - fa) / damage >= 0.9 or ours >= best - 0.005)]
            if old:
                goals.append(("previous mass kept", not (old_mass <= 0.2) or mean(v("ours", "bad_mass")) <= 0.2))
        for name, ok in goals:
            tally.setdefault(name, []).append(ok)
        print(f"{protocol:10} {dataset[:8]:8} {kind[:8]:8} {part[:5]:5} {float(eps):>4g} {float(frac):>4.0%} | {fa:>6.3f} {orc:>6.3f} "
              f"{best:>6.3f} {mean(v('legacy')):>6.3f} {mean(old):>6.3f} {ours:>6.3f} {mean(v('ours-params')):>6.3f} | "
              f"{mean(v('ours', 'auroc')):>5.2f} {mean(v('ours', 'bad_mass')):>5.2f} {mean(v('ours', 'honest_kept')):>5.2f} "
              f"{mean(v('ours', 'false_alarms')):>5.3f} {sum(int(float(r['undecidable_rounds'])) for r in by.get('ours', [])):>3} | "
              + " ".join(n if ok else n.upper() for n, ok in goals))
    print()
    for name, oks in tally.items():
        print(goal_line(name, sum(oks), len(oks)))
    stated = ReliabilityOptions().false_alarm_rate
    for protocol in ("parameters", "statistics"):
        ours = [r for r in rows if r["rule"] == "ours" and r["protocol"] == protocol]
        rate, low, high = false_alarm_rate(ours)
        if math.isfinite(rate):
            print(f"measured false-alarm rate per honest participant-round, {protocol} protocol (every cell): {rate:.4f} "
                  f"[{low:.4f}, {high:.4f}] over {len({r['seed'] for r in ours})} seeds (stated {stated}; within 2x: "
                  f"{'PASS' if stated / 2 <= rate <= 2 * stated else 'FAIL'})")


def _cell(r: dict[str, str]) -> tuple[str, ...]:
    return (r["protocol"], r["dataset"], r["kind"], r["partitioning"], str(float(r["epsilon"])), str(float(r["fraction"])))


if __name__ == "__main__":
    main()
