"""Client compute of one participant for a whole run: Gaussian / Laplace FM against Opacus DP-SGD.

    .venv/bin/python -m benchmarks.gaussian_fm_compute [--repeats 3] [--out benchmarks/results]

One Fashion-MNIST participant (partition 0 of 10, 6,000 records), ε = 1 (δ = 1e-5 where it applies),
one thread. CPU seconds (``time.process_time``; the machine is shared, so wall time is not reported)
of, separately:

* the frozen body's forward pass over the participant's records (both methods pay it once here:
  the harness's DP-SGD clients also compute the features once);
* ``FunctionalMechanism.release`` on those features, per noise and sampler (the one read of the
  records for the whole run);
* decoding (``Release.solve``: Taylor closed form, LDA) and one later round of the App's trainer
  (a new trainer from the persisted state, 5 local steps, as Flower runs it every round);
* Opacus DP-SGD for the whole run: 20 rounds x 1 local epoch (Poisson rate 256/6,000, the noise
  multiplier calibrated to (1, 1e-5) over all steps; the harness's ``opacus_local``).

Writes ``<out>/gaussian_compute.csv`` and prints the table with the ratio to DP-SGD. Medians over
``--repeats``.
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flwr_ppcdl.app.experiment import load_participant, make_model, trainer_config
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.clients import FunctionalMechanismTrainer, TrainerConfig, load_state, save_state
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning

ROUNDS = 20


def cpu(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    warnings.simplefilter("ignore", PrivacyLeakWarning)
    rows: list[dict[str, Any]] = []
    for noise in ("gaussian", "laplace"):
        rows += measure_fm(noise, args.repeats)
    rows.append({"what": f"Opacus DP-SGD, {ROUNDS} rounds x 1 epoch", "noise": "gaussian (DP-SGD)", "body": "pool4",
                 "cpu_s": opacus_run(args.repeats)})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gaussian_compute.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=("what", "noise", "body", "cpu_s"))
        writer.writeheader()
        writer.writerows(rows)
    dpsgd = rows[-1]["cpu_s"]
    print("\n| noise | body | what | CPU s | ÷ DP-SGD whole run |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']} | {r['body']} | {r['what']} | {r['cpu_s']:.4f} | {r['cpu_s'] / dpsgd:.3f} |")
    for noise in ("gaussian", "laplace"):
        own = {r["what"]: r["cpu_s"] for r in rows if r["noise"] == noise}
        whole = own["release (discrete)"] + (ROUNDS - 1) * own["one later round of the App's trainer (5 local steps)"]
        print(f"\n{noise} FM, whole run per participant (hardened release + {ROUNDS - 1} later rounds, body excluded): "
              f"{whole:.3f} s CPU = {whole / dpsgd:.2f}x DP-SGD's {dpsgd:.3f} s")
    print(f"rows in {path}")


def measure_fm(noise: str, repeats: int) -> list[dict[str, Any]]:
    """CPU seconds of one FM participant's pieces under ``noise`` (App settings, body ``auto``)."""
    settings = RunSettings(noise=noise, dataset="fashion-mnist", unreliable_kind="flipped-labels", unreliable_fraction=0.0)
    participant = load_participant(settings, 0)
    body = make_model(settings)[:-1].eval()
    with torch.no_grad():
        feats = body(participant.inputs).double().numpy()
    labels = participant.targets.numpy()
    delta = 1e-5 if noise == "gaussian" else None
    rows: list[dict[str, Any]] = []

    def add(what: str, seconds: float) -> None:
        rows.append({"what": what, "noise": noise, "body": settings.body, "cpu_s": seconds})

    add("body forward, 6,000 images", cpu(lambda: body(participant.inputs), repeats))
    for sampler in ("discrete", "numpy") if noise == "gaussian" else ("discrete", "opendp", "numpy"):
        fm = FunctionalMechanism(task="classification", num_classes=10, epsilon=1.0, noise=noise,  # type: ignore[arg-type]
                                 delta=delta, sampler=sampler)  # type: ignore[arg-type]
        add(f"release ({sampler})", cpu(lambda fm=fm: fm.release(feats, labels), repeats))
    release = FunctionalMechanism(task="classification", num_classes=10, epsilon=1.0, noise=noise,  # type: ignore[arg-type]
                                  delta=delta).release(feats, labels)
    for decoder in ("taylor", "lda"):
        add(f"decode ({decoder}, incl. repair)",
            cpu(lambda decoder=decoder: type(release).from_dict(release.to_dict()).solve(decoder=decoder), repeats))
    model = make_model(settings)
    config = TrainerConfig(**trainer_config(settings, 0))
    data = (participant.inputs, participant.targets)
    store: dict[str, Any] = {}
    first = FunctionalMechanismTrainer(model, data, config, load_state(store))
    first.fit()
    save_state(store, first.state)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}

    def later_round() -> None:
        trainer = FunctionalMechanismTrainer(model, data, config, load_state(store))
        trainer.fit(global_state)
        save_state(store, trainer.state)

    add("one later round of the App's trainer (5 local steps)", cpu(later_round, repeats))
    return rows


def opacus_run(repeats: int) -> float:
    """CPU seconds of one participant's 20 rounds x 1 epoch of Opacus DP-SGD (the harness's code)."""
    from benchmarks import harness

    scn = harness.Scenario("fashion-mnist", "flipped-labels", 0.0, 1.0)
    settings = scn.settings(strategy="fedavg")
    h, y = harness._features(settings, 0)

    plan = harness.plan_opacus(settings, scn, epsilon=1.0, lr=16.0, clip=0.5, batch=256)  # calibration: not timed

    def run() -> None:
        head = harness._new_head(settings)
        for rnd in range(ROUNDS):
            harness.opacus_local(head, h, y, settings, plan, 0, seed=rnd)

    return cpu(run, repeats)


if __name__ == "__main__":
    main()
