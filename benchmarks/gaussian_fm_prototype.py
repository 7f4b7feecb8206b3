"""Research prototype: the Gaussian functional mechanism on Fashion-MNIST (not a test; prints tables).

Run from the repository root (``-m`` puts this checkout's ``flwr_ppcdl`` first on the path):

    .venv/bin/python -m benchmarks.gaussian_fm_prototype [--data DIR] [--seeds 3] [--quick]

Setup
-----
* Fashion-MNIST idx files (``flwr_ppcdl.data.load_fashion_mnist``): 60k train, official 10k test.
  ``default_rng(0).permutation(60000)`` is cut into 10 IID participants of 6,000.
* Bodies ``make_body("pool4-rp16")`` (d = 16) and ``make_body("pool4")`` (d = 49), computed once
  with torch; rows bounded with ``clip_l2`` (as :class:`FunctionalMechanism` does), bias appended.
* Every participant releases ``(upper(G), C)`` once (m = D(D+1)/2 + K·D coordinates) with

  - ``laplace``: the existing ``FunctionalMechanism(..., sampler="discrete")`` (pure ε = 1);
  - ``gauss-zcdp``: :class:`DiscreteGridGaussian` (hardened; ε = 1, δ = 1e-5 through ρ-zCDP), L2
    bound ``gaussian_l2_bound(sensitivity_softmax_l2(d, 10), n, m)``;
  - ``gauss-analytic``: :class:`NumpyGaussian` (analytic σ, NOT hardened; the calibration the
    hardened sampler cannot use), same L2 bound.

* The server sums the 10 releases and solves once. Repair ("rule m"): ``τ = m·2·sd·√D`` with ``sd``
  the per-entry noise sd of the SUM; eigendecompose ``G~ + τI``; keep eigenvalues ``> τ/2``;
  re-centre ``C~`` over classes; ``W = K·C~ Q'(Λ')⁻¹Q'ᵀ``. ``m = 1`` is the project's rule, ``m = 0.5``
  the ridge the feasibility doc found.
* Post-processing candidates on the same summed statistics:

  - ``lda``: class counts and sums from ``C`` and the Gram's bias column, within-class scatter
    ``G_hh - Σ_k s_k s_kᵀ/n_k``, repaired like ``G`` (same rule), linear discriminant argmax;
  - ``newton``: ``s`` private refinements. The budget ``ρ(ε=1, δ=1e-5)`` is split: a fraction ``f``
    for the first release, ``(1-f)/s`` for each refinement, which releases the gradient of the
    exact softmax loss at the current global model, ``Σ (p_i - e_y) h~_iᵀ`` (K·D numbers,
    replace-one L2 sensitivity ``2·max ||p - e_y||·||h~|| <= 2·√2·√2 = 4``). The Hessian of the
    second-order expansion is replaced by the Taylor-at-0 curvature ``(I - 11ᵀ/K)/K ⊗ G~`` (public
    constant times the already released ``G~``): releasing the exact Hessian would be K²D²/2 ≈ 125k
    numbers, whose noise would swamp it. Step ``W ← W - η·K·centre(g~)·G~⁺``. The total is checked
    with :func:`flwr_ppcdl.privacy.accounting.compose` to be ``<= (1, 1e-5)``.

* Nothing is chosen on the test set. Tuning (repair rule, LDA vs Taylor, Newton ``f``, ``η``,
  ``s``) uses a validation split: the last 600 records of each participant's shard, pooled; during
  tuning the participants hold only their first 5,400 and noise seeds are 100-102. Final runs:
  participants hold all 6,000, seeds 0-2, official test set.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from flwr_ppcdl.data import load_fashion_mnist
from flwr_ppcdl.models import BODY_NAMES, make_body
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLeakWarning, clip_l2
from flwr_ppcdl.privacy.accounting import Guarantee, compose, zcdp_epsilon
from flwr_ppcdl.privacy.calibration import (
    gaussian_l2_bound,
    zcdp_noise_multiplier,
)
from flwr_ppcdl.privacy.gaussian import (
    DiscreteGridGaussian,
    NumpyGaussian,
)
from flwr_ppcdl.privacy.noise import generator_randbelow
from flwr_ppcdl.privacy.sensitivity import ROUND_UP, sensitivity_softmax_l2

K = 10
PARTICIPANTS = 10
EPSILON = 1.0
DELTA = 1e-5
BODIES = ("pool4-rp16", "pool4")
NEWTON_GRADIENT_L2 = 4.0 * ROUND_UP
FloatArray = np.ndarray


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    parts: list[tuple[FloatArray, np.ndarray]]  # per participant: bounded h (n, d), labels (n,)
    eval_h: FloatArray
    eval_y: np.ndarray


def body_features(name: str, images: np.ndarray) -> FloatArray:
    body = make_body(name)
    with torch.no_grad():
        out = body(torch.from_numpy(np.ascontiguousarray(images))).numpy()
    return clip_l2(out.astype(np.float64))


def make_splits(folder: str, name: str) -> tuple[Split, Split]:
    train = load_fashion_mnist(folder, split="train")
    test = load_fashion_mnist(folder, split="test")
    h_train = body_features(name, train.features)
    h_test = body_features(name, test.features)
    y_train, y_test = train.targets.astype(np.int64), test.targets.astype(np.int64)
    perm = np.random.default_rng(0).permutation(h_train.shape[0])
    shards = np.array_split(perm, PARTICIPANTS)
    final = Split([(h_train[s], y_train[s]) for s in shards], h_test, y_test)
    tune_parts = [(h_train[s[:5400]], y_train[s[:5400]]) for s in shards]
    val_idx = np.concatenate([s[5400:] for s in shards])
    tune = Split(tune_parts, h_train[val_idx], y_train[val_idx])
    return tune, final


def with_bias(h: FloatArray) -> FloatArray:
    return np.hstack([h, np.ones((h.shape[0], 1))])


# --------------------------------------------------------------------------- releases


def exact_vector(h: FloatArray, y: np.ndarray) -> FloatArray:
    ht = with_bias(h)
    centred = np.full((h.shape[0], K), -1.0 / K)
    centred[np.arange(h.shape[0]), y] += 1.0
    gram = ht.T @ ht
    return np.concatenate([gram[np.triu_indices(ht.shape[1])], (centred.T @ ht).ravel()])


def unpack(vec: FloatArray, dim: int) -> tuple[FloatArray, FloatArray]:
    upper = np.triu_indices(dim)
    gram = np.zeros((dim, dim))
    gram[upper] = vec[: upper[0].size]
    gram = gram + np.triu(gram, 1).T
    return gram, vec[upper[0].size :].reshape(K, dim)


@dataclass
class Summed:
    gram: FloatArray
    cross: FloatArray
    sd: float  # per-entry noise sd of the sum (0 without noise)
    guarantees: list[Guarantee]  # one per participant (disjoint records: parallel composition)
    ms_per_participant: float


def gaussian_sampler(kind: str, l2: float, epsilon: float, m: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    if kind == "gauss-zcdp":
        return DiscreteGridGaussian(
            l2_bound=l2, epsilon=epsilon, delta=DELTA, size=m, randbelow=generator_randbelow(rng)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        return NumpyGaussian(l2_bound=l2, epsilon=epsilon, delta=DELTA, size=m, rng=rng)


def release_all(split: Split, kind: str, seed: int, epsilon: float = EPSILON) -> Summed:
    """Each participant releases its (upper(G), C) once; the server sums them."""
    d = split.parts[0][0].shape[1]
    dim = d + 1
    total: FloatArray | None = None
    sds, guarantees, times = [], [], []
    for k, (h, y) in enumerate(split.parts):
        rng = np.random.default_rng([seed, k, 0])
        start = time.perf_counter()
        if kind == "exact":
            vec, sd = exact_vector(h, y), 0.0
        elif kind == "laplace":
            fm = FunctionalMechanism(
                task="classification", num_classes=K, epsilon=epsilon, sampler="discrete", insecure_noise_seed=rng
            )
            rel = fm.release(h, y)
            vec = np.concatenate(
                [rel.statistics["gram"][np.triu_indices(dim)], rel.statistics["cross"].ravel()]
            )
            sd = math.sqrt(2.0) * rel.noise_scale
            guarantees.append(Guarantee.pure(rel.epsilon))
        else:
            exact = exact_vector(h, y)
            l2 = gaussian_l2_bound(sensitivity_softmax_l2(d, K), h.shape[0], exact.size)
            sampler = gaussian_sampler(kind, l2, epsilon, exact.size, rng)
            vec, sd = sampler.perturb(exact), sampler.scale
            guarantees.append(sampler.guarantee())
        times.append(time.perf_counter() - start)
        sds.append(sd)
        total = vec if total is None else total + vec
    assert total is not None
    gram, cross = unpack(total, dim)
    return Summed(
        gram, cross, math.sqrt(sum(s * s for s in sds)), guarantees, 1000 * float(np.mean(times))
    )


# --------------------------------------------------------------------------- decoders


def kept_inverse(matrix: FloatArray, sd: float, mult: float) -> FloatArray:
    """Pseudo-inverse of the repaired matrix: τ = mult·2·sd·√D, eig(M + τI), keep > τ/2."""
    dim = matrix.shape[0]
    tau = mult * 2.0 * sd * math.sqrt(dim)
    vals, vecs = np.linalg.eigh(matrix + tau * np.eye(dim))
    threshold = tau / 2 if tau > 0 else 1e-10 * float(np.max(np.abs(vals)))
    keep = vals > threshold
    q = vecs[:, keep]
    return (q / vals[keep]) @ q.T


def taylor_solve(s: Summed, mult: float) -> FloatArray:
    centred = s.cross - s.cross.mean(axis=0, keepdims=True)
    return K * centred @ kept_inverse(s.gram, s.sd, mult)


def lda_solve(s: Summed, mult: float, n_total: int) -> FloatArray:
    """LDA from the same statistics: class sums of h~ are C_k + G[:, bias]/K (bias entry = n_k)."""
    dim = s.gram.shape[0]
    sums = s.cross + s.gram[:, -1][None, :] / K
    counts = np.maximum(sums[:, -1], 1.0)
    class_sums = sums[:, : dim - 1]
    scatter = s.gram[: dim - 1, : dim - 1] - (class_sums.T / counts) @ class_sums
    precision = (n_total - K) * kept_inverse(scatter, s.sd, mult)  # inverse shared covariance
    means = class_sums / counts[:, None]
    coef = means @ precision
    prior = counts / counts.sum()
    bias = -0.5 * np.sum(coef * means, axis=1) + np.log(prior)
    return np.hstack([coef, bias[:, None]])


def accuracy(w: FloatArray, h: FloatArray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(with_bias(h) @ w.T, axis=1) == y))


def softmax(z: FloatArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def rho_total() -> float:
    return 1.0 / (2.0 * zcdp_noise_multiplier(EPSILON, DELTA) ** 2)


SHRINK = 1.0 - 1e-9  # keep Σρ_i strictly inside the total after float rounding


def first_release(split: Split, seed: int, fraction: float, noisy: bool = True) -> Summed:
    """The (upper(G), C) release at ρ·fraction (hardened Gaussian), or exact statistics."""
    if not noisy:
        return release_all(split, "exact", seed)
    epsilon = zcdp_epsilon(rho_total() * fraction * SHRINK, DELTA)
    return release_all(split, "gauss-zcdp", seed, epsilon=epsilon)


def decode(summed: Summed, decoder: str, mult: float, n_total: int) -> FloatArray:
    return taylor_solve(summed, mult) if decoder == "taylor" else lda_solve(summed, mult, n_total)


def newton(
    split: Split,
    summed: Summed,
    seed: int,
    fraction: float,
    steps: int,
    eta: float,
    mult: float,
    init: str,
    noisy: bool = True,
) -> tuple[FloatArray, float, float]:
    """Start from `init` on the first release, then `steps` gradient releases at ρ·(1-f)/steps."""
    n_total = sum(h.shape[0] for h, _ in split.parts)
    w = decode(summed, init, mult, n_total)
    precond = kept_inverse(summed.gram, summed.sd, mult)
    guarantees = [[g] for g in summed.guarantees]  # per participant: composed over its releases
    step_eps = zcdp_epsilon(rho_total() * (1 - fraction) / steps * SHRINK, DELTA) if noisy else 0
    d = split.parts[0][0].shape[1]
    for step in range(steps):
        grad_total = np.zeros((K, d + 1))
        for k, (h, y) in enumerate(split.parts):
            ht = with_bias(h)
            p = softmax(ht @ w.T)
            p[np.arange(h.shape[0]), y] -= 1.0
            grad = (p.T @ ht).ravel()
            if noisy:
                l2 = gaussian_l2_bound(NEWTON_GRADIENT_L2, h.shape[0], grad.size)
                rng = np.random.default_rng([seed, k, 1 + step])
                sampler = gaussian_sampler("gauss-zcdp", l2, step_eps, grad.size, rng)
                grad = sampler.perturb(grad)
                guarantees[k].append(sampler.guarantee())
            grad_total += grad.reshape(K, d + 1)
        centred = grad_total - grad_total.mean(axis=0, keepdims=True)
        w = w - eta * K * centred @ precond
    if not noisy:
        return w, math.inf, 0.0
    totals = [compose(own, DELTA) for own in guarantees]
    worst = max(totals, key=lambda t: t.epsilon)
    assert worst.epsilon <= EPSILON and worst.delta <= DELTA, worst
    return w, worst.epsilon, worst.delta


# --------------------------------------------------------------------------- experiment


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f}±{np.std(values, ddof=1):.3f}"


def one_shot_table(split: Split, seeds: list[int], n_total: int) -> dict[str, list[float]]:
    """Accuracies of the one-shot decoders for every mechanism, keyed 'mech/decoder/rule'."""
    results: dict[str, list[float]] = {}
    ms: dict[str, list[float]] = {}
    for kind in ("exact", "laplace", "gauss-zcdp", "gauss-analytic"):
        for seed in seeds if kind != "exact" else [0]:
            summed = release_all(split, kind, seed)
            ms.setdefault(kind, []).append(summed.ms_per_participant)
            ms.setdefault(f"{kind}/sd", []).append(summed.sd / math.sqrt(PARTICIPANTS))
            for guarantee in summed.guarantees:  # disjoint records: each participant's own
                assert compose([guarantee], DELTA).epsilon <= EPSILON, guarantee
            for mult in (1.0, 0.5):
                w = taylor_solve(summed, mult)
                results.setdefault(f"{kind}/taylor/m{mult}", []).append(
                    accuracy(w, split.eval_h, split.eval_y)
                )
                w = lda_solve(summed, mult, n_total)
                results.setdefault(f"{kind}/lda/m{mult}", []).append(
                    accuracy(w, split.eval_h, split.eval_y)
                )
    for kind, values in ms.items():
        results[kind if kind.endswith("/sd") else f"{kind}/ms"] = values
    return results


NEWTON_GRID = {
    "fraction": (0.5, 0.7, 0.85),
    "steps": (1, 2),
    "eta": (0.5, 1.0),
    "init": ("taylor", "lda"),
}


def newton_grid(split: Split, seeds: list[int], mult: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for fraction in NEWTON_GRID["fraction"]:
        for seed in seeds:
            summed = first_release(split, seed, float(fraction))
            for steps in NEWTON_GRID["steps"]:
                for eta in NEWTON_GRID["eta"]:
                    for init in NEWTON_GRID["init"]:
                        key = f"{fraction}/{steps}/{eta}/{init}"
                        w, _, _ = newton(
                            split,
                            summed,
                            seed,
                            float(fraction),
                            int(steps),
                            float(eta),
                            mult,
                            str(init),
                        )
                        results.setdefault(key, []).append(accuracy(w, split.eval_h, split.eval_y))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, no Newton grid")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:  # one BLAS thread: the machine is shared, and per-participant timings stay comparable
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (dev extra)
        pass
    for name in BODIES:
        assert name in BODY_NAMES, name
    seeds_final = list(range(1 if args.quick else args.seeds))
    seeds_tune = [100 + s for s in seeds_final]
    rho = 1.0 / (2.0 * zcdp_noise_multiplier(EPSILON, DELTA) ** 2)
    print(f"# Gaussian FM prototype: ε = {EPSILON}, δ = {DELTA} (zCDP ρ = {rho:.5f})")
    for name in BODIES:
        started = time.perf_counter()
        tune, final = make_splits(args.data, name)
        d = final.parts[0][0].shape[1]
        dim = d + 1
        m = dim * (dim + 1) // 2 + K * dim
        l2 = sensitivity_softmax_l2(d, K)
        print(f"\n## body {name}: d = {d}, D = {dim}, m = {m} coordinates, Δ₂ = {l2:.5f}")

        val = one_shot_table(tune, seeds_tune, 5400 * PARTICIPANTS)
        test = one_shot_table(final, seeds_final, 6000 * PARTICIPANTS)
        print("\n| mechanism | decoder | rule m | validation (n=5,400/participant) | test |")
        print("|---|---|---|---|---|")
        for key, values in test.items():
            if key.endswith(("/ms", "/sd")):
                continue
            kind, decoder, rule = key.split("/")
            print(f"| {kind} | {decoder} | {rule[1:]} | {fmt(val[key])} | {fmt(values)} |")
        print(
            "\nrelease time per participant (ms, final runs, 6,000 records): "
            + ", ".join(
                f"{key.split('/')[0]} {np.mean(v):.1f}"
                for key, v in test.items()
                if key.endswith("/ms")
            )
        )

        # Repair rule and decoder chosen on validation (hardened Gaussian only).
        print(
            "per-coordinate noise sd of one participant's release: "
            + ", ".join(
                f"{key.split('/')[0]} {np.mean(v):.2f}"
                for key, v in test.items()
                if key.endswith("/sd") and not key.startswith("exact")
            )
        )
        candidates = {
            k: float(np.mean(v))
            for k, v in val.items()
            if k.startswith("gauss-zcdp/") and not k.endswith(("/ms", "/sd"))
        }
        best = max(candidates, key=lambda k: candidates[k])
        mult = float(best.split("/")[2][1:])
        print(f"\nvalidation choice for gauss-zcdp one-shot: {best} ({candidates[best]:.3f})")
        if args.quick:
            print(f"({time.perf_counter() - started:.0f} s)")
            continue

        grid = newton_grid(tune, seeds_tune, mult)
        print(f"\nNewton refinements (gauss-zcdp, repair rule m = {mult}), validation:")
        print("| first-release share f | steps | η | init | validation |")
        print("|---|---|---|---|---|")
        for key, values in grid.items():
            print("| " + " | ".join(key.split("/")) + f" | {fmt(values)} |")
        best_newton = max(grid, key=lambda k: float(np.mean(grid[k])))
        f, s_, e_, init = best_newton.split("/")
        fraction, steps, eta = float(f), int(s_), float(e_)
        accs, eps_total = [], []
        for seed in seeds_final:
            summed = first_release(final, seed, fraction)
            w, e_tot, _ = newton(final, summed, seed, fraction, steps, eta, mult, init)
            accs.append(accuracy(w, final.eval_h, final.eval_y))
            eps_total.append(e_tot)
        print(
            f"\nNewton, validation choice (f, steps, η, init) = {best_newton}: test {fmt(accs)} "
            f"(largest per-participant total ε = {max(eps_total):.6f} at δ = {DELTA}); "
            f"one-shot at the same total budget: {best} {fmt(test[best])}, "
            f"gauss-zcdp/taylor/m{mult} {fmt(test[f'gauss-zcdp/taylor/m{mult}'])}"
        )
        exact = first_release(final, 0, 1.0, noisy=False)
        for init_free in ("taylor", "lda"):
            ceiling = []
            for steps_free in (1, 2, 5):
                w, _, _ = newton(
                    final, exact, 0, 1.0, steps_free, 1.0, mult, init_free, noisy=False
                )
                ceiling.append(f"{steps_free}: {accuracy(w, final.eval_h, final.eval_y):.3f}")
            print(
                f"noise-free Newton from {init_free} (η = 1), test by steps: " + ", ".join(ceiling)
            )
        print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
