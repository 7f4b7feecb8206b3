"""Measure reliability weighting against Flower's robust rules on seeded DP uploads.

Usage:
    .venv/bin/python benchmarks/reliability_measure.py [--seeds 3] [--epsilon 1] [--quick]

Uploads are one-shot local solves of a linear softmax head released with the functional
mechanism (``flwr_ppcdl.privacy.FunctionalMechanism``, numpy sampler for speed: fine for a
benchmark, not for real data). Data sets:
- ``synthetic``: seeded Gaussian classes (d=10, 10 classes, --records per participant, default 3000);
- ``digits``: scikit-learn digits pooled 2x2 to 16 public-bounded features (about 140 records
  per participant; DP noise is large at this size, so it is run at a larger epsilon).
Partitions: IID and Dirichlet(alpha=0.3) over labels (numpy). Unreliable participants: random
labels or a fixed label permutation (flip), 10/30/50 % of K=10. The server-data estimator
uses 200 server-held records disjoint from the participants' and the test set (default
tolerance: 1.2 x the best upload's loss). ``--flat`` adds truth discovery without the
per-unit (class-row) alignment gate, for comparison.

Reported per cell (mean over seeds): unreliable weight mass relative to FedAvg's (``bad/FA``,
target <= 0.5), AUROC of the weights for separating reliable from unreliable (target >= .95),
honest non-IID minority mass relative to FedAvg (``min/FA``, Dirichlet only; minority =
honest participants whose largest class holds > 50 % of their records; target >= 0.5), and
test accuracy of the aggregated model for every rule. MultiKrum selects K - f (f known).
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np

from flwr_ppcdl.strategies import reliability_weights

warnings.filterwarnings("ignore")
logging.getLogger("flwr").setLevel(logging.WARNING)

K = 10
C = 10
FLAT = False  # --flat: also report truth discovery with whole-layer alignment only
RECORDS = 3000  # per participant, synthetic


# ------------------------------------------------------------------ data
def synthetic_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(12345).normal(size=(C, 10)) * 0.9
    y = rng.integers(0, C, n)
    x = centres[y] + rng.normal(size=(n, 10))
    return x / 4.0, y


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16) / 16.0  # public bound: pixel max 16
    return x - 0.3, y  # public constant offset


def dirichlet_split(y: np.ndarray, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[int]] = [[] for _ in range(K)]
    for c in range(C):
        ids = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet(alpha * np.ones(K))) * len(ids)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(ids, cuts)):
            parts[k].extend(chunk.tolist())
    return [np.array(p, dtype=int) for p in parts]


def make_setting(dataset: str, split: str, kind: str, frac: float, epsilon: float, seed: int):
    from flwr_ppcdl.privacy import FunctionalMechanism

    rng = np.random.default_rng(seed)
    if dataset == "synthetic":
        x, y = synthetic_data(rng, K * RECORDS + 1200)
    else:
        x, y = digits_data()
    perm = rng.permutation(len(y))
    test, server, train = perm[:400], perm[400:600], perm[600:]
    xt, yt = x[train], y[train]
    parts = np.array_split(rng.permutation(len(yt)), K) if split == "iid" else dirichlet_split(yt, 0.3, rng)
    parts = [p if len(p) >= 5 else rng.choice(len(yt), 5, replace=False) for p in parts]
    bad = np.zeros(K, dtype=bool)
    bad[rng.choice(K, int(round(frac * K)), replace=False)] = True
    flip = np.roll(np.arange(C), 1 + rng.integers(C - 1))
    ups, counts, minority = [], [], []
    for k in range(K):
        yk = yt[parts[k]].copy()
        minority.append(np.bincount(yk, minlength=C).max() / len(yk) > 0.5)
        if bad[k]:
            yk = rng.integers(0, C, len(yk)) if kind == "random" else flip[yk]
        fm = FunctionalMechanism(task="classification", num_classes=C, epsilon=epsilon, insecure_noise_seed=int(rng.integers(2**31)), sampler="numpy")
        w = fm.release(xt[parts[k]], yk).solve()
        ups.append([w])
        counts.append(len(parts[k]))
    fm0 = FunctionalMechanism(task="classification", num_classes=C, epsilon=epsilon, sampler="numpy")
    h_test, h_server = fm0.bound_features(x[test]), fm0.bound_features(x[server])
    return ups, np.array(counts), bad, np.array(minority) & ~bad, (h_test, y[test]), (h_server, y[server])


# ------------------------------------------------------------------ rules
def accuracy(w: np.ndarray, data) -> float:
    h, y = data
    return float(np.mean(np.argmax(h @ w.T, axis=1) == y))


def server_loss(w: np.ndarray, data) -> float:
    h, y = data
    logits = h @ w.T
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def multikrum_select(ws: np.ndarray, f: int) -> np.ndarray:
    d = ((ws[:, None, :] - ws[None, :, :]) ** 2).sum(-1)
    m = max(1, K - f - 2)
    scores = np.sort(d, axis=1)[:, 1 : m + 1].sum(1)
    return np.argsort(scores)[: K - f]


def evaluate_cell(dataset, split, kind, frac, epsilon, seeds):
    rows: dict[str, list[list[float]]] = {}
    for seed in range(seeds):
        ups, counts, bad, minority, test, server = make_setting(dataset, split, kind, frac, epsilon, seed)
        ws = np.stack([u[0].ravel() for u in ups])
        fa = counts / counts.sum()
        shape = ups[0][0].shape
        losses = [server_loss(u[0], server) for u in ups]
        weights = {
            "ours-TD": reliability_weights(ups, counts, seed=seed),
            "ours-server": reliability_weights(ups, counts, method="server_data", server_losses=losses),
            "FedAvg": fa,
        }
        if FLAT:  # whole-layer alignment only (the estimator before the per-unit gate)
            weights["ours-TD(flat)"] = reliability_weights(ups, counts, seed=seed, alignment_units=1)
        for name, w in weights.items():
            agg = (w[:, None] * ws).sum(0).reshape(shape)
            mass = w[bad].sum() / fa[bad].sum() if bad.any() else float("nan")
            mino = w[minority].sum() / fa[minority].sum() if minority.any() and split != "iid" else float("nan")
            rows.setdefault(name, []).append([mass, auroc(w, ~bad), mino, accuracy(agg, test)])
        med = np.median(ws, axis=0).reshape(shape)
        rows.setdefault("FedMedian", []).append([np.nan, np.nan, np.nan, accuracy(med, test)])
        b = int(0.2 * K)
        trimmed = np.sort(ws, axis=0)[b : K - b].mean(0).reshape(shape)
        rows.setdefault("FedTrimmedAvg(.2)", []).append([np.nan, np.nan, np.nan, accuracy(trimmed, test)])
        f = int(bad.sum())
        sel = multikrum_select(ws, f)
        mk = np.zeros(K)
        mk[sel] = counts[sel] / counts[sel].sum()
        agg = (mk[:, None] * ws).sum(0).reshape(shape)
        picked_bad = float(bad[sel].sum())
        rows.setdefault("MultiKrum(f known)", []).append(
            [mk[bad].sum() / fa[bad].sum() if bad.any() else np.nan, picked_bad, np.nan, accuracy(agg, test)]
        )
    return {k: np.nanmean(np.array(v, dtype=float), axis=0) if np.any(np.isfinite(v)) else np.array(v[0]) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=1.0, help="FM epsilon for 'synthetic'")
    parser.add_argument("--digits-epsilon", type=float, default=10.0, help="FM epsilon for 'digits'")
    parser.add_argument("--records", type=int, default=3000, help="records per participant, synthetic")
    parser.add_argument("--quick", action="store_true", help="synthetic, IID, random labels only")
    parser.add_argument("--flat", action="store_true", help="also report ours-TD with alignment_units=1")
    args = parser.parse_args()
    global RECORDS, FLAT
    RECORDS = args.records
    FLAT = args.flat
    datasets = [("synthetic", args.epsilon)] + ([] if args.quick else [("digits", args.digits_epsilon)])
    print("cells: bad/FA = unreliable mass / FedAvg's; AUROC; min/FA = honest non-IID minority mass / FedAvg's; acc")
    print("MultiKrum: 'AUROC' column holds the number of unreliable participants it selected")
    header = f"{'data':9} {'eps':>4} {'split':9} {'kind':6} {'bad':>4} | {'rule':18} {'bad/FA':>6} {'AUROC':>6} {'min/FA':>6} {'acc':>5}"
    print(header)
    print("-" * len(header))
    for dataset, eps in datasets:
        for split in ("iid", "dir0.3") if not args.quick else ("iid",):
            for kind in ("random", "flip") if not args.quick else ("random",):
                for frac in (0.1, 0.3, 0.5):
                    res = evaluate_cell(dataset, split, kind, frac, eps, args.seeds)
                    for rule, (mass, auc, mino, acc) in res.items():
                        print(f"{dataset:9} {eps:>4g} {split:9} {kind:6} {frac:>4.0%} | {rule:18} "
                              f"{mass:>6.2f} {auc:>6.2f} {mino:>6.2f} {acc:>5.3f}", flush=True)


if __name__ == "__main__":
    main()
