"""What a run needs beyond valid run-config values, checked before anything starts.

* where its results go: ``result-dir`` under the results base, confined there when the run config
  comes from whoever submits a run (:func:`result_path`);
* its data set on this machine (:func:`check_data_available`);
* room for the SuperNodes of a local simulation (:func:`max_supernodes`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.data.images import missing_idx_files

RESULTS_ENV = "PPCDL_RESULTS"
"""Environment variable naming the results base folder (default: ``./results`` of the process that
runs the ServerApp)."""
SUPERNODE_MEMORY_MIB = 0.5
"""Memory one simulated SuperNode of Flower 1.42 adds to a local simulation: 0.12-0.17 MiB measured
(docs/decisions.md, 2026-12-06), with a margin."""
SIMULATION_BASE_MIB = 2700.0
"""Memory of the SuperLink, the simulation process and Ray's two ClientApp actors (measured with 10
SuperNodes: 2,665 MiB)."""


def results_base() -> Path:
    """The folder every ``result-dir`` lies under: ``$PPCDL_RESULTS`` if set, else ``./results``
    of the process that runs the ServerApp (for ``flwr run .``, the folder the local SuperLink was
    started from; ``scripts/run.sh`` sets it to ``results/`` of this checkout)."""
    value = os.environ.get(RESULTS_ENV)
    return Path(value).expanduser().resolve() if value else (Path.cwd() / "results").resolve()


def result_path(result_dir: str, *, base: Path | None = None, confine: bool = True) -> Path:
    """The folder ``result-dir`` names: ``base / result_dir`` (``base``: :func:`results_base`).

    With ``confine`` (the ServerApp: a run config comes from whoever submits the run), the folder
    must lie under ``base`` once links are resolved: a relative path without ``..`` escaping it, or
    an absolute path inside it; anything else raises ``ValueError`` naming the value and the base,
    before anything is created, written or removed. Without ``confine`` (a caller's own Python:
    the in-process runner, tests, benchmarks) an absolute path is taken as given.
    """
    if not isinstance(result_dir, str) or not result_dir.strip():
        raise ValueError(f"run-config key 'result-dir' must be a non-empty string; got {result_dir!r}")
    base = (results_base() if base is None else base).expanduser().resolve()
    given = Path(str(result_dir)).expanduser()
    path = (base / given).resolve()  # an absolute `given` replaces base; links and `..` resolved
    if confine and not path.is_relative_to(base):
        raise ValueError(
            f"run-config key 'result-dir' must name a folder under the results base {base} "
            f"(${RESULTS_ENV}, default ./results of the ServerApp); got {result_dir!r}, which is "
            f"{path}: use a relative path such as result-dir='latest' or 'runs/eps1'"
        )
    return path


def check_data_available(settings: RunSettings) -> None:
    """Raise ``ValueError`` naming the run-config key and the fix when the data set is not on this
    machine (Fashion-MNIST's idx folder); the shipped data sets are always there. Cheap: a check to
    run before anything starts."""
    if settings.dataset != "fashion-mnist":
        return
    folder = Path(settings.dataset_dir).expanduser()
    missing = missing_idx_files(folder)
    if missing:
        where = "does not exist" if not folder.is_dir() else f"lacks {missing}"
        raise ValueError(
            f"run-config key 'dataset-dir' = {settings.dataset_dir!r}: the Fashion-MNIST folder {where}. "
            f"Install Debian's copy (sudo apt-get install dataset-fashion-mnist, or "
            f"PPCDL_SYSTEM_PACKAGES=yes bash scripts/setup.sh) or point to the idx files with "
            f"--run-config \"dataset-dir='/path/to/fashion-mnist'\""
        )


def max_supernodes() -> int:
    """How many simulated SuperNodes this machine's available memory holds (Linux; else no cap)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return sys.maxsize
    match = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    if match is None:
        return sys.maxsize
    available_mib = int(match.group(1)) / 1024
    return max(0, int((available_mib - SIMULATION_BASE_MIB) / SUPERNODE_MEMORY_MIB))
