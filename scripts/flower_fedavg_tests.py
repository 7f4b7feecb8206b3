"""Run Flower's own FedAvg-family unit tests against ReliabilityWeightedFedAvg, from Flower's source.

Nothing of Flower's is copied into this project: the test files are read from a Flower git
checkout (or bare mirror) at run time into a temporary folder, their package-relative imports are
pointed at the installed ``flwr``, and the class under test is swapped by one import alias
(``from <module> import <Class> as FedAvg``). Each file runs once per target:

* ``original``  -- the class the file was written for (sanity check of the extraction);
* ``flower-fedavg`` -- Flower's FedAvg of the same API generation;
* ``ours`` -- flwr_ppcdl's ReliabilityWeightedFedAvg of that generation, with its defaults;
* ``ours-fedavg-weights`` -- the same class with ``method="fedavg", max_share=None`` (FedAvg's
  weights): separates the Flower plumbing from the reliability estimator's choices.

    python scripts/flower_fedavg_tests.py --flower /path/to/flower.git [--rev HEAD]

The strategy_utils tests need ``parameterized`` importable (``pip install --target DIR
parameterized`` and ``--extra-path DIR``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEGACY = "framework/py/flwr/server/strategy"
MESSAGE = "framework/py/flwr/serverapp/strategy"

# (test file, class it tests, the import line of that class, Flower's FedAvg, ours)
SUITES = [
    (f"{LEGACY}/fedavg_test.py", "FedAvg", "flwr.server.strategy.fedavg",
     "flwr.server.strategy:FedAvg", "flwr_ppcdl.strategies.compat:ReliabilityWeightedFedAvg"),
    (f"{LEGACY}/fedavgm_test.py", "FedAvgM", "flwr.server.strategy.fedavgm",
     "flwr.server.strategy:FedAvg", "flwr_ppcdl.strategies.compat:ReliabilityWeightedFedAvg"),
    (f"{LEGACY}/fault_tolerant_fedavg_test.py", "FaultTolerantFedAvg", "flwr.server.strategy.fault_tolerant_fedavg",
     "flwr.server.strategy:FedAvg", "flwr_ppcdl.strategies.compat:ReliabilityWeightedFedAvg"),
    (f"{MESSAGE}/fedavgm_test.py", "FedAvgM", "flwr.serverapp.strategy.fedavgm",
     "flwr.serverapp.strategy:FedAvg", "flwr_ppcdl.strategies:ReliabilityWeightedFedAvg"),
]
HELPERS = [f"{MESSAGE}/strategy_utils_test.py"]  # imported by the Message-API tests (create_mock_reply)


def _read(flower: Path, rev: str, path: str) -> str:
    git_dir = flower if (flower / "HEAD").exists() and not (flower / ".git").exists() else flower / ".git"
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _absolute(source: str, package: str) -> str:
    """Point package-relative imports at the installed flwr; fix imports moved since that Flower."""
    parent = package.rsplit(".", 1)[0]
    source = re.sub(r"^from \.\.(\w+) import", rf"from {parent}.\1 import", source, flags=re.M)
    source = re.sub(r"^from \.strategy_utils_test import", "from strategy_utils_test import", source, flags=re.M)
    source = re.sub(r"^from \.(\w+) import", rf"from {package}.\1 import", source, flags=re.M)
    return source.replace("from flwr.common.parameter import", "from flwr.common import")


def _swap(source: str, cls: str, module: str, target: str, kwargs: str = "") -> str:
    """Replace ``from <module> import <cls>`` by ``from <target module> import <target class> as <cls>``
    (with ``kwargs``: a ``functools.partial`` of it under that name)."""
    target_module, target_cls = target.split(":")
    pattern = rf"^from {re.escape(module)} import {cls}$"
    if not re.search(pattern, source, flags=re.M):
        raise SystemExit(f"no line `from {module} import {cls}` to swap")
    line = f"from {target_module} import {target_cls} as {cls}"
    if kwargs:
        line = f"import functools\nfrom {target_module} import {target_cls} as _Target\n{cls} = functools.partial(_Target, {kwargs})"
    return re.sub(pattern, line, source, flags=re.M)


def _run_pytest(folder: Path, test_file: Path, extra_path: list[str]) -> dict[str, str]:
    report = folder / f"{test_file.stem}.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *extra_path, env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder),
         "-c", str(folder / "pytest.ini"), f"--junitxml={report}", str(test_file)],
        env=env, capture_output=True, text=True, check=False,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed: " + (child.get("message") or "")[:110].replace("\n", " ")
            elif child.tag == "skipped":
                outcome = "skipped"
        outcomes[case.get("name", "?")] = outcome
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flower", type=Path, required=True, help="Flower git checkout or bare mirror")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--extra-path", action="append", default=[], help="added to PYTHONPATH (e.g. parameterized)")
    parser.add_argument("--project", type=Path, default=ROOT, help="the flwr_ppcdl checkout to test")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="flower-fedavg-tests-"))
    totals: dict[str, list[int]] = {}
    for helper in HELPERS:
        (work / "helpers").mkdir(exist_ok=True)
        (work / "helpers" / Path(helper).name).write_text(
            _absolute(_read(args.flower, args.rev, helper), "flwr.serverapp.strategy"))
    for path, cls, module, flower_fedavg, ours in SUITES:
        package = "flwr.server.strategy" if path.startswith(LEGACY) else "flwr.serverapp.strategy"
        source = _absolute(_read(args.flower, args.rev, path), package)
        results: dict[str, dict[str, str]] = {}
        targets = (("original", None, ""), ("flower-fedavg", flower_fedavg, ""), ("ours", ours, ""),
                   ("ours-fedavg-weights", ours, "method='fedavg', max_share=None"))
        for target_name, target, kwargs in targets:
            generation = "legacy" if path.startswith(LEGACY) else "message"
            folder = work / f"{generation}-{Path(path).stem}-{target_name}"
            folder.mkdir()
            (folder / "pytest.ini").write_text("[pytest]\n")
            test_file = folder / f"test_{Path(path).stem}.py"
            test_file.write_text(source if target is None else _swap(source, cls, module, target, kwargs))
            paths = [str(args.project.resolve()), str(work / "helpers"), *args.extra_path]
            results[target_name] = _run_pytest(folder, test_file, paths)
        print(f"\n== {path} (class under test: {cls})")
        for name in results["original"]:
            row = {t: results[t].get(name, "missing") for t in results}
            print(f"  {name:55s} original={row['original'][:6]:6s} flower-fedavg={row['flower-fedavg'][:6]:6s} "
                  f"ours-fedavg-weights={row['ours-fedavg-weights'][:6]:6s} ours={row['ours']}")
            for t, outcome in row.items():
                totals.setdefault(t, [0, 0])[0 if outcome == "passed" else 1] += 1
        both = [n for n in results["original"] if results["flower-fedavg"][n] == "passed"]
        ours_ok = [n for n in both if results["ours"][n] == "passed"]
        plumbing = [n for n in both if results["ours-fedavg-weights"][n] == "passed"]
        print(f"  -> where Flower's FedAvg passes ({len(both)}): ours (defaults) passes {len(ours_ok)}, "
              f"ours with FedAvg's weights passes {len(plumbing)}")
    print("\ntotals (passed, not passed): " + ", ".join(f"{t}={v[0]}/{v[0] + v[1]}" for t, v in totals.items()))
    print(f"(extracted tests in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
