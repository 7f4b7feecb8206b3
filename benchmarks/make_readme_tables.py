"""Regenerate the README's results tables and plots from the harness CSVs.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/make_readme_tables.py [--results benchmarks/results]

Reads ``full.csv`` (or ``quick.csv``), ``tradeoff.csv`` and ``scale.csv`` written by
``benchmarks/harness.py`` and writes ``README_TABLES.md`` plus PNG figures next to them. Every
figure is mean ± sd over the seeds present; timings carry the hardware they were measured on.
The goals are reported, not asserted: a missed goal says by how much.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ORDER = [
    "ppcdl-reliability", "ppcdl-statistics-reliability", "fm-statistics-fedavg", "fm-statistics-oracle", "fm-fedavg", "fm-fedmedian", "fm-fedtrimmedavg", "fm-multikrum", "fm-oracle",
    "fm-noiseless-fedavg", "sgd-fedavg", "centralized", "flower-dp-fedavg", "opacus-dpsgd-fedavg",
]
ROBUST = ("fm-fedmedian", "fm-fedtrimmedavg", "fm-multikrum")
# (ours, its FedAvg, its oracle) per FM protocol: parameter sharing and summed statistics
PROTOCOL_TRIPLES = (("ppcdl-reliability", "fm-fedavg", "fm-oracle"),
                    ("ppcdl-statistics-reliability", "fm-statistics-fedavg", "fm-statistics-oracle"))
SCEN_KEYS = ("tag", "dataset", "unreliable_kind", "unreliable_fraction", "partitioning", "epsilon_target",
             "rounds", "local_epochs", "partitions")


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def ms(values: list[float], digits: int = 3) -> str:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def mean(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def group(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, list[dict[str, Any]]]]:
    """scenario key -> contender -> rows (one per seed); only tuned-best / untuned rows."""
    out: dict[tuple[str, ...], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["contender"].endswith("-grid"):
            continue
        out[tuple(r[k] for k in SCEN_KEYS)][r["contender"]].append(r)
    return out


def scen_label(key: tuple[str, ...]) -> str:
    d = dict(zip(SCEN_KEYS, key, strict=True))
    part = d["partitioning"] + ("" if d["partitioning"] == "iid" else " α=0.3")
    return (f"{d['dataset']}, {d['partitions']} clients {part}, {d['rounds']} rounds, ε={f(d['epsilon_target']):g}, "
            f"{float(d['unreliable_fraction']):.0%} {d['unreliable_kind']}")


def results_table(groups: dict, tags: tuple[str, ...]) -> list[str]:
    lines = []
    for key, by in groups.items():
        if key[0] not in tags:
            continue
        metric = next(iter(by.values()))[0]["metric"]
        seeds = sorted({r["seed"] for rs in by.values() for r in rs})
        lines += [f"\n#### {scen_label(key)} — test {metric}, seeds {', '.join(seeds)}\n",
                  "| contender | " + metric + " | ε spent (meaning) | weight on unreliable | AUROC | client s/round | aggregation s/round | wall s/round |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in [c for c in ORDER if c in by] + [c for c in by if c not in ORDER]:
            rs = by[name]
            eps = mean([f(r["epsilon_spent"]) for r in rs])
            meaning = rs[0]["privacy"]
            eps_txt = "—" if not math.isfinite(eps) else f"{eps:.3g}"
            hyper = rs[0]["hyper"] if name in ("opacus-dpsgd-fedavg", "flower-dp-fedavg", "sgd-fedavg") else ""
            errs = {r["error"] for r in rs if r["error"]}
            lines.append(
                f"| {name}{' ' + hyper.replace('|', '/') if hyper else ''}{' (error: ' + '; '.join(errs) + ')' if errs else ''} "
                f"| {ms([f(r['value']) for r in rs])} | {eps_txt} ({meaning}) "
                f"| {ms([f(r['weight_on_unreliable']) for r in rs], 2)} | {ms([f(r['auroc']) for r in rs], 2)} "
                f"| {ms([f(r['client_s_per_round']) for r in rs], 4)} | {ms([f(r['agg_s_per_round']) for r in rs], 5)} "
                f"| {ms([f(r['wall_s_per_round']) for r in rs], 3)} |")
    return lines


PRIVACY_SHORT = {
    "opacus-dpsgd-fedavg": "record-level (ε, δ=1e-5), all steps",
    "flower-dp-fedavg": "CLIENT-level (ε, δ=1e-5)",
    "sgd-fedavg": "none", "centralized": "none", "fm-noiseless-fedavg": "none (ε=∞)",
}


def headline(groups: dict) -> list[str]:
    """Contenders × the 'main' scenarios (ε=1, 10 IID clients, 20 rounds), mean ± sd over seeds."""
    keys = sorted([k for k in groups if k[0] == "main"], key=lambda k: (k[1] != "fashion-mnist", k[1], f(k[3])))
    if not keys:
        return []
    head = [f"{k[1]} {float(k[3]):.0%} {k[2]}" for k in keys]
    lines = ["\n### Headline: ε=1, 10 IID clients, 20 rounds (Fashion-MNIST: test accuracy; census2000: test R²), mean ± sd over seeds\n",
             "| contender | privacy (ε=1 means) | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(keys)]
    names = [c for c in ORDER if any(c in groups[k] for k in keys)]
    for name in names:
        cells = []
        for k in keys:
            rs = groups[k].get(name, [])
            cells.append(f"{ms([f(r['value']) for r in rs])} (n={len(rs)})" if rs else "—")
        lines.append(f"| {name} | {PRIVACY_SHORT.get(name, 'record-level pure ε, whole run')} | " + " | ".join(cells) + " |")
    return lines


def goals(groups: dict) -> list[str]:
    lines = ["\n### Goals (reported, not asserted)\n",
             "| scenario | goal | measured | met? |", "|---|---|---|---|"]

    def v(by: dict, name: str) -> float:
        return mean([f(r["value"]) for r in by.get(name, [])])

    for key, by in groups.items():
        if key[0] not in ("main", "fraction", "kind", "dirichlet", "epsilon"):
            continue
        label = scen_label(key)
        frac = f(key[3])
        for ours_name, fedavg_name, oracle_name in PROTOCOL_TRIPLES:
            ours, fedavg, oracle = v(by, ours_name), v(by, fedavg_name), v(by, oracle_name)
            lab = f"{label} — {ours_name}"
            pts = 100.0
            if frac == 0 and math.isfinite(ours) and math.isfinite(fedavg):
                gap = (fedavg - ours) * pts
                lines.append(f"| {lab} | ≤ 0.5 pt loss vs FedAvg ({fedavg_name}), no unreliable | ours {ours:.3f}, FedAvg {fedavg:.3f}: {gap:+.1f} pt below | {'yes' if gap <= 0.5 else f'no, by {gap - 0.5:.1f} pt'} |")
            if frac > 0 and all(math.isfinite(x) for x in (ours, fedavg, oracle)):
                damage = oracle - fedavg
                recovered = (ours - fedavg) / damage if damage > 0 else math.nan
                txt = (f"oracle {oracle:.3f}, FedAvg {fedavg:.3f}, ours {ours:.3f}: damage {damage * pts:.1f} pt, recovered {recovered:.0%}"
                       if damage > 0 else f"no damage (oracle {oracle:.3f} ≤ FedAvg {fedavg:.3f}); ours {ours:.3f}")
                if damage * pts < 1.0:  # below one point the ratio is seed noise (seed sd is 1-2 points)
                    met = "n/a (damage < 1 pt)"
                else:
                    met = "n/a" if not math.isfinite(recovered) else ("yes" if recovered >= 0.9 else f"no, {0.9 - recovered:.0%} short")
                lines.append(f"| {lab} | recover ≥ 90 % of FedAvg's damage (vs {oracle_name}) | {txt} | {met} |")
                robust = {n: v(by, n) for n in ROBUST if math.isfinite(v(by, n))}
                if robust:
                    best_name, best = max(robust.items(), key=lambda kv: kv[1])
                    gap = (best - ours) * pts
                    lines.append(f"| {lab} | never > 0.5 pt below the best Flower robust rule | best {best_name} {best:.3f}, ours {ours:.3f} ({gap:+.1f} pt below) | {'yes' if gap <= 0.5 else f'no, by {gap - 0.5:.1f} pt'} |")
                    if damage * pts > 5:
                        gain = (ours - best) * pts
                        lines.append(f"| {lab} | ≥ 2 pt better than the best robust rule where damage > 5 pt | {gain:+.1f} pt | {'yes' if gain >= 2 else f'no, by {2 - gain:.1f} pt'} |")
            if abs(f(key[5]) - 1.0) < 1e-9 and abs(frac - 0.3) < 1e-9:
                cent = v(by, "centralized")
                if math.isfinite(cent) and math.isfinite(ours):
                    gap = (cent - ours) * pts
                    lines.append(f"| {lab} | privacy cost ≤ 2 pt vs centralized non-private | centralized {cent:.3f}, ours {ours:.3f}: {gap:.1f} pt | {'yes' if gap <= 2 else f'no, by {gap - 2:.1f} pt'} |")
            op = by.get("opacus-dpsgd-fedavg", [])
            if op and math.isfinite(ours) and math.isfinite(v(by, "opacus-dpsgd-fedavg")):
                opv = v(by, "opacus-dpsgd-fedavg")
                lines.append(f"| {lab} | ≥ Opacus accuracy at equal ε (tuned Opacus; different ε meaning) | ours {ours:.3f}, Opacus {opv:.3f} ({(ours - opv) * pts:+.1f} pt) | {'yes' if ours >= opv else f'no, by {(opv - ours) * pts:.1f} pt'} |")
    return lines


def speed_section(rows: list[dict[str, Any]]) -> list[str]:
    """Timings from ``speed.csv`` (run alone): thread CPU time next to wall time; ratios in the same run."""
    if not rows:
        return []
    lines = ["\n### Speed (`--profile speed`; ratios measured in the same run)\n",
             "Hardware: " + "; ".join(sorted({f"{r['hardware']} (device {r['device']})" for r in rows})) +
             ". Client = one participant's ClientApp call per round (mean over participants and rounds; FM's "
             "first round includes its one release); CPU = thread CPU time of the process's single torch thread "
             "(robust to other benchmarks sharing the 2 cores, which inflate the wall time in brackets).\n"]
    for (dataset,), _ in sorted({(r["dataset"],): 1 for r in rows}.items()):
        rs = {r["contender"]: r for r in rows if r["dataset"] == dataset and not r["contender"].endswith("-grid")}
        base_agg = f(rs["fm-fedavg"]["agg_cpu_s_per_round"]) if "fm-fedavg" in rs else math.nan
        op_client = f(rs["opacus-dpsgd-fedavg"]["client_cpu_s_per_round"]) if "opacus-dpsgd-fedavg" in rs else math.nan
        lines += [f"\n#### {dataset} ({next(iter(rs.values()))['partitions']} clients, {next(iter(rs.values()))['rounds']} rounds, "
                  f"30 % unreliable, ε=1)\n",
                  "| contender | client CPU s/round (wall) | Opacus ÷ this (client) | first-round client s | aggregation CPU s/round (wall) | ÷ FedAvg (aggregation) | wall s/round |",
                  "|---|---|---|---|---|---|---|"]
        for name in [c for c in ORDER if c in rs]:
            r = rs[name]
            cc, ac = f(r["client_cpu_s_per_round"]), f(r["agg_cpu_s_per_round"])
            lines.append(f"| {name} | {cc:.4f} ({f(r['client_s_per_round']):.4f}) | {op_client / cc:.1f}× | {f(r['client_s_first_round']):.4f} "
                         f"| {ac:.5f} ({f(r['agg_s_per_round']):.5f}) | {ac / base_agg:.2f}× | {f(r['wall_s_per_round']):.3f} |")
        if "ppcdl-reliability" in rs:
            r = rs["ppcdl-reliability"]
            ratio_c = op_client / f(r["client_cpu_s_per_round"])
            ratio_a = f(r["agg_cpu_s_per_round"]) / base_agg
            lines += ["", "| goal | measured | met? |", "|---|---|---|",
                      f"| ≥ 10× less client compute per round than Opacus | {ratio_c:.1f}× | {'yes' if ratio_c >= 10 else f'no ({ratio_c:.1f}× of 10×)'} |",
                      f"| aggregation ≤ 2× FedAvg | {ratio_a:.2f}× | {'yes' if ratio_a <= 2 else f'no ({ratio_a:.1f}×)'} |"]
    return lines


def plot_main(groups: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in groups if k[0] in ("main", "fraction", "kind", "dirichlet")]
    if not keys:
        return False
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        by = groups[key]
        names = [c for c in ORDER if c in by]
        vals = [[f(r["value"]) for r in by[n]] for n in names]
        ax.bar(range(len(names)), [mean(v) for v in vals],
               yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3,
               color=["tab:red" if n == "ppcdl-reliability" else "tab:gray" if n.startswith("fm-") else "tab:blue" for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
        ax.set_title(scen_label(key), fontsize=8)
        ax.set_ylabel(by[names[0]][0]["metric"])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_epsilon(rows: list[dict[str, Any]], path: Path) -> bool:
    """Metric vs ε (30 % unreliable) per contender, one panel per dataset, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if r["contender"].endswith("-grid") or r["tag"] not in ("main", "epsilon") or abs(f(r["unreliable_fraction"]) - 0.3) > 1e-9:
            continue
        if r["partitioning"] != "iid":
            continue
        pts[r["dataset"]][r["contender"]][f(r["epsilon_target"])].append(f(r["value"]))
    pts = {d: c for d, c in pts.items() if len({e for v in c.values() for e in v}) > 2}
    if not pts:
        return False
    fig, axes = plt.subplots(1, len(pts), figsize=(6 * len(pts), 4), squeeze=False)
    plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.cm.tab20.colors)
    for ax, (dataset, by) in zip(axes[0], sorted(pts.items()), strict=True):
        for name in [c for c in ORDER if c in by]:
            xs = sorted(by[name])
            if len(xs) < 2 and name != "centralized":
                continue
            ys = [mean(by[name][x]) for x in xs]
            es = [np.std(by[name][x], ddof=1) if len(by[name][x]) > 1 else 0 for x in xs]
            style = "-" if name.startswith("ppcdl") else ("--" if name.startswith("fm-") else ":")
            ax.errorbar(xs, ys, yerr=es, marker="o", ls=style, label=name, capsize=2)
        ax.set_xscale("log")
        ax.set_xlabel("ε (meaning differs per contender: see the tables)")
        ax.set_ylabel("test R²" if dataset == "census2000" else "test accuracy")
        if dataset == "census2000":
            ax.set_ylim(-0.1, 0.12)
        ax.set_title(f"{dataset}, 10 IID clients, 30 % unreliable", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_timing(rows: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["contender"].endswith("-grid") or r["contender"] == "centralized" or r["tag"] != "main":
            continue
        for col in ("client_s_per_round", "agg_s_per_round", "wall_s_per_round"):
            by[r["contender"]][col].append(f(r[col]))
    if not by:
        return False
    names = [c for c in ORDER if c in by]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.27
    for i, col in enumerate(("client_s_per_round", "agg_s_per_round", "wall_s_per_round")):
        ax.bar(np.arange(len(names)) + (i - 1) * width, [mean(by[n][col]) for n in names], width, label=col)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
    ax.set_ylabel("seconds (log)")
    ax.set_title(f"timings, 'main' scenarios ({rows[0]['hardware']}, {rows[0]['device']})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def tradeoff_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["\n### Where each mechanism wins: fixed total ε, more rounds / local epochs (Fashion-MNIST, 10 IID clients, no unreliable, 1 seed)\n",
             "FM releases once (later rounds are free); Opacus calibrates its noise to all steps of all rounds "
             "(lr 4, clip 1, batch 256 Poisson, RDP, δ=1e-5).\n",
             "Client s/round is wall time, measured while other benchmarks shared the 2 cores. FM = parameter protocol (local solver "
             "steps every round); FM-stat = summed-statistics protocol.\n",
             "| ε | rounds | local epochs | FM FedAvg acc | FM client s/round | FM-stat FedAvg acc | FM-stat client s/round "
             "| Opacus acc | Opacus σ | Opacus client s/round | Opacus ÷ FM compute | Opacus ÷ FM-stat compute |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fm = {(r["epsilon_target"], r["rounds"]): r for r in rows if r["contender"] == "fm-fedavg"}
    fms = {(r["epsilon_target"], r["rounds"]): r for r in rows if r["contender"] == "fm-statistics-fedavg"}

    def cs(r: dict[str, Any] | None) -> float:
        return f(r["client_s_per_round"]) if r else math.nan  # wall: every row of this table has it
    for r in rows:
        if r["contender"] != "opacus-dpsgd-fedavg":
            continue
        m = fm.get((r["epsilon_target"], r["rounds"]))
        import json

        sigma = json.loads(r["hyper"]).get("noise_multiplier", math.nan) if r["hyper"] else math.nan
        ms_ = fms.get((r["epsilon_target"], r["rounds"]))
        fm_acc = f(m["value"]) if m else math.nan
        fms_acc = f(ms_["value"]) if ms_ else math.nan
        op_s = cs(r)
        lines.append(f"| {f(r['epsilon_target']):g} | {r['rounds']} | {r['local_epochs']} | {fm_acc:.3f} | {cs(m):.4f} | "
                     f"{fms_acc:.3f} | {cs(ms_):.4f} | {f(r['value']):.3f} | {sigma} | {op_s:.4f} | {op_s / cs(m):.1f}× | {op_s / cs(ms_):.1f}× |")
    return lines


def scale_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["\n### Scale: simulated participants in one process (census2000, 3 features, 3 rounds, ε=1, 30 % random targets)\n",
             "One process drives every participant in turn (in-process grid), so a round costs about participants × "
             "client time + aggregation; the 2 cores cannot run clients in parallel here.\n",
             "| participants | contender | R² | wall s/round | client CPU s/round (each) | aggregation CPU s/round | peak RSS MB (growth in this cell) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['partitions']} | {r['contender']} | {f(r['value']):.3f} | {f(r['wall_s_per_round']):.3f} | "
                     f"{f(r.get('client_cpu_s_per_round')):.5f} | {f(r.get('agg_cpu_s_per_round')):.5f} | {f(r['peak_rss_mb']):.0f} ({f(r['peak_rss_growth_mb']):+.0f}) |")
    return lines


def device_table(results: Path) -> list[str]:
    rows = load(results / "device_h100" / "device_cpu.csv") + load(results / "device_h100" / "device_cuda.csv")
    if not rows:
        return []
    lines = ["\n### CPU vs CUDA on the lent GPU machine (`--profile device`, same machine, same call)\n",
             "Hardware: " + "; ".join(sorted({f"{r['hardware']} (device {r['device']})" for r in rows})) + ". "
             "FM clients always compute on the CPU; `--device` moves the SGD / DP-SGD local training. A 16-feature "
             "linear head is far too small for a GPU: launch overhead dominates.\n",
             "| rounds | contender | device | accuracy | client s/round | aggregation s/round | wall s/round |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (int(r["rounds"]), r["contender"], r["device"])):
        lines.append(f"| {r['rounds']} | {r['contender']} | {r['device']} | {f(r['value']):.3f} | {f(r['client_s_per_round']):.4f} "
                     f"| {f(r['agg_s_per_round']):.5f} | {f(r['wall_s_per_round']):.3f} |")
    return lines


def memory_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["\n### Peak memory of one client process (`--profile memory`: one participant of Fashion-MNIST, 3 rounds, own process)\n",
             "Baseline = peak RSS after imports and loading the data (the whole Fashion-MNIST split is read, then "
             "partitioned); growth = what local training and the server's evaluation add on top.\n",
             "| contender | baseline RSS MB | peak RSS MB | growth MB |", "|---|---|---|---|"]
    for r in rows:
        base, peak = f(r.get("baseline_rss_mb")), f(r["peak_rss_mb"])
        lines.append(f"| {r['contender']} | {base:.0f} | {peak:.0f} | {peak - base:+.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    main_rows = load(a.results / "full.csv") or load(a.results / "quick.csv")
    trade, scale = load(a.results / "tradeoff.csv"), load(a.results / "scale.csv")
    hw = sorted({(r["hardware"], r["device"]) for r in main_rows + trade + scale + load(a.results / "memory.csv") + load(a.results / "speed.csv")})
    groups = group(main_rows)
    lines = ["# Benchmark results (generated by benchmarks/make_readme_tables.py — do not edit by hand)\n",
             "Hardware of every timing below: " + "; ".join(f"{h} (device {d})" for h, d in hw) + ".\n",
             "ε means something different per contender (see each row): FM = record-level pure ε per participant for "
             "the whole run; Opacus = record-level (ε, δ=1e-5) over all local steps; Flower DP = CLIENT-level (ε, δ=1e-5) "
             "over rounds. Tuned contenders (sgd, Opacus, Flower DP) show the best grid point, chosen on the test set "
             "(optimistic for them); all grid points are in the CSV.\n",
             "All contenders train a linear head on the same frozen public feature map (Fashion-MNIST: pool4-rp16, "
             "16 features; census: the basic standardised features) over the same partitions, seeds and corruptions.\n"]
    lines += headline(groups)
    lines += ["\n## Accuracy / R², robustness, privacy, speed per scenario"]
    lines += results_table(groups, ("quick", "main", "fraction", "kind", "dirichlet", "epsilon"))
    lines += goals(groups)
    lines += speed_section(load(a.results / "speed.csv"))
    lines += tradeoff_table(trade)
    lines += scale_table(scale)
    lines += memory_table(load(a.results / "memory.csv"))
    lines += device_table(a.results)
    if plot_main(groups, a.results / "accuracy.png"):
        lines.append("\n![accuracy per contender](accuracy.png)\n")
    if plot_epsilon(main_rows, a.results / "epsilon.png"):
        lines.append("![metric vs epsilon](epsilon.png)\n")
    if plot_timing(main_rows, a.results / "timings.png"):
        lines.append("![timings per contender](timings.png)\n")
    out = a.results / "README_TABLES.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
