"""Variants of the reliability defaults, paired on the tuning seeds: how a choice was made (issue #25).

The committed study (``benchmarks/results/reliability_tuning.csv``) and its table:

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_tuning \\
        --variants memory_rate=0.5 memory_rate=0.8 --out benchmarks/results/reliability_tuning.csv
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_tuning --summary \\
        --out benchmarks/results/reliability_tuning.csv > benchmarks/results/reliability_tuning_summary.txt

Later studies write their own CSV the same way, e.g. ``reliability_tuning_reversal.csv`` (stop 37: ``--variants
memory_rate=0.5,seed=7`` run at 50324c9, in a worktree, and at e0e9da3 -- the reversal summed across rounds,
reverted -- into one file); ``reliability_tuning_tau_plain.csv`` (stop 41: ``--variants memory_rate=0.5 --seeds 0 1 2 10
11 12 13 14 15 $(seq 46 75)`` at 1916d08 and, in a worktree of branch ``tau-all-plain``, at 1036b77 -- the first-pass
heterogeneity over every voice for plain blocks too, reverted -- each into a file of its own, then joined);
``reliability_tuning_memory_allowance.csv`` (stop 44: ``--variants memory_rate=0.5 --seeds 0 1 2 10 11 12 13 14 15 $(seq
46 75)`` at 3475169 and, in a worktree of branch ``cusum-memory``, at 319218a -- the memory as a discounted CUSUM, reverted
-- each into a file of its own, then joined; stop 45 ran both a second time from detached worktrees at the same two
commits and appended the rows, so the table is the mean of two runs a seed); ``reliability_tuning_max_share.csv`` (stop
45: ``--variants memory_rate=0.5,max_share=0.15`` and ``memory_rate=0.5,max_share=0.25``, ``--scenarios none flipped
random-labels sign-flip``, same seeds, at df54783, each into a file of its own; joined after the library's two runs of
those scenarios taken from ``reliability_tuning_memory_allowance.csv`` at 3475169, whose ``flwr_ppcdl`` is the same);
``reliability_tuning_flag_hold.csv`` (stop 46: ``--variants memory_rate=0.5 --runs 2``, the same seeds in two halves, in a
worktree of branch ``flag-count`` at c38c21c -- a participant flagged in three rounds stays flagged -- and at 9e1fd42 --
held while flagged in three of its last five rounds -- both reverted there; joined after the library's rows at 3475169
taken from ``reliability_tuning_memory_allowance.csv``; stop 47 appended, the same way, the rows of branch
``flag-hold-raw`` at 2a7da16 -- 9e1fd42's hold with the memory carrying the log-odds before it -- reverted there).

Each variant is ``ReliabilityWeightedFedAvg(memory_rate=0.8, ...)`` (rule ``ours:memory_rate=0.8``) at
a code version (the table names it ``ours:memory_rate=0.8@<commit>``: a change to the estimator is
compared by running the same options at its commit and at the one before), run
on the plain-client ``small`` cells of :mod:`benchmarks.reliability_plain` (same clients, same grid) on
the tuning seeds only (``benchmarks.reliability_common.TUNE_SEEDS``; the reporting and fresh seeds are
refused). ``--runs N`` runs per cell and seed (default one); the table gives each variant's mean over the seeds (a
seed's figure: the mean of its runs) and, against the first variant, the mean paired difference and its standard error
(the seeds are the replicates: the partitions differ and the estimator samples coordinates from OS entropy). About 3
minutes per variant and seed on one core; resumable (rows already in ``--out`` at this code version count towards
``--runs``).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks import reliability_plain as plain
from benchmarks.reliability_common import (
    TUNE_SEEDS,
    append_rows,
    by_rule,
    provenance,
    read_rows,
    seed_means,
    seed_role,
    spread,
)

COLUMNS = ("accuracy", "auroc", "bad_mass", "honest_kept", "false_alarms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=[], help="option overrides, e.g. memory_rate=0.8")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNE_SEEDS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_tuning.csv"))
    parser.add_argument("--scenarios", nargs="+", help="run only these scenarios (e.g. none flipped)")
    parser.add_argument("--runs", type=int, default=1, help="runs per cell, seed and variant at this code version "
                        "(rows already in --out count; the table takes a seed's mean)")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if not args.summary:
        refused = [s for s in args.seeds if seed_role(s) != "tune"]
        if refused:
            raise SystemExit(f"seeds {refused} are not tuning seeds {TUNE_SEEDS}: variants are compared on tuning seeds only")
        rules = ["ours:" + v for v in args.variants]
        for rule in rules:
            plain.variant_options(rule)  # a malformed variant fails before any run
        key = ("scenario", "partitioning", "clients", "bad", "seed", "rule")
        version = provenance()["code_version"]
        done = Counter(tuple(r[k] for k in key) for r in read_rows(args.out) if r["code_version"] == version)
        for cell in plain.chosen_cells(["small"], args.seeds, False, args.scenarios):
            for rule in rules:
                for _ in range(args.runs - done[tuple(str(cell[k]) for k in key[:-1]) + (rule,)]):
                    row = plain.measured(cell, rule)
                    append_rows(args.out, plain.FIELDS, [row])
                    print(f"{cell['scenario']:14} {cell['partitioning'][:3]} s{cell['seed']} {rule}: accuracy {row['accuracy']:.3f} "
                          f"({row['seconds']:.0f}s)", flush=True)
    summary(args.out)


def summary(path: Path) -> None:
    """Per cell and variant: means over the seeds; against the first variant, paired difference +- its standard error."""
    rows = [r for r in read_rows(path) if r["rule"].startswith("ours:")]
    if not rows:
        print(f"no variant rows in {path}")
        return
    for r in rows:  # a variant is its options at its code version
        r["rule"] = f"{r['rule']}@{r['code_version'][:7]}"
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})
    print(f"## tuning seeds {seeds} (code {', '.join(sorted({r['code_version'] for r in rows}))}; {rows[0]['packages']})")
    print(f"baseline {rules[0]}; per variant: mean over seeds (paired difference from the baseline +- standard error)")
    cells = sorted({(r["scenario"], r["partitioning"], r["clients"], r["bad"]) for r in rows})
    for col in COLUMNS:
        print(f"\n{col}")
        print(f"{'scenario':14} {'split':9} {'K':>3} | " + " | ".join(f"{rule[5:]:>27}" for rule in rules))
        for cell in cells:
            got = by_rule(seed_means((r for r in rows if (r["scenario"], r["partitioning"], r["clients"], r["bad"]) == cell), col,
                                     lambda r: (r["rule"], r["seed"])))
            by = {rule: got.get(rule, {}) for rule in rules}
            if not any(by.values()):
                continue
            parts = []
            for rule in rules:
                values = list(by[rule].values())
                paired = [by[rule][s] - by[rules[0]][s] for s in by[rule] if s in by[rules[0]]]
                m = float(np.mean(values)) if values else math.nan
                if rule == rules[0] or len(paired) < 2:
                    parts.append(f"{m:>8.3f} (n={len(values)}){'':>11}")
                else:
                    se = spread(paired) / math.sqrt(len(paired))
                    parts.append(f"{m:>8.3f} ({np.mean(paired):+.3f}+-{se:.3f})")
            print(f"{cell[0]:14} {cell[1]:9} {cell[2]:>3} | " + " | ".join(parts))


if __name__ == "__main__":
    main()
