"""Cost of one participant versus the feature dimension d: release, repair, rounds, state size.

Flower builds a new trainer object every round, and the participant's state (release, repair,
ledger) travels through ``Context.state`` as JSON text. For each d this script runs what one
participant does in a federated run, timed on this machine:

* round 1 -- read the records once, release (hardened discrete sampler by default), repair
  (eigendecomposition of the noisy (d+1)x(d+1) Gram matrix), local steps;
* a later round -- a new trainer from the JSON state, local steps: with the repair cached in the
  state (what the trainer does) and, for comparison, recomputing it (what it did before);
* the state's size as JSON: now (base64 float64, Gram as its upper triangle, repair included) and
  in the earlier format (nested JSON lists, no repair).

Run:  .venv/bin/python -m benchmarks.large_d [--dims 16 50 200 500 1000 2000] [--n 2000]

Synthetic records (unit-norm features, uniform labels over 10 classes): the costs depend on d, n
and the number of classes only, never on the values.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from flwr_ppcdl.clients import FunctionalMechanismTrainer, TrainerConfig, TrainerState
from flwr_ppcdl.privacy.release import RELEASE_FORMAT_LISTS, Release

CLASSES = 10


def _records(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.tensor(x), torch.tensor(rng.integers(0, CLASSES, n))


def _list_format_size(state: TrainerState) -> int:
    """Bytes of the same state in the earlier format: arrays as JSON lists, no cached repair."""
    assert state.release is not None
    release = Release.from_dict(state.release)
    old = dict(asdict(state), repaired=None)
    old["release"] = dict(state.release, format=RELEASE_FORMAT_LISTS,
                          statistics={k: v.tolist() for k, v in release.statistics.items()})
    old.pop("repaired")
    return len(json.dumps(old))


def measure(d: int, n: int, sampler: str, seed: int = 0) -> dict[str, float]:
    """Time one participant's first and later rounds at dimension ``d``; sizes in MB."""
    data = _records(n, d, seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Identity(), nn.Linear(d, CLASSES).double())
    # Laplace: what this benchmark measured (its recorded figures); the library default is Gaussian
    config = TrainerConfig(task="classification", num_classes=CLASSES, epsilon=1.0, local_steps=5, sampler=sampler, noise="laplace")
    global_state = {k: v.clone() for k, v in model.state_dict().items()}

    started = time.perf_counter()
    trainer = FunctionalMechanismTrainer(model, data, config)
    release = trainer.ensure_release()
    release_s = time.perf_counter() - started
    repair_started = time.perf_counter()
    release.repaired()
    repair_s = time.perf_counter() - repair_started
    trainer.fit(global_state)
    first_s = time.perf_counter() - started
    text = trainer.state.to_json()

    later = time.perf_counter()
    again = FunctionalMechanismTrainer(model, data, config, TrainerState.from_json(text))
    again.fit(global_state)
    again.state.to_json()
    cached_s = time.perf_counter() - later

    uncached = TrainerState.from_json(text)
    uncached.repaired = None
    later = time.perf_counter()
    FunctionalMechanismTrainer(model, data, config, uncached).fit(global_state)
    uncached_s = time.perf_counter() - later

    return {
        "d": d,
        "release_s": release_s,
        "repair_s": repair_s,
        "round1_s": first_s,
        "later_round_s": cached_s,
        "later_round_recompute_s": uncached_s,
        "state_mb": len(text) / 1e6,
        "state_lists_mb": _list_format_size(TrainerState.from_json(text)) / 1e6,
        "kept_rank": float(len(release.repaired().eigvals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 50, 200, 500, 1000, 2000])
    parser.add_argument("--n", type=int, default=2000, help="records of the participant")
    parser.add_argument("--sampler", default="discrete", choices=["discrete", "opendp", "numpy"])
    args = parser.parse_args()
    print(f"n = {args.n} records, {CLASSES} classes, epsilon = 1, sampler = {args.sampler}, 5 local steps; "
          f"torch threads = {torch.get_num_threads()}")
    print("| d | release (s) | repair (s) | round 1 (s) | later round, repair cached (s) | "
          "later round, repair recomputed (s) | state JSON (MB) | same state as JSON lists, no repair (MB) | kept rank |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measure(8, 100, args.sampler)  # warm-up: first-call costs of torch and numpy, not of d
    for d in args.dims:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy sampler: not hardened (by design of the option)
            row = measure(d, args.n, args.sampler)
        print(f"| {d} | {row['release_s']:.2f} | {row['repair_s']:.2f} | {row['round1_s']:.2f} | "
              f"{row['later_round_s']:.2f} | {row['later_round_recompute_s']:.2f} | {row['state_mb']:.2f} | "
              f"{row['state_lists_mb']:.2f} | {int(row['kept_rank'])} |", flush=True)


if __name__ == "__main__":
    main()
