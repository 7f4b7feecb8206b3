"""Census releases scored in seconds: what target skew and random targets do to the known-law model (issue #25).

The statistics protocol scores each participant's one shared release; its weights depend on the releases
alone. This script builds the census2000 participants of :mod:`benchmarks.reliability_calibrated` (the same
``participants``, partitions, corruptions and releases) once, caches the releases, and scores them with the
library's :func:`~flwr_ppcdl.reliability.estimate_reliability` exactly as :class:`SummedStatisticsFedAvg`
scores a round (the views of :func:`~flwr_ppcdl.strategies.releases.release_view`; one round, no memory).
Scoring 30 seeds x 16 cells takes seconds, so a change to the known-law model can be judged on many
partitions before the 30-round benchmark runs.

Per cell (split, epsilon, unreliable fraction) it prints honest participants flagged and kept (>= 0.8x their
FedAvg share), the unreliable participants' AUROC and mass, and what the target-moment view's ``collapse``
null was fitted to: the mean size of its reference set (the consistent voices), the share of seeds whose
null has no heterogeneity beyond the law (tail 0), where the unreliable and the honest sit on it (the median
|z| of each, averaged over seeds), the flagged honest participants' side (towards zero / beyond) and their size
(below or at least the honest participants' median count: under skew the partitions' sizes differ; stop 42).
``--scales`` adds one table per scale, swapping the null's squared scale
(:func:`~flwr_ppcdl.reliability.calibration.squared_scale`, the median square over a normal's, in the estimator and
in its simulated thresholds alike): ``pairs``, the median squared difference of two values over a normal's; ``q75``,
the upper quartile of the squares over a normal's; ``mixture``, the larger-weight component of two zero-mean normals
fitted by EM (the honest are the majority, whether the corrupted sit inside or outside them); ``oracle``, a ceiling
and no estimator: the scaled nulls fitted to the consistent voices that are honest (the benchmark knows who), the
library's scale and thresholds otherwise; ``honest-majority``, a ceiling too: every view block's least-trimmed
majority searched among the honest voices only (the library's scale); ``honest-all``: both ceilings at once;
``sampling``, an estimator (stop 42): the known-law heterogeneity ``tau^2 + c m / n_k``, a sampling part in the
participant's count beside one ``tau^2`` per array, fitted on the halves of the counts; ``honest-heterogeneity``, a
ceiling (stop 44): every heterogeneity ``tau^2`` fitted to the honest ones among the voices the library fits it to, all
else the library's.
``--tails`` does the same for the heterogeneity's Student-t degrees of freedom (``HETEROGENEITY_TAIL``), and
``--gram-evidence off`` adds a table where the Gram moments bound influence but are no evidence (as in
classification). These are screenings, not library code. ``--out`` writes the tables once
they are computed (a shell redirect would truncate the committed file first, and the code version would read
``+dirty``).
Command (the committed tables, ``results/reliability_census_releases.txt``, tuning seeds 46-75):

    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_census_releases --seeds $(seq 46 75) \
        --scales median pairs q75 mixture oracle --tails 4 3 --gram-evidence on off --out benchmarks/results/reliability_census_releases.txt
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_census_releases --seeds $(seq 46 75) \
        --scales median honest-majority honest-all --out benchmarks/results/reliability_census_releases_majority.txt  # stop 41
    PYTHONPATH=. nice .venv/bin/python -m benchmarks.reliability_census_releases --seeds $(seq 46 75) \
        --scales median sampling --gram-evidence on off --out benchmarks/results/reliability_census_releases_size.txt  # stop 42
    # and the same --scales median --gram-evidence on off in a checkout of 53b3cb4 (the library with the sampling part,
    # reverted), --out benchmarks/results/reliability_census_releases_sampling_library.txt
    # stop 43: --seeds $(seq 46 75) alone in checkouts of c49bad5, c151c1f, a946b1d, 9968b2a and 06bf9a1 (a regression
    # release's covariance views, reverted), the five tables concatenated in benchmarks/results/reliability_census_releases_cov_views.txt
    # stop 44: --seeds $(seq 46 75) --scales median honest-heterogeneity at a832743 (the library) and in a checkout of 01d99b4
    # (the covariance views again, reverted), the two outputs concatenated in benchmarks/results/reliability_census_releases_ceiling.txt

Privacy: the releases are the participants' differentially private ones (``insecure-noise-seed`` as in the
benchmark: reproducible, not private); scoring them is post-processing.
"""

from __future__ import annotations

import argparse
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

import flwr_ppcdl.reliability.calibration as calibration
import flwr_ppcdl.reliability.constants as constants
import flwr_ppcdl.reliability.estimate as estimate
import flwr_ppcdl.reliability.model as model
from benchmarks.reliability_common import (
    DIAGNOSIS_SEEDS,
    TUNE_SEEDS,
    provenance,
    seed_role,
    weight_statistics,
)
from flwr_ppcdl.reliability import estimate_reliability
from flwr_ppcdl.strategies.releases import release_view

CELLS = [(part, eps, frac) for part in ("iid", "dirichlet") for eps in (1.0, 10.0) for frac in (0.0, 0.1, 0.3, 0.4)]


def releases(seeds: list[int], cache: Path) -> dict[tuple[int, str, float, float], tuple[list[Any], np.ndarray]]:
    """Every cell's releases and who is unreliable (the benchmark's participants), cached by seed."""
    # imports torch and the App: only when releases are built
    from benchmarks.reliability_calibrated import participants

    have: dict[tuple[int, str, float, float], tuple[list[Any], np.ndarray]] = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    for seed in seeds:
        for part, eps, frac in CELLS:
            if (seed, part, eps, frac) in have:
                continue
            cfg = {"dataset": "census2000", "unreliable-kind": "random-targets", "unreliable-fraction": frac,
                   "partitioning": part, "epsilon": eps, "seed": seed, "num-rounds": 30, "insecure-noise-seed": 1000 + seed}
            _, trainers, bad = participants(cfg)
            have[(seed, part, eps, frac)] = ([t.release for t in trainers], np.asarray(bad, dtype=bool))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(have))
    return have


def score(rels: list[Any], bad: np.ndarray, gram_evidence: bool = True) -> dict[str, Any]:
    """One round of the statistics protocol's scoring; the target-moment view's collapse null as fitted.
    ``gram_evidence=False``: the Gram moments bound influence but are no evidence."""
    fits: list[Any] = []
    fit_block = estimate.fit_block
    counts = np.array([r.num_examples for r in rels], dtype=np.float64)
    HONEST[:], COUNTS[:] = [~bad], [counts]  # every participant holds a release: a view block's positions are the participants

    def recording(*args: Any, **kwargs: Any) -> Any:
        fits.append(fit_block(*args, **kwargs))
        return fits[-1]

    estimate.fit_block = recording  # type: ignore[assignment]
    try:
        views = [release_view(r) for r in rels]
        for v in views if not gram_evidence else ():
            v.evidence = (True, False)  # regression: the target moments, then the Gram moments
        result = estimate_reliability(None, counts, views=views, memory_rate=None)
    finally:
        estimate.fit_block = fit_block  # type: ignore[assignment]
    flagged = result.round_evidence > 0
    # the benchmarks' statistics of one round (positions as node ids): the same definitions as their tables
    stats = weight_statistics([dict(enumerate(result.weights / result.weights.sum()))], [dict(enumerate(counts / counts.sum()))],
                              dict(enumerate(bad.tolist())), [dict(enumerate(result.round_evidence))])
    moments = fits[0]  # the first view block: the target moments b / n
    side = moments.z.get("collapse", np.zeros(len(rels)))
    smaller = counts < np.median(counts[~bad])  # by the honest's median count
    return {"flagged": stats["false_alarms"], "kept": stats["honest_kept"], "auroc": stats["auroc"], "mass": stats["bad_mass"],
            "reference": int(moments.consistent.sum()), "no_tail": moments.kinds.get("collapse", ("", True, 1.0, 1.0))[3] == 0.0,
            "towards": int(np.sum(flagged & ~bad & (side > 0))), "beyond": int(np.sum(flagged & ~bad & (side < 0))),
            "z_bad": float(np.median(np.abs(side[bad]))) if bad.any() else math.nan, "z_honest": float(np.median(np.abs(side[~bad]))),
            "smaller": int(np.sum(flagged & ~bad & smaller)), "larger": int(np.sum(flagged & ~bad & ~smaller))}


def pair_scale(values: np.ndarray) -> np.ndarray:
    """The median squared difference of two of ``values`` (last axis) over a standard normal's (2 x the median chi^2_1):
    four values at the centre pull it less than they pull the median square."""
    i, j = np.triu_indices(values.shape[-1], 1)
    return np.asarray(np.median((values[..., i] - values[..., j]) ** 2, axis=-1) / (2.0 * calibration.MEDIAN_CHI2_1))


UPPER_QUARTILE_CHI2_1 = 1.3233036969314664
"""The upper quartile of chi^2_1 (a standard normal's squares)."""


def upper_quartile_scale(values: np.ndarray) -> np.ndarray:
    """The upper quartile of the squares of ``values`` (last axis) over a standard normal's: four values at the centre
    among ten pull it less than the median square, far values more."""
    return np.asarray(np.quantile(np.square(values), 0.75, axis=-1) / UPPER_QUARTILE_CHI2_1)


def mixture_scale(values: np.ndarray, steps: int = 60) -> np.ndarray:
    """The variance of the larger-weight component of two zero-mean normals fitted to ``values`` (last axis) by EM,
    started from the lower quartile and the upper decile of the squares: values at the centre and far values alike
    form the other component."""
    x = np.square(np.asarray(values, dtype=np.float64))
    floor = 1e-3 * np.maximum(np.median(x, axis=-1), 1e-300)
    low, high = np.maximum(np.quantile(x, 0.25, axis=-1), floor), np.maximum(np.quantile(x, 0.9, axis=-1), 2.0 * floor)
    weight = np.full(low.shape, 0.5)
    for _ in range(steps):
        a = weight[..., None] * np.exp(-0.5 * x / low[..., None]) / np.sqrt(low[..., None])
        b = (1.0 - weight[..., None]) * np.exp(-0.5 * x / high[..., None]) / np.sqrt(high[..., None])
        r = a / np.maximum(a + b, 1e-300)
        weight = np.clip(r.mean(axis=-1), 1e-3, 1.0 - 1e-3)
        low = np.maximum((r * x).sum(axis=-1) / np.maximum(r.sum(axis=-1), 1e-300), floor)
        high = np.maximum(((1.0 - r) * x).sum(axis=-1) / np.maximum((1.0 - r).sum(axis=-1), 1e-300), floor)
    return np.asarray(np.where(weight >= 0.5, low, high))


LIBRARY_SCALE, LIBRARY_TAIL, LIBRARY_PROJECTIONS = calibration.squared_scale, constants.HETEROGENEITY_TAIL, model._projections
LIBRARY_MAJORITY = model._least_trimmed
LIBRARY_HETEROGENEITY = model._heterogeneity
HONEST: list[np.ndarray] = []  # the round being scored: who is honest (the oracle's knowledge)
COUNTS: list[np.ndarray] = []  # and its participants' claimed counts


def sampling_heterogeneity(layers: Any, centre: Any, members: np.ndarray) -> list[Any]:
    """``model._heterogeneity`` with a sampling part (the ``sampling`` screen, stop 42): under a known law participant k's
    heterogeneity is ``tau^2 + c m / n_k`` (``m`` the median count: a mean over ``n_k`` records spreads as ``1 / n_k``),
    ``tau^2`` making the median standardised energy of the members at or above the members' median count 1 and ``c``
    that of those below it (nested bisections, both monotone); the library's ``tau^2`` where the counts are not the
    block's, a half has fewer than two members (equal counts) or the small half needs no sampling part."""
    base = LIBRARY_HETEROGENEITY(layers, centre, members)
    n = COUNTS[-1] if COUNTS else None
    if n is None or n.size != layers[0].stack.shape[0]:
        return base
    small = members & (n < np.median(n[members]))
    large = members & ~small
    if small.sum() < 2 or large.sum() < 2:
        return base
    rel = np.median(n) / n
    out: list[Any] = []
    for lay, c, b in zip(layers, centre, base, strict=True):
        if lay.noise is None:
            out.append(b)
            continue
        r2, v = (lay.stack - c) ** 2, np.maximum(lay.noise, 1e-300)

        def excess(mask: np.ndarray, t: float, s: float, r2: np.ndarray = r2, v: np.ndarray = v) -> float:
            return float(np.median(np.mean(r2[mask] / (t + s * rel[mask, None] + v[mask]), axis=1))) - 1.0

        start = float(np.max(r2[members].mean(axis=1))) + 1e-300

        def tau2(s: float, excess: Any = excess, start: float = start) -> float:
            return _root(lambda t: excess(large, t, s), start)

        s = _root(lambda s: excess(small, tau2(s), s), start)
        out.append((tau2(s) + s * rel)[:, None] if s > 0 else b)
    return out


def _root(f: Any, start: float) -> float:
    """The zero of a decreasing ``f`` on ``[0, inf)`` by bisection from ``[0, start]`` (0 where ``f(0) <= 0``)."""
    if f(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, start
    while f(hi) > 0:
        hi *= 4.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def honest_projections(out: Any, layers: Any, loo: Any, centre: Any, tau2: Any, members: np.ndarray, *args: Any) -> None:
    """``model._projections`` with its null fitted to the honest consistent voices only (the ``oracle`` ceiling)."""
    LIBRARY_PROJECTIONS(out, layers, loo, centre, tau2, members & HONEST[-1], *args)


def honest_majority(layers: Any, is_voice: np.ndarray) -> np.ndarray:
    """``model._least_trimmed`` searched among the honest voices only (at least three; the ``honest-*`` ceilings)."""
    honest = is_voice & HONEST[-1] if HONEST and HONEST[-1].size == is_voice.size else is_voice
    return np.asarray(LIBRARY_MAJORITY(layers, honest if int(honest.sum()) >= 3 else is_voice))


def honest_heterogeneity(layers: Any, centre: Any, members: np.ndarray) -> list[Any]:
    """``model._heterogeneity`` fitted to the honest ones among its members only (at least three; the
    ``honest-heterogeneity`` ceiling: everything else is the library's)."""
    honest = members & HONEST[-1] if HONEST and HONEST[-1].size == members.size else members
    return list(LIBRARY_HETEROGENEITY(layers, centre, honest if int(honest.sum()) >= 3 else members))


def use_scale(name: str, tail: float = LIBRARY_TAIL) -> None:
    """The ``"scaled"`` null's squared scale in the estimator and in its simulations (``"median"``: the library's;
    ``"pairs"``, ``"q75"``, ``"mixture"``; ``"oracle"``: the library's, fitted to honest voices; ``"honest-majority"``: the
    library's scale, the majority searched among the honest voices; ``"honest-all"``: both; ``"sampling"``: the library's
    scale, the known-law heterogeneity with a sampling part, :func:`sampling_heterogeneity`; ``"honest-heterogeneity"``:
    the library's, every heterogeneity fitted to honest voices, :func:`honest_heterogeneity`), the heterogeneity's tail;
    the cached thresholds are cleared."""
    scale = {"pairs": pair_scale, "q75": upper_quartile_scale, "mixture": mixture_scale}.get(name, LIBRARY_SCALE)
    calibration.squared_scale = model.squared_scale = scale  # type: ignore[assignment]
    model._projections = honest_projections if name in ("oracle", "honest-all") else LIBRARY_PROJECTIONS  # type: ignore[assignment]
    model._least_trimmed = honest_majority if name.startswith("honest-") else LIBRARY_MAJORITY  # type: ignore[assignment]
    model._heterogeneity = {"sampling": sampling_heterogeneity, "honest-heterogeneity": honest_heterogeneity}.get(  # type: ignore[assignment]
        name, LIBRARY_HETEROGENEITY)
    constants.HETEROGENEITY_TAIL = tail
    for cached in (calibration.evidence_threshold, calibration.chance_spread, calibration.energy_threshold):
        cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DIAGNOSIS_SEEDS))
    parser.add_argument("--scales", nargs="+", choices=("median", "pairs", "q75", "mixture", "oracle", "honest-majority", "honest-all", "sampling",
                                                      "honest-heterogeneity"), default=["median"],
                        help="one table per scale (module docstring)")
    parser.add_argument("--gram-evidence", nargs="+", choices=("on", "off"), default=["on"],
                        help="one table per choice with the library's scale (off: the Gram moments are no evidence)")
    parser.add_argument("--tails", type=float, nargs="+", default=[LIBRARY_TAIL],
                        help="one table per heterogeneity tail (Student-t degrees of freedom) with the library's scale")
    parser.add_argument("--out", type=Path, help="write the tables here (default: print them)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flwr_ppcdl_calib/census_releases.pkl"))
    args = parser.parse_args()
    if refused := [s for s in args.seeds if s not in TUNE_SEEDS + DIAGNOSIS_SEEDS]:
        raise SystemExit(f"seeds {refused} are not tuning seeds: this is a study tool, the benchmarks report")
    have = releases(args.seeds, args.cache)
    info = provenance()
    lines: list[str] = []
    screens = ([(scale, LIBRARY_TAIL, True) for scale in args.scales] + [("median", t, True) for t in args.tails if t != LIBRARY_TAIL]
               + [("median", LIBRARY_TAIL, False)] * ("off" in args.gram_evidence))
    for scale, tail, gram in screens:
        use_scale(scale, tail)
        lines += [""] if lines else []
        lines += [f"# census2000 releases, statistics-protocol scoring (one round, no memory), scale {scale}, tail t({tail:g})"
                 f"{'' if gram else ', Gram moments no evidence'}; seeds {args.seeds} "
                 f"({', '.join(sorted({seed_role(s) for s in args.seeds}))}); code {info['code_version']}; {info['packages']}",
                 f"{'split':9} {'eps':>4} {'bad':>4} | {'honest flagged':>14} {'kept':>5} | {'AUROC':>5} {'mass':>5} | "
                 f"{'reference':>9} {'tail 0':>6} | median |z| unreliable / honest | flagged honest: towards zero / beyond "
                 "| smaller / larger half of the honest's counts"]
        for part, eps, frac in CELLS:
            rows = [score(*have[(s, part, eps, frac)], gram_evidence=gram) for s in args.seeds]

            def m(key: str, rows: list[dict[str, Any]] = rows) -> float:
                values = [r[key] for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
                return float(np.mean(values)) if values else math.nan

            lines.append(f"{part:9} {eps:>4g} {frac:>4.0%} | {m('flagged'):>14.3f} {m('kept'):>5.2f} | {m('auroc'):>5.2f} "
                         f"{m('mass'):>5.2f} | {m('reference'):>9.1f} {m('no_tail'):>6.2f} | {m('z_bad'):>13.2f} / {m('z_honest'):<14.2f} | "
                         f"{sum(r['towards'] for r in rows)} / {sum(r['beyond'] for r in rows)} | "
                         f"{sum(r['smaller'] for r in rows)} / {sum(r['larger'] for r in rows)}")
    use_scale("median")
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
