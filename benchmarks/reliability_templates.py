"""Which class templates a head's update rows are read against: a screening on the tuning seeds (issue #25, stops 39-40).

The ``gap`` statistic reads a plain client's head update, row by row, against class templates
(:func:`flwr_ppcdl.reliability.model._delta_templates`). Until stop 40 the library took the global head's rows; where
flipped clients hold much of the data, the global head learns their labels and the honest rows look permuted
(``docs/reliability.md`` section 9). This script swaps the templates for other choices, runs the plain benchmark's
``ours`` (``benchmarks.reliability_plain``, the same clients and grid) with each, and pairs them per seed against
``global``:

* ``global`` -- the global head's rows (the library's until stop 40);
* ``majority`` -- the majority's model head: the global head plus the least-trimmed majority's mean update (the
  library's since stop 40, after this screening);
* ``leave-one-out`` -- the same without the participant's own update (each participant its own templates);
* ``consistent`` -- the global head plus the mean update of the consistent voices;
* ``drift`` -- the majority's model head tracked across rounds (stop 40): the global head plus the discounted sum of
  what the majority's updates would have moved it by and the aggregate did not (``_drift_at``), plus this round's;
  discounted at the library's memory rate, or at each of ``--drift-rates`` (variants ``drift@<rate>``);
* ``oracle`` -- a ceiling, no estimator: ``drift`` with the honest participants' mean update in place of the majority's
  (stop 42): how far better templates alone could take ``gap``.

Each template is centred across classes. A choice is screened, not library code. Tuning seeds only; ``--runs``
runs per cell and seed (``ours`` samples coordinates from OS entropy, so a single run moves a cell by several
points). Commands (the committed rows and table, 39 tuning seeds, two runs, about 25 minutes on two cores; the
``majority`` rows of the second command were measured at stop 40, before the library took that choice):

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_templates --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --runs 2 --out benchmarks/results/reliability_templates.csv
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_templates --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --runs 2 --scenarios random-labels sign-flip --variants global leave-one-out majority --out ...  # then appended
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_templates --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --runs 2 --scenarios flipped none random-labels sign-flip --variants drift --out ...  # stop 40, then appended
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_templates --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --runs 2 --scenarios flipped random-labels --variants --drift-rates 0.25 --out ...  # and 0.8; then appended
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_templates --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --runs 2 --scenarios flipped random-labels --variants oracle --out ...  # stop 42, then appended
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_templates --summary \\
        --out benchmarks/results/reliability_templates.csv > benchmarks/results/reliability_templates_summary.txt

Privacy: plain clients, no privacy noise; the statistic reads uploads only.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import flwr_ppcdl.reliability.model as model
from benchmarks import reliability_plain as plain
from benchmarks.reliability_common import (
    DIAGNOSIS_SEEDS,
    TUNE_SEEDS,
    append_rows,
    by_rule,
    mean,
    provenance,
    read_rows,
    seed_means,
    seed_role,
    spread,
)
from flwr_ppcdl.reliability import ReliabilityOptions
from flwr_ppcdl.reliability.aggregator import ReliabilityAggregator

LIBRARY = model._delta_templates
LIBRARY_WEIGH = ReliabilityAggregator.weigh


def _centred(head: np.ndarray, rows: int) -> np.ndarray:
    """Rows minus their mean row, flattened per participant (``head``: (rows x p,) or (K, rows x p))."""
    shaped = head.reshape(*head.shape[:-1], rows, -1)
    return (shaped - shaped.mean(axis=-2, keepdims=True)).reshape(head.shape)


def _global(lay: Any, centre: np.ndarray, residuals: np.ndarray, members: np.ndarray) -> np.ndarray:
    return _centred(lay.reference, lay.rows)


def _leave_one_out(lay: Any, centre: np.ndarray, residuals: np.ndarray, members: np.ndarray) -> np.ndarray:
    return _centred(lay.reference[None, :] + lay.stack - residuals, lay.rows)  # stack - residual: the others' centre


def _consistent(lay: Any, centre: np.ndarray, residuals: np.ndarray, members: np.ndarray) -> np.ndarray:
    return _centred(lay.reference + lay.stack[members].mean(axis=0), lay.rows)


DRIFT = ReliabilityOptions().memory_rate
"""How much of the last rounds' gap between the majority's updates and the aggregate's the ``drift`` templates keep (the
library's memory rate: the discount of suspicion across rounds)."""
_TRACK: dict[tuple[int, ...], list[np.ndarray]] = {}  # per head shape: the last global head, D, the last majority update


def _drift_at(rate: float) -> Callable[..., np.ndarray]:
    """The majority's model head tracked across rounds: the global head plus ``D`` plus this round's majority update,
    ``D_t = rate D_{t-1} + m_{t-1} - (g_t - g_{t-1})`` (``m`` the least-trimmed majority's update, ``g`` the global head):
    what the count-blind majority would have moved the head by and the aggregate did not, discounted."""

    def drift(lay: Any, centre: np.ndarray, residuals: np.ndarray, members: np.ndarray) -> np.ndarray:
        head = np.asarray(lay.reference, dtype=np.float64)
        state = _TRACK.setdefault(tuple(head.shape), [head.copy(), np.zeros_like(head), np.zeros_like(head)])
        if not np.array_equal(state[0], head):  # a new round
            state[1] = rate * state[1] + state[2] - (head - state[0])
            state[0] = head.copy()
        state[2] = np.asarray(centre, dtype=np.float64).copy()
        return _centred(head + state[1] + state[2], lay.rows)

    return drift


_ROUND: dict[str, Any] = {"nodes": None, "honest_below": None}  # the round being scored: its node ids, who is honest


def _recording(weigh: Callable[..., Any]) -> Callable[..., Any]:
    """``ReliabilityAggregator.weigh`` noting the round's node ids, in upload order (the ``oracle`` ceiling's knowledge)."""

    def weigh_noting(self: Any, server_round: int, uploads: Any, *args: Any, **kwargs: Any) -> Any:
        _ROUND["nodes"] = np.array([u.node_id for u in uploads])
        return weigh(self, server_round, uploads, *args, **kwargs)

    return weigh_noting


def _oracle(lay: Any, centre: np.ndarray, residuals: np.ndarray, members: np.ndarray) -> np.ndarray:
    """A ceiling, no estimator: ``drift`` with the honest participants' mean update in place of the majority's (the
    benchmark knows who is honest: the last ``bad`` partitions are not); the majority's where the block's positions
    are not the round's uploads."""
    nodes, below = _ROUND["nodes"], _ROUND["honest_below"]
    if nodes is not None and below is not None and nodes.size == lay.stack.shape[0] and np.any(nodes < below):
        centre = lay.stack[nodes < below].mean(axis=0)
    return _ORACLE_DRIFT(lay, centre, residuals, members)


_ORACLE_DRIFT = _drift_at(DRIFT)
VARIANTS: dict[str, Callable[..., np.ndarray]] = {"global": _global, "majority": LIBRARY, "leave-one-out": _leave_one_out,
                                                  "consistent": _consistent, "drift": _drift_at(DRIFT), "oracle": _oracle}


def drift_variant(rate: float) -> str:
    """Register ``drift`` at another discount (``--drift-rates``) and return its name, ``drift@<rate>``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a drift rate is in [0, 1], got {rate!r}")
    name = f"drift@{rate:g}"
    VARIANTS.setdefault(name, _drift_at(rate))
    return name


COLUMNS = ("accuracy", "false_alarms", "honest_kept", "auroc")


def use(name: str) -> None:
    """The templates ``gap`` reads head updates against, until the next call (``"majority"``: the library's)."""
    model._delta_templates = VARIANTS[name]  # type: ignore[assignment]
    ReliabilityAggregator.weigh = _recording(LIBRARY_WEIGH) if name == "oracle" else LIBRARY_WEIGH  # type: ignore[method-assign]
    _TRACK.clear()  # a run starts from its own initial head
    _ROUND["nodes"] = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="the variants to run (none: only those of --drift-rates)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNE_SEEDS + DIAGNOSIS_SEEDS))
    parser.add_argument("--scenarios", nargs="+", default=["none", "flipped"])
    parser.add_argument("--runs", type=int, default=1, help="runs per cell, seed and variant")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_templates.csv"))
    parser.add_argument("--drift-rates", type=float, nargs="+", default=[],
                        help="also run drift at these discounts (variants drift@<rate>; drift itself uses the memory rate)")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    args.variants += [drift_variant(rate) for rate in args.drift_rates]
    if not args.summary:
        if refused := [s for s in args.seeds if seed_role(s) != "tune"]:
            raise SystemExit(f"seeds {refused} are not tuning seeds: templates are screened on tuning seeds only")
        version = provenance()
        counts: dict[tuple[str, ...], int] = {}  # runs already measured at this code version
        for r in read_rows(args.out):
            if r["code_version"] == version["code_version"]:
                key = (r["scenario"], r["partitioning"], r["seed"], r["rule"])
                counts[key] = counts.get(key, 0) + 1
        try:
            for cell in (c for c in plain.cells(["small"], args.seeds, True) if c["scenario"] in args.scenarios):
                for name in args.variants:
                    rule = f"ours:templates={name}"
                    key = (cell["scenario"], cell["partitioning"], str(cell["seed"]), rule)
                    for _ in range(args.runs - counts.get(key, 0)):
                        use(name)
                        _ROUND["honest_below"] = 1001 + cell["clients"] - cell["bad"]  # node ids 1001 + partition
                        row = plain.measured(cell, "ours", label=rule)
                        append_rows(args.out, plain.FIELDS, [row])
                        print(f"{cell['scenario']:8} {cell['partitioning'][:5]} s{cell['seed']} {name}: {row['accuracy']:.3f}", flush=True)
        finally:
            use("majority")
    summary(args.out)


def summary(path: Path) -> None:
    """Per cell and variant: the mean over seeds of each seed's mean over runs; against ``global``, the paired difference
    and its standard error (the seeds are the replicates)."""
    rows = [r for r in read_rows(path) if r["rule"].startswith("ours:templates=")]
    if not rows:
        print(f"no template rows in {path}")
        return
    for rule in sorted({r["rule"] for r in rows if r["rule"].startswith("ours:templates=drift@")}):
        drift_variant(float(rule.split("@", 1)[1]))
    names = [n for n in VARIANTS if any(r["rule"] == f"ours:templates={n}" for r in rows)]
    seeds = sorted({int(r["seed"]) for r in rows})
    runs = sorted({sum(1 for r in rows if (r["scenario"], r["partitioning"], r["seed"], r["rule"]) == key)
                   for key in {(r["scenario"], r["partitioning"], r["seed"], r["rule"]) for r in rows}})
    print(f"## tuning seeds {seeds}, runs per cell and seed {runs[0]}-{runs[-1]} (code {', '.join(sorted({r['code_version'] for r in rows}))}; "
          f"{rows[0]['packages']})")
    print("per variant: mean over seeds (paired difference from `global` +- standard error)")
    for col in COLUMNS:
        print(f"\n{col}")
        print(f"{'scenario':14} {'split':9} | " + " | ".join(f"{n:>24}" for n in names))
        for cell in sorted({(r["scenario"], r["partitioning"]) for r in rows}):
            got = by_rule(seed_means((r for r in rows if (r["scenario"], r["partitioning"]) == cell), col, lambda r: (r["rule"], r["seed"])),
                          lambda rule: rule.removeprefix("ours:templates="))
            per_seed = {n: got.get(n, {}) for n in names}
            if not per_seed[names[0]]:
                continue
            parts = []
            for n in names:
                paired = [v - per_seed[names[0]][s] for s, v in per_seed[n].items() if s in per_seed[names[0]]]
                m = mean(list(per_seed[n].values()))
                extra = (f"({np.mean(paired):+.3f}+-{spread(paired) / math.sqrt(len(paired)):.3f})"
                         if n != names[0] and len(paired) >= 2 else f"(n={len(per_seed[n])})")
                parts.append(f"{m:>7.3f} {extra:>16}")
            print(f"{cell[0]:14} {cell[1]:9} | " + " | ".join(parts))


if __name__ == "__main__":
    main()
