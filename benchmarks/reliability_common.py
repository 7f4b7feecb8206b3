"""What the reliability benchmarks share: provenance columns, seed roles, contenders, statistics, goals.

Every contender is a real Flower Message-API strategy driven through
:class:`~flwr_ppcdl.app.grid.InProcessGrid` (``strategy.start``): the project's
(``ReliabilityWeightedFedAvg``, ``SummedStatisticsFedAvg``), Flower's (``FedAvg``, ``FedMedian``,
``FedTrimmedAvg``, ``MultiKrum``, ``Bulyan``; told the true number of unreliable participants where
they take one), the legacy truth-discovery rule (:mod:`benchmarks.contenders.truth_discovery`) and the
oracle (Flower's FedAvg over the reliable participants only). Nothing is re-implemented here.

Seeds 0-2 tune (every constant in ``flwr_ppcdl/reliability/constants.py`` was chosen on them; seeds 10-15
joined them at stop 32 as more replicates for paired variants, ``benchmarks/reliability_tuning.py``), seeds
3-5 report, seeds 6-8 are fresh (a check after a reporting run had informed a choice; one later choice, the
Gram rule of stop 31, was made after a variant had been run on them: ``docs/reliability.md`` section 8), seeds
16-45 are the study seeds (``STUDY_SEEDS``);
every row names its seed's role, the code version (git commit) and the package versions.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._provenance import git_commit

TUNE_SEEDS = (0, 1, 2, 10, 11, 12, 13, 14, 15)
"""Seeds 10-15 joined the tuning seeds at stop 32 (``benchmarks/reliability_tuning.py``): more replicates for paired variants."""
REPORT_SEEDS = (3, 4, 5)
FRESH_SEEDS = (6, 7, 8)
DIAGNOSIS_SEEDS = tuple(range(46, 76))
"""Looked at in stop 37 (flipped labels under skew, one run per seed, and recorded statistics): tuning seeds from
then on, never reported."""
STUDY_SEEDS = tuple(range(16, 46))
"""Never run before stop 37: a wide sample of partitions for the figures that move most from seed to seed with
10 participants (false alarms where nobody is unreliable, flipped labels under skew), one run per seed."""
PACKAGES = ("flwr", "torch", "numpy")


def seed_role(seed: int) -> str:
    roles = {"tune": TUNE_SEEDS + DIAGNOSIS_SEEDS, "report": REPORT_SEEDS, "fresh": FRESH_SEEDS, "study": STUDY_SEEDS}
    return next((role for role, seeds in roles.items() if seed in seeds), "other")


def provenance() -> dict[str, str]:
    """The code version (git commit, ``+dirty`` with uncommitted changes) and the package versions."""
    commit = git_commit(["flwr_ppcdl", "benchmarks"], digits=12, untracked=False)
    return {"code_version": commit, "packages": " ".join(f"{p}={metadata.version(p)}" for p in PACKAGES)}


def append_rows(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header first when the file is new; a file with fewer columns is
    rewritten with the new ones empty): resumable benchmarks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    old = read_rows(path)
    if old and list(old[0]) != list(fields):  # a file written before a column was added: rewrite it, new columns empty
        if missing := set(old[0]) - set(fields):
            raise ValueError(f"{path} has columns {sorted(missing)} that {list(fields)} lacks")
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fields), restval="")
            writer.writeheader()
            writer.writerows(old)
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def auroc(weights: np.ndarray, bad: np.ndarray) -> float:
    """Probability that a reliable participant outweighs an unreliable one (ties count half)."""
    good, poor = weights[~bad], weights[bad]
    if not len(good) or not len(poor):
        return math.nan
    return float(((good[:, None] > poor[None, :]).sum() + 0.5 * (good[:, None] == poor[None, :]).sum())
                 / (len(good) * len(poor)))


def weight_statistics(history: list[dict[int, float]], shares: list[dict[int, float]], bad: dict[int, bool],
                      evidence: list[dict[int, float]] | None = None, minority: set[int] | None = None) -> dict[str, float]:
    """AUROC and unreliable mass (last round), honest participant-rounds at >= 0.8x their FedAvg share, the
    smallest honest share ratio, honest participant-rounds flagged (evidence > 0: the measured false-alarm
    rate), and the ``minority``'s mean share ratio over the rounds."""
    out = {"auroc": math.nan, "bad_mass": math.nan, "honest_kept": math.nan, "min_honest": math.nan,
           "false_alarms": math.nan, "minority_share": math.nan}
    rounds = [(w, s) for w, s in zip(history, shares, strict=True) if w]
    if not rounds:
        return out
    ratios = [w[n] / s[n] for w, s in rounds for n in w if not bad.get(n, False) and s.get(n, 0) > 0]
    out["honest_kept"] = float(np.mean(np.array(ratios) >= 0.8)) if ratios else math.nan
    out["min_honest"] = float(np.min(ratios)) if ratios else math.nan
    last, share = rounds[-1]
    nodes = sorted(last)
    flags = np.array([bad.get(n, False) for n in nodes])
    if flags.any():
        out["auroc"] = auroc(np.array([last[n] for n in nodes]), flags)
        out["bad_mass"] = float(sum(last[n] for n in nodes if bad.get(n)) / max(sum(share[n] for n in nodes if bad.get(n)), 1e-300))
    if evidence:
        alarms = [e[n] > 0 for e in evidence for n in e if not bad.get(n, False)]
        out["false_alarms"] = float(np.mean(alarms)) if alarms else math.nan
    if minority:
        out["minority_share"] = float(np.mean([sum(w[n] for n in w if n in minority) / max(sum(s[n] for n in w if n in minority), 1e-300)
                                               for w, s in rounds]))
    return out


def false_alarm_rate(rows: Iterable[dict[str, str]]) -> tuple[float, float, float]:
    """The measured false-alarm rate of ``rows`` (their ``false_alarms``: honest participant-rounds flagged): the mean
    over seeds of each seed's mean over its rows, and a 95 % interval resampling the seeds (the partition is what moves
    the rate most; with fewer than five seeds the interval is their range)."""
    by_seed: dict[str, list[float]] = {}
    for r in rows:
        if r["false_alarms"] not in ("", "nan"):
            by_seed.setdefault(r["seed"], []).append(float(r["false_alarms"]))
    per_seed = np.array([np.mean(v) for v in by_seed.values()])
    if per_seed.size == 0:
        return math.nan, math.nan, math.nan
    if per_seed.size < 5:
        return float(per_seed.mean()), float(per_seed.min()), float(per_seed.max())
    means = np.random.default_rng(0).choice(per_seed, (10_000, per_seed.size)).mean(axis=1)
    return float(per_seed.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def mean(values: Iterable[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def spread(values: Iterable[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def seed_means(rows: Iterable[dict[str, str]], column: str, key: Callable[[dict[str, str]], tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """A seed's figure is the mean of its runs: ``column`` averaged over the rows that share ``key(row)`` (a tuple that
    ends with the seed, e.g. cell, rule, seed); empty and NaN values are skipped, and a key with none is left out."""
    runs: dict[tuple[str, ...], list[float]] = {}
    for r in rows:
        if r[column] not in ("", "nan"):
            runs.setdefault(key(r), []).append(float(r[column]))
    return {k: mean(v) for k, v in runs.items()}


def by_rule(means: dict[tuple[str, ...], float], name: Callable[[str], str] = str) -> dict[str, dict[int, float]]:
    """:func:`seed_means` keyed ``(rule, seed)`` as ``{name(rule): {seed: figure}}``, the seeds in ascending order."""
    out: dict[str, dict[int, float]] = {}
    for (rule, seed), value in sorted(means.items(), key=lambda item: int(item[0][1])):
        out.setdefault(name(rule), {})[int(seed)] = value
    return out


def goal_line(name: str, passed: int, total: int, detail: str = "") -> str:
    """One pass/fail line per goal: ``PASS``/``FAIL`` name (passed/total cells) detail."""
    verdict = "PASS" if total and passed == total else ("n/a " if not total else "FAIL")
    return f"{verdict}  {name}: {passed}/{total} cells{(' -- ' + detail) if detail else ''}"
