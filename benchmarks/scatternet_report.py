"""Tables of ``benchmarks/results/scatternet.csv`` (``benchmarks/scatternet.py``) as markdown.

``python benchmarks/scatternet.py --report`` prints them; ``--write-doc`` fills them into
``docs/results-scatternet.md`` between its ``<!-- table:NAME -->`` markers. Every cell is mean ± sd of
the test accuracy over the report seeds (0, 1, 2), or the held-out seeds (3, 4, 5) where named.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.gaussian_fm_report import _fmt

RELATION = {"replace-one": "replace-one", "add-remove-one": "add/remove-one", "none": "none (non-private)"}
RULE = {"reliability": "reliability", "fedavg": "FedAvg", "fedmedian": "FedMedian", "fedtrimmedavg": "FedTrimmedAvg (β 0.2)",
        "multikrum": "MultiKrum (told #bad)", "": ""}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return [r for r in csv.DictReader(fh) if not r.get("error")]


def _label(r: dict[str, str]) -> str:
    if r["contender"] == "opacus-dpsgd":
        return "Opacus DP-SGD"
    if r["contender"] == "centralized-logistic":
        return "centralised logistic regression, reliable records"
    if r["contender"].startswith("fm-noiseless"):
        return "FM at ε = ∞ (exact LDA on the summed statistics)"
    return "FM"


def _groups(rows: list[dict[str, str]], section: str, k: int | None = None, fraction: float | None = None):
    groups: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        if r["section"] != section or r["split"] != "test":
            continue
        if k is not None and int(r["partitions"]) != k:
            continue
        if fraction is not None and not math.isclose(float(r["unreliable_fraction"]), fraction):
            continue
        groups[(_label(r), r["rule"], r["protocol"], r["neighbouring"], r["features"])].append(r)
    return groups


def _cpu(rs: list[dict[str, str]]) -> float:
    values = [float(r["client_cpu_s_whole_run"]) for r in rs if r.get("client_cpu_s_whole_run")]
    return float(np.mean(values)) if values else math.nan


def _table(rows: list[dict[str, str]], section: str, k: int, fraction: float, *, cpu: bool = True) -> str:
    groups = _groups(rows, section, k, fraction)
    lines = ["| contender | aggregation | protocol | neighbours (ε's meaning) | features | test accuracy | seeds | ε spent (max) |"
             + (" client CPU s per participant, whole run |" if cpu else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if cpu else "")]
    ordered = sorted(groups.items(), key=lambda kv: -np.mean([float(r["value"]) for r in kv[1]]))
    for (label, rule, protocol, relation, feats), rs in ordered:
        values = [float(r["value"]) for r in rs]
        eps = max((float(r["epsilon_spent"]) for r in rs if r.get("epsilon_spent")), default=math.nan)
        seeds = ",".join(sorted({r["seed"] for r in rs}))
        line = (f"| {label} | {RULE.get(rule, rule)} | {protocol or '-'} | {RELATION.get(relation, relation)} | {feats} | "
                f"{_fmt(values)} | {seeds} | {'-' if math.isnan(eps) else f'{eps:.3g}'} |")
        if cpu:
            c = _cpu(rs)
            line += f" {'-' if math.isnan(c) else f'{c:.2f}'} |"
        lines.append(line)
    return "\n".join(lines)


def _mean(rows: list[dict[str, str]], **match: object) -> tuple[float, int]:
    values = [float(r["value"]) for r in rows
              if r["split"] == "test" and all(str(r[k]) == str(v) for k, v in match.items())]
    return (float(np.mean(values)) if values else math.nan, len(values))


def _kscale(rows: list[dict[str, str]]) -> str:
    cols = [("FM, reliability, statistics, replace-one", dict(contender="fm", rule="reliability", protocol="statistics", neighbouring="replace-one")),
            ("FM, FedAvg, statistics, replace-one", dict(contender="fm", rule="fedavg", protocol="statistics", neighbouring="replace-one")),
            ("FM, reliability, parameters, replace-one", dict(contender="fm", rule="reliability", protocol="parameters", neighbouring="replace-one")),
            ("FM, FedAvg, statistics, add/remove-one", dict(contender="fm", rule="fedavg", protocol="statistics", neighbouring="add-remove-one")),
            ("DP-SGD, FedAvg, add/remove-one", dict(contender="opacus-dpsgd", rule="fedavg", features="scatternet-128"))]
    lines = ["| K (records each) | " + " | ".join(c for c, _ in cols) + " | like-for-like (add/remove-one) lead |",
             "|---|" + "---|" * (len(cols) + 1)]
    for k in (10, 30, 100):
        cells, means = [], {}
        for name, match in cols:
            section = "main" if k == 10 else "kscale"
            vals = [float(r["value"]) for r in rows if r["section"] == section and r["split"] == "test"
                    and int(r["partitions"]) == k and float(r["unreliable_fraction"]) == 0.0
                    and all(r[a] == b for a, b in match.items())]
            means[name] = float(np.mean(vals)) if vals else math.nan
            cells.append(_fmt(vals))
        fm, sgd = means["FM, FedAvg, statistics, add/remove-one"], means["DP-SGD, FedAvg, add/remove-one"]
        lead = "-" if math.isnan(fm) or math.isnan(sgd) else (f"FM by {100 * (fm - sgd):.1f} pts" if fm > sgd else f"DP-SGD by {100 * (sgd - fm):.1f} pts")
        lines.append(f"| {k} ({60_000 // k:,}) | " + " | ".join(cells) + f" | {lead} |")
    return "\n".join(lines)


def _tuning(rows: list[dict[str, str]]) -> str:
    points = [(r["features"], int(r["partitions"]), json.loads(r["hyper"]), float(r["value"])) for r in rows
              if r["split"] == "validation"]
    best = {}
    for feats, k, _, value in points:
        best[(feats, k)] = max(best.get((feats, k), -1.0), value)
    lines = ["| features | K | lr | clip | validation accuracy (seed 100; chosen in bold) |", "|---|---|---|---|---|"]
    for feats, k, hp, value in sorted(points, key=lambda p: (p[0], p[1], p[2]["lr"], p[2]["clip"])):
        cell = f"**{value:.3f}**" if value == best[(feats, k)] else f"{value:.3f}"
        lines.append(f"| {feats} | {k} | {hp['lr']:g} | {hp['clip']:g} | {cell} |")
    return "\n".join(lines)


def _default(rows: list[dict[str, str]]) -> str:
    """The App's defaults with each body: seeds 0-2 chose the body, seeds 3-5 are held out."""
    lines = ["| App defaults, body | unreliable (flipped labels) | seeds (role) | test accuracy per seed | mean ± sd |",
             "|---|---|---|---|---|"]
    for section, role in (("default", "0, 1, 2 (chose the body)"), ("heldout", "3, 4, 5 (held out)")):
        for fraction in (0.0, 0.3):
            for body, name in (("pool4", "fm-pool4"), ("scatternet", "fm")):
                rs = sorted((r for r in rows if r["section"] == section and r["contender"] == name
                             and math.isclose(float(r["unreliable_fraction"]), fraction)), key=lambda r: int(r["seed"]))
                if not rs:
                    continue
                vals = [float(r["value"]) for r in rs]
                lines.append(f"| {body} | {fraction:.0%} | {role} | {', '.join(f'{v:.4f}' for v in vals)} | {_fmt(vals)} |")
    return "\n".join(lines)


def _compute(rows: list[dict[str, str]]) -> str:
    """Client CPU seconds per participant (10 x 6,000, one torch thread), and each against FM's release."""
    def cpu(**match: str) -> float:
        values = [float(r["client_cpu_s_whole_run"]) for r in rows if r.get("client_cpu_s_whole_run")
                  and all(r[k] == v for k, v in match.items())]
        return float(np.mean(values)) if values else math.nan

    release = cpu(section="cost", contender="fm-release")
    items = [
        ("ScatterNet body on 6,000 images (no cache; every contender pays it once)", cpu(section="cost", contender="scatternet-body")),
        ("FM: the release (Gram + moments + hardened Gaussian noise), once per run", release),
        ("FM: the App's client, whole run (30 rounds of messages, loading, solves; statistics, reliability)",
         cpu(section="main", contender="fm", rule="reliability", protocol="statistics", neighbouring="replace-one")),
        ("Opacus DP-SGD, 128 features, 20 rounds x 1 epoch", cpu(section="main", contender="opacus-dpsgd", features="scatternet-128")),
        ("Opacus DP-SGD, 3,969 features, 20 rounds x 1 epoch", cpu(section="main", contender="opacus-dpsgd", features="scatternet-gn-3969")),
    ]
    lines = ["| work per participant | CPU s | × FM's release |", "|---|---|---|"]
    for name, value in items:
        shown = "-" if math.isnan(value) else f"{value:.2f}"
        ratio = "-" if math.isnan(value) or math.isnan(release) else f"{value / release:.1f}"
        lines.append(f"| {name} | {shown} | {ratio} |")
    return "\n".join(lines)


def tables(path: Path) -> dict[str, str]:
    """Every table of ``docs/results-scatternet.md``, by the name of its block there."""
    from benchmarks.regression_cps import OUT as CPS_OUT
    from benchmarks.regression_cps import table as cps_table

    rows = _rows(path)
    return {
        "main": _table(rows, "main", 10, 0.0),
        "compute": _compute(rows),
        "kscale": _kscale(rows),
        "unreliable": _table(rows, "unreliable", 10, 0.3),
        "default": _default(rows),
        "tuning": _tuning(rows),
        "cps": cps_table(CPS_OUT) if CPS_OUT.exists() else "-",
    }


def write_report(path: Path) -> str:
    """The tables, each under its block name (what ``--report`` prints)."""
    return "\n\n".join(f"### {name}\n\n{text}" for name, text in tables(path).items())


def fill_doc(doc: Path, path: Path) -> None:
    """Replace every ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->`` block of ``doc`` with the
    table NAME from the CSV (re-runnable: the markers stay). An unknown or unclosed block is an error."""
    text, t = doc.read_text(), tables(path)
    for name in re.findall(r"<!-- table:(\w+) -->", text):
        if name not in t:
            raise ValueError(f"{doc}: no table named {name!r} (known: {sorted(t)})")
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{doc}: the block {name!r} has no closing '<!-- /table:{name} -->'")
        text = pattern.sub(lambda m, n=name: f"{m.group(1)}{t[n]}\n{m.group(2)}", text)
    doc.write_text(text)
