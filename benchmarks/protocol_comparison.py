"""How close does parameter sharing (FedAvg of local solutions / federated local steps) come to the
summed-statistics solution?  All participants reliable (no corruption) to isolate the protocol.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/protocol_comparison.py [--datasets census2000 digits mnist5k]
      [--seeds 0 1 2] [--federated]

For each participant, ``release = FunctionalMechanism(...).release(body_features, targets)`` with the
exact mechanism settings of the ClientApp (``task.trainer_config``). Rows:
  * summed statistics: Σ gram, Σ cross over participants, one Release with
    noise_scale = sqrt(Σ b_k²) (the summed Laplace noise's std / √2), repaired and solved as
    ``Release.solve`` does (needs secure aggregation of the statistics in a real deployment);
  * FedAvg (n-weighted) of the participants' closed-form local solutions;
  * federated runs (in-process Flower, fedavg, no corruption): closed-form r10 and iterative ls5 r30
    (census) / ls5 r20 (classification) — with ``--federated``;
  * centralised FM: one release on the whole (clean) training split;
  * non-private: ε = ∞ summed statistics (least squares on the FM objective) and the exact
    OLS / multinomial logistic reference (``task.reference_metrics``).
Metric: test R² (census) or accuracy (classification); mean ± sd over seeds (noise and split).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

from benchmarks._fl_common import fmt, over_seeds  # noqa: E402
from flwr_ppcdl.app.experiment import (  # noqa: E402
    _head,
    evaluate_model,
    load_participant,
    make_model,
    reference_metrics,
    split_data,
    trainer_config,
)
from flwr_ppcdl.app.settings import DATASETS, RunSettings  # noqa: E402
from flwr_ppcdl.clients import TrainerConfig, release_from_records  # noqa: E402


def summed_release(releases):
    """One Release of the summed statistics (noise std adds in quadrature)."""
    first = releases[0]
    stats = {k: sum(r.statistics[k] for r in releases) for k in ("gram", "cross")}
    scale = math.sqrt(sum(r.noise_scale ** 2 for r in releases))
    return dataclasses.replace(first, statistics=stats, noise_scale=scale,
                               num_examples=sum(r.num_examples for r in releases))


def metric_of(w: np.ndarray, model, settings: RunSettings, cfg: TrainerConfig, test) -> float:
    head = _head(model)
    full = np.atleast_2d(np.asarray(w, dtype=np.float64))
    scale = cfg.output_scale
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(full[:, :-1] * scale / cfg.feature_bound, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(full[:, -1] * scale, dtype=head.bias.dtype))
    out = evaluate_model(model, test, settings)
    return out[settings.metric]


def one(dataset: str, eps: float, seed: int) -> dict[str, float]:
    task = DATASETS[dataset].task
    kind = "random-targets" if task == "regression" else "flipped-labels"
    settings = RunSettings(task=task, dataset=dataset, epsilon=eps, seed=seed, unreliable_fraction=0.0,
                           insecure_noise_seed=seed,  # reproducible research on public data: NOT private
                           unreliable_kind=kind, plot=False)
    model = make_model(settings)
    body = model[:-1]
    _, test = split_data(settings)
    releases, cfg = [], None
    for pid in range(settings.num_partitions):
        p = load_participant(settings, pid)
        cfg = TrainerConfig(**trainer_config(settings, pid))
        releases.append(release_from_records(body, (p.inputs, p.targets), cfg.mechanism(None)))
    out = {}
    out["summed statistics"] = metric_of(summed_release(releases).solve(), model, settings, cfg, test)
    n = np.array([r.num_examples for r in releases], dtype=float)
    local = np.stack([r.solve() for r in releases])
    avg = np.tensordot(n / n.sum(), local, axes=1)
    out["FedAvg of local closed-form solutions"] = metric_of(avg, model, settings, cfg, test)
    # centralised: one release on the whole clean training split, same mechanism settings
    train, _ = split_data(settings)
    cfg_c = TrainerConfig(**{**trainer_config(settings, 0), "insecure_noise_seed": seed * 100_003 + 999})
    central = release_from_records(body, (torch.as_tensor(np.asarray(train.features), dtype=torch.float32),
                                          torch.as_tensor(np.asarray(train.targets))), cfg_c.mechanism(None))
    out["centralised FM (one release, all records)"] = metric_of(central.solve(), model, settings, cfg, test)
    out["non-private reference (OLS / softmax)"] = reference_metrics(settings)[settings.metric]
    return out


FED = {
    "census2000": {"closed-form r10": {"solver": "closed-form", "local-steps": 1, "num-rounds": 10},
                   "iterative ls5 r30": {"solver": "iterative", "local-steps": 5, "num-rounds": 30}},
    "classification": {"closed-form r10": {"solver": "closed-form", "local-steps": 1, "num-rounds": 10},
                       "iterative ls5 r20": {"solver": "iterative", "local-steps": 5, "num-rounds": 20}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["census2000", "digits", "mnist5k"])
    ap.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 10.0, math.inf])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--federated", action="store_true", help="also run the federated fedavg jobs (slower)")
    a = ap.parse_args()
    for ds in a.datasets:
        rows: dict[str, list[list[float]]] = {}
        for j, eps in enumerate(a.epsilons):
            for seed in a.seeds:
                for k, v in one(ds, eps, seed).items():
                    rows.setdefault(k, [[] for _ in a.epsilons])[j].append(v)
            if a.federated:
                task = DATASETS[ds].task
                for label, proto in FED["census2000" if task == "regression" else "classification"].items():
                    cfg = {"task": task, "dataset": ds, "epsilon": eps, "strategy": "fedavg", "protocol": "parameters",
                           "unreliable-fraction": 0.0, "proximal-mu": 0.0, **proto}
                    if task == "classification":
                        cfg["unreliable-kind"] = "flipped-labels"
                    res = over_seeds(cfg, None, a.seeds, "census" if task == "regression" else f"clf-{ds}")
                    rows.setdefault(f"federated fedavg, {label}", [[] for _ in a.epsilons])[j].extend(res["final"])
        metric = "R²" if ds == "census2000" else "accuracy"
        print(f"\n## {ds}: test {metric}, all participants reliable, 10 participants, mean ± sd over seeds {a.seeds}\n")
        print("| protocol | " + " | ".join(f"ε={e:g}" for e in a.epsilons) + " |")
        print("|---|" + "---|" * len(a.epsilons))
        for k, cols in rows.items():
            print(f"| {k} | " + " | ".join(fmt(c) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
