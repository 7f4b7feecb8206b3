"""The honest nulls of the plain-client statistics, measured, and evidence rules replayed on them (issue #25).

``--dump DIR`` runs ``ours`` (library defaults) on the K = 10 plain cells of :mod:`benchmarks.reliability_plain`
(tuning seeds only) and records, per round, every participant's standardised statistics, their kinds (the
nulls they are calibrated on; one-sided ones as their running sums, which the evidence sums) and the node ids (one JSON per run, with the code version). ``--summary``
reads the records and prints:

1. the quantiles of the honest law-free ``collapse`` values (nobody unreliable; the estimator standardises
   them by their round's median and MAD) beside Student-t(nu) values standardised the same way, ten at a time;
2. the rounds' decisions replayed from the recorded statistics under evidence rules -- the log-likelihood
   ratio (the normal's ``z^2 / 2``, or the Student-t's ``(nu + 1) / 2 log(1 + z^2 / nu)`` for estimated nulls)
   and the degrees of freedom of ``collapse`` and of the other estimated nulls -- as: honest participants
   flagged in one round, honest ones below 0.8 of their weight with memory (the posterior alone), and the
   unreliable participants' posterior mass over their share;
3. (recordings with energies, stop 37) the library's rule with one more piece of evidence, replayed the same
   way: the ``reversal`` summed across rounds like ``gap`` (``estimate._accumulate``), or the energy (the free
   alternative) as a one-sided estimated statistic, one round or summed.

A replay holds each run's trajectory fixed (the statistics the recording code saw): it ranks rules; the
benchmarks measure the chosen one. Commands (the committed table is ``results/reliability_null_study.txt``):

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_null_study --dump /tmp/flwr_ppcdl_calib/null_study
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_null_study --summary --dump /tmp/flwr_ppcdl_calib/null_study

The extensions' table (``results/reliability_null_study_extensions.txt``, stop 37) was recorded at 6cd81e0 into a
fresh ``--dump`` folder the same way.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

import flwr_ppcdl.reliability.estimate as estimate
from benchmarks import reliability_plain as plain
from benchmarks.reliability_common import TUNE_SEEDS, provenance
from flwr_ppcdl.reliability import ReliabilityOptions
from flwr_ppcdl.reliability import calibration as cal
from flwr_ppcdl.reliability import constants as const

RULES = (("normal", 10.0, 10.0), ("student", 10.0, 10.0), ("student", 6.0, 10.0), ("student", 4.0, 10.0), ("student", 6.0, 6.0),
         ("student+mirror", 6.0, 10.0))
"""(log-likelihood ratio of estimated nulls -- ``student+mirror``: the reversal's too --, collapse's degrees of freedom,
the other estimated nulls')."""


def dump(folder: Path, seeds: list[int]) -> None:
    """Run the cells with ``fit_block`` and the strategy recorded (the estimator itself is unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    rounds: list[list[dict[str, Any]]] = []
    fit_block, calibrated = estimate.fit_block, estimate._calibrated
    made: list[Any] = []
    fits: list[Any] = []

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        fits.append(fit_block(*args, **kwargs))
        return fits[-1]

    def recording_round(*args: Any, **kwargs: Any) -> Any:
        fits.clear()
        out = calibrated(*args, **kwargs)  # the running sums are in the fits now (what the evidence sums)
        rounds.append([{"z": {n: z.tolist() for n, z in f.z.items()}, "kinds": f.kinds, "energy": f.energy.tolist(),
                        "consistent": f.consistent.tolist()} for f in fits])
        return out

    estimate.fit_block, estimate._calibrated = recording_fit, recording_round  # type: ignore[assignment]
    for cell in plain.cells(["small"], seeds, False):
        path = folder / f"{cell['scenario']}_{cell['partitioning']}_{cell['seed']}.json"
        if cell["clients"] != 10 or path.exists():
            continue
        rounds.clear()
        result = plain.run(cell, "ours", made) or {}
        nodes = [list(r.weights) for r in made[-1].reliability_history]
        bad = plain.unreliable_nodes(cell)
        path.write_text(json.dumps({"cell": cell, **provenance(), "bad": bad, "accuracy": result.get("accuracy"),
                                    "rounds": [{"blocks": b, "nodes": n} for b, n in zip(rounds, nodes, strict=True)]}))
        print(f"{path.name}: accuracy {result.get('accuracy', math.nan):.3f}", flush=True)


def _llr(z: np.ndarray, kind: tuple[Any, ...], rule: tuple[str, float, float]) -> np.ndarray:
    zz = z if kind[1] else np.maximum(z, 0.0)
    if rule[0].startswith("student") and kind[3] > 0 and (kind[0] == "estimated" or (kind[0] == "mirror" and rule[0].endswith("mirror"))):
        nu = _degrees(kind, rule)
        return 0.5 * (nu + 1.0) * np.log1p(zz * zz / nu)
    return 0.5 * zz * zz


def _degrees(kind: tuple[Any, ...], rule: tuple[str, float, float]) -> float:
    if kind[0] in ("known", "scaled"):
        return const.HETEROGENEITY_TAIL
    return rule[1] if kind[0] == "estimated" and kind[1] else rule[2]


def _threshold(k: int, alpha: float, kinds: tuple[tuple[Any, ...], ...], rule: tuple[str, float, float]) -> float:
    """The library's own simulation (``calibration.evidence_threshold``, uncached) with ``rule``'s ratio and tails."""
    saved = cal.llr, cal.degrees
    cal.llr, cal.degrees = (lambda z, kind: _llr(z, kind, rule)), (lambda kind: _degrees(kind, rule))  # type: ignore[assignment]
    try:
        return float(cal.evidence_threshold.__wrapped__(k, alpha, kinds))
    finally:
        cal.llr, cal.degrees = saved


def summary(folder: Path) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    print(f"# {len(runs)} runs, seeds {sorted({r['cell']['seed'] for r in runs})} (tuning), code "
          f"{sorted({r['code_version'] for r in runs})}; {runs[0]['packages']}")
    honest = np.abs([z for r in runs if r["cell"]["scenario"] == "none" for rd in r["rounds"]
                     for z in rd["blocks"][0]["z"].get("collapse", [])])
    qs = [0.5, 0.9, 0.95, 0.98, 0.99]
    print(f"\n## |collapse| of honest participants (nobody unreliable, {honest.size} values), quantiles {qs}")
    print(f"{'measured':>9}: " + " ".join(f"{v:5.2f}" for v in np.quantile(honest, qs)))
    rng = np.random.default_rng(0)
    for nu in (30, 10, 6, 4):
        d = rng.standard_t(nu, (100_000, 10))
        loc, scale = cal.median_mad(d)
        print(f"{f't({nu})':>9}: " + " ".join(f"{v:5.2f}" for v in np.quantile(np.abs((d - loc[:, None]) / scale[:, None]), qs)))
    cells = sorted({(r["cell"]["scenario"], r["cell"]["partitioning"]) for r in runs})
    print("\n## replayed decisions: honest flagged in one round / honest below 0.8 with memory / unreliable mass over share")
    print(f"{'rule (ratio, collapse nu, other nu)':36} " + " ".join(f"{s[:8] + ' ' + p[:3]:>16}" for s, p in cells))
    cache: dict[Any, float] = {}
    for rule in RULES:
        print(f"{f'{rule[0]}, {rule[1]:g}, {rule[2]:g}':36} " + " ".join(f"{_replay(runs, cell, rule, None, cache):>16}" for cell in cells))
    recorded = [r for r in runs if all("energy" in b for rd in r["rounds"] for b in rd["blocks"])]
    if recorded:
        print(f"\n## the library's rule (student, 6, 10) with one more piece of evidence ({len(recorded)} runs with energies)")
        for extra in EXTENSIONS:
            print(f"{extra:36} " + " ".join(f"{_replay(recorded, cell, RULES[2], extra, cache):>16}" for cell in cells))


EXTENSIONS = ("none", "reversal summed", "energy", "energy summed")


def _replay(runs: list[dict[str, Any]], cell: tuple[str, str], rule: tuple[str, float, float], extra: str | None,
            cache: dict[Any, float]) -> str:
    """One cell's runs replayed under ``rule`` (and an ``EXTENSIONS`` entry): the three figures of the table."""
    alpha, rate = ReliabilityOptions().false_alarm_rate, ReliabilityOptions().memory_rate or 0.0
    flagged, low, mass = [], [], []
    for run in (r for r in runs if (r["cell"]["scenario"], r["cell"]["partitioning"]) == cell):
        memory: dict[int, float] = {}
        sums: dict[tuple[int, int], tuple[float, float]] = {}  # (block, node) -> (A, W), as estimate._accumulate
        for rd in run["rounds"]:
            k = len(rd["nodes"])
            total, kinds = np.zeros(k), []
            for b, block in enumerate(rd["blocks"]):
                stats = {name: (np.asarray(z, dtype=np.float64), tuple(block["kinds"][name])) for name, z in block["z"].items()}
                if extra in ("energy", "energy summed"):
                    stats["energy"] = (np.asarray(block["energy"], dtype=np.float64), ("estimated", False, 1.0, 1.0))
                for name, (z, kind) in stats.items():
                    summed = extra == f"{name} summed"  # "reversal summed" or "energy summed"
                    if summed:
                        old = np.array([sums.get((b, n), (0.0, 0.0)) for n in rd["nodes"]])
                        acc, squares = z + rate * old[:, 0], 1.0 + rate * rate * old[:, 1]
                        sums.update({(b, n): (float(a), float(w)) for n, a, w in zip(rd["nodes"], acc, squares, strict=True)})
                        z = acc / np.sqrt(squares)
                    if summed or name == "energy":  # standardised again by the consistent voices: an estimated null
                        z, shrink, tail = cal.standardise(z, np.asarray(block["consistent"], dtype=bool), 1.0)
                        kind = ("estimated", False, round(shrink, 1), tail)
                    total += _llr(z, kind, rule)
                    kinds.append(kind)
            key = (k, tuple(sorted(kinds)), rule)
            if key not in cache:
                cache[key] = _threshold(k, alpha, key[1], rule) if kinds else math.inf
            log_odds = total - cache[key] + rate * np.maximum([memory.get(n, 0.0) for n in rd["nodes"]], 0.0)
            memory.update(zip(rd["nodes"], log_odds.tolist(), strict=True))
            weight = 1.0 / (1.0 + np.exp(np.clip(const.SHARPNESS * log_odds, -700, 700)))
            bad = np.isin(rd["nodes"], run["bad"])
            flagged += list((total - cache[key] > 0)[~bad])
            low += list((weight < 0.8)[~bad])
            if bad.any():
                mass.append(weight[bad].sum() / weight.sum() / bad.mean())
    return f"{np.mean(flagged):.3f}/{np.mean(low):.3f}/{np.mean(mass) if mass else math.nan:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", type=Path, default=Path("/tmp/flwr_ppcdl_calib/null_study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNE_SEEDS))
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(args.dump)
    elif refused := [s for s in args.seeds if s not in TUNE_SEEDS]:
        raise SystemExit(f"seeds {refused} are not tuning seeds {TUNE_SEEDS}: nulls are studied on tuning seeds only")
    else:
        dump(args.dump, args.seeds)


if __name__ == "__main__":
    main()
