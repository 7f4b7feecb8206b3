"""Choose the public constants of the Gaussian functional mechanism on a validation split.

Run from the repository root (``-m`` imports this checkout's ``flwr_ppcdl``):

    .venv/bin/python -m benchmarks.gaussian_fm_tuning [--data DIR] [--out benchmarks/results]

What it chooses, for each noise (``gaussian`` at (ε, δ = 1e-5), ``laplace`` at pure ε):

* the repair multiplier ``m`` of ``ρ = m·2·sd·√D`` (``sd`` = the per-entry noise sd of the
  statistics being repaired, ``Release.noise_sd``);
* the decoder (``taylor`` closed form vs ``lda``) on the same released statistics;
* the body (``pool4-rp16`` d = 16, ``pool4-rp32`` d = 32, ``pool4`` d = 49);
* under both ways of combining participants: ``sum`` (the statistics protocol: the server sums the
  releases, :func:`combine_releases`, and decodes once) and ``avg`` (each participant decodes its own
  release; the weights are averaged - what one round of parameter averaging with the closed-form
  solver computes).

Everything goes through the library: :class:`FunctionalMechanism` releases (hardened samplers),
:func:`combine_releases`, :meth:`Release.solve`. Setup: Fashion-MNIST train split,
``default_rng(0).permutation`` cut into 10 IID shards of 6,000; during tuning each participant
holds the first 5,400 records of its shard and the last 600 of every shard, pooled (6,000), are the
validation set. Noise seeds 100-102. The official test set is never read here (the App-path
measurements, ``benchmarks/gaussian_fm_app.py``, report test accuracy with the chosen constants).

Writes ``<out>/gaussian_tuning.csv`` (one row per body, noise, ε, protocol, decoder, m, seed) and
prints the mean validation accuracy per setting and the choice per (noise, protocol).
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flwr_ppcdl.data import load_fashion_mnist
from flwr_ppcdl.models import make_body
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning, Release, combine_releases

K = 10
PARTICIPANTS = 10
DELTA = 1e-5
BODIES = ("pool4-rp16", "pool4-rp32", "pool4")
MULTIPLIERS = (0.25, 0.5, 1.0, 2.0)
DECODERS = ("taylor", "lda")
FIELDS = ("body", "noise", "epsilon", "protocol", "decoder", "m", "seed", "val_accuracy", "release_ms")


def features(name: str, images: np.ndarray) -> np.ndarray:
    """The frozen public body's output (the mechanism bounds it itself, as in the App)."""
    with torch.no_grad():
        return make_body(name)(torch.from_numpy(np.ascontiguousarray(images))).numpy().astype(np.float64)


def tuning_split(folder: str, name: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Participants' first 5,400 records of each IID shard; the pooled last 600s as validation."""
    train = load_fashion_mnist(folder, split="train")
    h = features(name, train.features)
    y = np.asarray(train.targets, dtype=np.int64)
    shards = np.array_split(np.random.default_rng(0).permutation(len(y)), PARTICIPANTS)
    parts = [(h[s[:5400]], y[s[:5400]]) for s in shards]
    val = np.concatenate([s[5400:] for s in shards])
    return parts, h[val], y[val]


def accuracy(weights: np.ndarray, h: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of normalised weights on raw body features (bounded as the mechanism does)."""
    from flwr_ppcdl.privacy import clip_l2

    bounded = np.c_[clip_l2(h), np.ones(len(h))]
    return float(np.mean(np.argmax(bounded @ weights.T, axis=1) == y))


def releases(parts: list[tuple[np.ndarray, np.ndarray]], noise: str, epsilon: float, seed: int) -> tuple[list[Release], float]:
    out, seconds = [], 0.0
    for k, (h, y) in enumerate(parts):
        fm = FunctionalMechanism(
            task="classification", num_classes=K, epsilon=epsilon, noise=noise,  # type: ignore[arg-type]
            delta=DELTA if noise == "gaussian" else None, insecure_noise_seed=np.random.default_rng([seed, k]),
        )
        start = time.perf_counter()
        out.append(fm.release(h, y))
        seconds += time.perf_counter() - start
    return out, 1000 * seconds / len(parts)


def decode(rels: list[Release], protocol: str, decoder: str, m: float) -> np.ndarray:
    tuned = [replace(r, repair_multiplier=m) for r in rels]
    if protocol == "sum":
        return combine_releases(tuned).solve(decoder=decoder)
    return np.mean([r.solve(decoder=decoder) for r in tuned], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilons", default="0.5,1,2", help="gaussian pool4 only; the rest at epsilon 1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", PrivacyLeakWarning)
    seeds = [100 + s for s in range(args.seeds)]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for body in BODIES:
        parts, h_val, y_val = tuning_split(args.data, body)
        for noise in ("gaussian", "laplace"):
            for epsilon in epsilons if (noise, body) == ("gaussian", "pool4") else [1.0]:
                for seed in seeds:
                    rels, ms = releases(parts, noise, epsilon, seed)
                    for protocol in ("sum", "avg"):
                        for decoder in DECODERS:
                            for m in MULTIPLIERS:
                                acc = accuracy(decode(rels, protocol, decoder, m), h_val, y_val)
                                rows.append({"body": body, "noise": noise, "epsilon": epsilon, "protocol": protocol,
                                             "decoder": decoder, "m": m, "seed": seed, "val_accuracy": acc,
                                             "release_ms": ms})
                print(f"[tuning] {body} {noise} done", flush=True)
    path = args.out / "gaussian_tuning.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    report(rows)
    print(f"rows in {path}")


def report(rows: list[dict[str, object]]) -> None:
    cells: dict[tuple[object, ...], list[float]] = {}
    for r in rows:
        key = (r["noise"], float(r["epsilon"]), r["protocol"], r["body"], r["decoder"], float(r["m"]))  # type: ignore[arg-type]
        cells.setdefault(key, []).append(float(r["val_accuracy"]))  # type: ignore[arg-type]
    print("\n| noise | ε | protocol | body | decoder | " + " | ".join(f"m={m:g}" for m in MULTIPLIERS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(MULTIPLIERS))
    keys = sorted({k[:5] for k in cells}, key=str)
    for key in keys:
        vals = [cells[(*key, m)] for m in MULTIPLIERS]
        print("| " + " | ".join(str(k) for k in key) + " | " + " | ".join(f"{np.mean(v):.3f}±{np.std(v, ddof=1):.3f}" for v in vals) + " |")
    print("\nbest (validation mean) per noise, ε, protocol:")
    for group in sorted({k[:3] for k in cells}, key=str):
        best = max((k for k in cells if k[:3] == group), key=lambda k: np.mean(cells[k]))
        print(f"  {group}: body={best[3]} decoder={best[4]} m={best[5]} -> {np.mean(cells[best]):.3f}")


if __name__ == "__main__":
    main()
