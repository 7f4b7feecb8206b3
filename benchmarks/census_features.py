"""How much signal the public-scaled census feature sets carry, without and with the functional mechanism.

For each feature set (basic / region / state) of ``flwr_ppcdl.data.load_census2000``:

* n, d, centralised OLS test R^2 and MSE on the public-scaled features (the reference for
  "R^2 relative to OLS");
* the same model through :class:`flwr_ppcdl.models.CensusFeatureMap` (public centring + l2 bound):
  OLS is unchanged because the map is affine on valid records;
* if ``flwr_ppcdl.privacy`` is available: the functional mechanism (regression, replace-one, the
  hardened ``discrete`` sampler) with the public target centre/bound, at epsilon = inf (noise-free:
  the Taylor-free least squares on bounded targets) and the given epsilons, (a) centralised, one
  holder of the whole training split, and (b) the mean of the closed-form solutions of
  ``--participants`` IID participants (one release each).

Test R^2 is computed on the raw ``lweekinc`` of a fixed 20 % server test split (seed 0).

Usage::

    .venv/bin/python benchmarks/census_features.py [--seeds 5] [--epsilons 1 10] [--participants 10]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from flwr_ppcdl.data import (
    CENSUS_FEATURE_SETS,
    CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER,
    load_census2000,
    partition_indices,
    train_test_split,
)
from flwr_ppcdl.models import CensusFeatureMap


def r2_mse(y: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """Coefficient of determination and mean squared error."""
    mse = float(np.mean((y - prediction) ** 2))
    return 1.0 - mse / float(np.var(y)), mse


def ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with an intercept (min-norm for the redundant one-hot blocks)."""
    design = np.column_stack([x, np.ones(len(x))])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.column_stack([x, np.ones(len(x))]) @ w


def fm_weights(x: np.ndarray, y: np.ndarray, epsilon: float, seed: int) -> np.ndarray:
    """Closed-form FM solution in normalised units: (y - center)/B ~ w @ [h; 1]."""
    from flwr_ppcdl.privacy import FunctionalMechanism

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epsilon = inf warns PrivacyLeakWarning, by design
        mechanism = FunctionalMechanism(
            task="regression",
            epsilon=epsilon,
            feature_bound=1.0,
            target_bound=CENSUS_TARGET_BOUND,
            insecure_noise_seed=seed,  # reproducible research on public data: NOT private
        )
        return np.asarray(mechanism.release(x, y - CENSUS_TARGET_CENTER).solve())


def fm_predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return CENSUS_TARGET_CENTER + CENSUS_TARGET_BOUND * predict(w, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per FM cell")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument(
        "--scale-factor",
        type=float,
        default=1.0,
        help="multiply CensusFeatureMap's default (lossless) scale; < 1 clips the largest records",
    )
    args = parser.parse_args()
    try:
        import flwr_ppcdl.privacy  # noqa: F401

        have_fm = hasattr(flwr_ppcdl.privacy, "FunctionalMechanism")
    except ImportError:
        have_fm = False

    started = time.time()
    epsilons = [float("inf"), *args.epsilons]
    header = "| feature set | n train / test | d | OLS R^2 | OLS MSE | OLS R^2 after map |"
    if have_fm:
        header += "".join(
            f" FM eps={e:g} cent | FM eps={e:g} avg{args.participants} |" for e in epsilons
        )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for feature_set in CENSUS_FEATURE_SETS:
        data = load_census2000(feature_set)
        train, test = train_test_split(data, test_fraction=0.2, seed=0)
        r2, mse = r2_mse(test.targets, predict(ols(train.features, train.targets), test.features))
        width = data.features.shape[1]
        body = CensusFeatureMap(width, scale=CensusFeatureMap(width).scale * args.scale_factor)
        with torch.no_grad():
            h_train = body(torch.from_numpy(train.features)).numpy()
            h_test = body(torch.from_numpy(test.features)).numpy()
        r2_map, _ = r2_mse(test.targets, predict(ols(h_train, train.targets), h_test))
        row = (
            f"| {feature_set} | {len(train)} / {len(test)} | {data.features.shape[1]} "
            f"| {r2:.4f} | {mse:.4f} | {r2_map:.4f} |"
        )
        if have_fm:
            parts = partition_indices(train.targets, args.participants, "iid", seed=0)
            for epsilon in epsilons:
                seeds = range(1 if np.isinf(epsilon) else args.seeds)
                cent, avg = [], []
                for seed in seeds:
                    w = fm_weights(h_train, train.targets, epsilon, seed)
                    cent.append(r2_mse(test.targets, fm_predict(w, h_test))[0])
                    local = [
                        fm_weights(h_train[p], train.targets[p], epsilon, 1000 * seed + k)
                        for k, p in enumerate(parts)
                    ]
                    avg.append(r2_mse(test.targets, fm_predict(np.mean(local, axis=0), h_test))[0])
                row += "".join(
                    f" {np.mean(v):.4f}" + ("" if len(v) == 1 else f" ± {np.std(v):.4f}") + " |"
                    for v in (cent, avg)
                )
        print(row, flush=True)
    print(
        f"\nR^2 on the raw lweekinc of the server's 20 % test split (seed 0). FM: replace-one, "
        f"discrete sampler, target centre log(646)={CENSUS_TARGET_CENTER:.4f}, bound "
        f"{CENSUS_TARGET_BOUND}, features through CensusFeatureMap (norm <= 1, "
        f"scale x{args.scale_factor:g}); "
        f"mean ± sd over {args.seeds} noise seeds; avg = mean of {args.participants} local "
        f"closed-form solutions (IID split). {time.time() - started:.0f} s."
        + ("" if have_fm else " (flwr_ppcdl.privacy not available: FM columns left out)")
    )


if __name__ == "__main__":
    main()
