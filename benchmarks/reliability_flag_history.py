"""Flag histories of ``ours`` on the plain cells: how often a flagged participant is let back in (issue #25).

The memory carries a participant's log-odds from round to round (``docs/reliability.md`` section 3); one round that
looks honest can give a flagged participant its full share back, and the last round's aggregate is the model that is
evaluated. This script runs ``ours`` (the library's defaults) on the ``small`` cells of
:mod:`benchmarks.reliability_plain` (the same clients and grid) and keeps, per round and participant, the
accumulated log-odds the strategy reports (> 0: flagged), its weight and its FedAvg share, as JSON lines that carry
the code and package versions. ``--summary`` prints, per cell, for the unreliable and the honest participants: the
share of participant-rounds flagged, of participants ever flagged, of the rounds after a participant's first flag in
which it is not flagged, and of participants flagged in the last round; then the same shares if a flag were *held*
while a participant is flagged in ``k`` of its last ``w`` rounds (``--holds``, e.g. ``3/5``). The holds are replayed
on the recorded flags: no feedback (a held participant changes the later rounds), so they only screen which hold
to measure in :mod:`benchmarks.reliability_tuning`.

Command (the committed file, stop 46; tuning seeds only, in two halves of the seeds, joined):

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_flag_history --seeds 0 1 2 10 11 12 13 14 15 $(seq 46 75) \\
        --out benchmarks/results/reliability_flag_history.jsonl
    PYTHONPATH=. .venv/bin/python -m benchmarks.reliability_flag_history --summary --holds 3/5 2/3 3/10 \\
        --out benchmarks/results/reliability_flag_history.jsonl > benchmarks/results/reliability_flag_history_summary.txt
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import reliability_plain as plain
from benchmarks.reliability_common import TUNE_SEEDS, provenance, seed_role

SCENARIOS = ("none", "flipped", "random-labels", "sign-flip")


def held(flags: Sequence[bool], k: int, w: int) -> list[bool]:
    """The flags if a participant flagged in at least ``k`` of its last ``w`` rounds (this one included) stayed flagged."""
    return [f or sum(flags[max(0, i - w + 1): i + 1]) >= k for i, f in enumerate(flags)]


def shares(sequences: Sequence[Sequence[bool]]) -> dict[str, float]:
    """Flag statistics of participants' per-round flags: ``flagged`` (participant-rounds), ``ever`` (participants),
    ``readmitted`` (rounds after a participant's first flag that are not flagged), ``last`` (flagged in the last round)."""
    rounds = sum(len(s) for s in sequences)
    after = [s[s.index(True) + 1:] for s in sequences if True in s]
    later = sum(len(a) for a in after)
    return {"flagged": sum(sum(s) for s in sequences) / rounds if rounds else float("nan"),
            "ever": sum(any(s) for s in sequences) / len(sequences) if sequences else float("nan"),
            "readmitted": sum(len(a) - sum(a) for a in after) / later if later else float("nan"),
            "last": sum(bool(s[-1]) for s in sequences if s) / len(sequences) if sequences else float("nan")}


def record(cell: dict[str, Any]) -> dict[str, Any]:
    """One run of ``ours`` on ``cell``: its accuracy and, per round, every node's log-odds, weight and FedAvg share."""
    made: list[Any] = []
    got = plain.run(cell, "ours", made) or {}
    bad = [str(n) for n in plain.unreliable_nodes(cell)]
    history = [{"round": r.round, "evidence": r.evidence, "weights": r.weights, "share": r.fedavg_share}
               for r in made[0].reliability_history]
    return {**{k: cell[k] for k in ("scenario", "partitioning", "clients", "bad", "seed")}, "seed_role": seed_role(cell["seed"]),
            "rule": "ours", "accuracy": got.get("accuracy"), "unreliable": bad, "history": history, **provenance()}


def summary(path: Path, holds: Sequence[tuple[int, int]]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        print(f"no rows in {path}")
        return
    print(f"## seeds {sorted({r['seed'] for r in rows})} ({', '.join(sorted({r['seed_role'] for r in rows}))}); code "
          f"{', '.join(sorted({r['code_version'] for r in rows}))}; {rows[0]['packages']}")
    print("per cell and group: flagged (participant-rounds) / ever flagged / readmitted (unflagged rounds after the first "
          "flag) / flagged in the last round; then the flagged and last-round shares with each hold replayed (no feedback)")
    for cell in sorted({(r["scenario"], r["partitioning"]) for r in rows}):
        chosen = [r for r in rows if (r["scenario"], r["partitioning"]) == cell]
        for group in ("unreliable", "honest"):
            seqs = [[h["evidence"].get(n, -50.0) > 0 for h in r["history"]] for r in chosen
                    for n in r["history"][0]["share"] if (n in r["unreliable"]) == (group == "unreliable")]
            if not seqs:
                continue
            base = shares(seqs)
            line = (f"{cell[0]:14} {cell[1][:3]} {group:10} n={len(seqs):4} | {base['flagged']:.3f} / {base['ever']:.3f} / "
                    f"{base['readmitted']:.2f} / {base['last']:.2f}")
            for k, w in holds:
                s = shares([held(q, k, w) for q in seqs])
                line += f" | hold {k}/{w}: {s['flagged']:.3f} / {s['last']:.2f}"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNE_SEEDS))
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/flwr_ppcdl_calib/reliability_flag_history.jsonl"))
    parser.add_argument("--holds", nargs="*", default=["3/5"], help="holds to replay, k/w: flagged in k of the last w rounds")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    try:
        holds = [(int(h.split("/")[0]), int(h.split("/")[1])) for h in args.holds]
    except (IndexError, ValueError):
        raise SystemExit(f"--holds takes k/w pairs such as 3/5; got {args.holds}") from None
    if not args.summary:
        unknown = [s for s in args.scenarios if s not in SCENARIOS]
        if unknown:
            raise SystemExit(f"unknown scenarios {unknown}: the screen runs {list(SCENARIOS)}")
        refused = [s for s in args.seeds if seed_role(s) != "tune"]
        if refused:
            raise SystemExit(f"seeds {refused} are not tuning seeds {TUNE_SEEDS}: a screen reads tuning seeds only")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for cell in plain.chosen_cells(["small"], args.seeds, True, args.scenarios):
            row = record(cell)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{cell['scenario']:14} {cell['partitioning'][:3]} s{cell['seed']}: accuracy {row['accuracy']:.3f}", flush=True)
    summary(args.out, holds)


if __name__ == "__main__":
    main()
