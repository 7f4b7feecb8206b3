"""Packaging (#24): Flower's runtime dependency install of this App succeeds offline and installs
nothing; ``requires-python`` admits no Python a dependency refuses; outside a checkout the Flower App
is generated from the installed package; the wheel installs into a new environment and its
``ppcdl-run`` command runs the default job from another folder (slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from flwr_ppcdl.app.local_run import app_folder
from flwr_ppcdl.app.settings import app_run_config

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_uv_leaves_every_dependency_to_the_running_environment() -> None:
    excluded = {_canonical(n) for n in PYPROJECT["tool"]["uv"]["exclude-dependencies"]}
    assert {_canonical(r.name) for r in _requirements()} <= excluded


def test_flowers_runtime_dependency_install_succeeds_offline_and_installs_nothing(tmp_path: Path) -> None:
    """What Flower 1.42 runs before a `flwr run .` (uv sync of the App's pyproject.toml), offline."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    code = (
        "import sys; from flwr.supercore.superexec.dependency_installer import install_app_dependencies as f; "
        "env = f(sys.argv[1]); print('ENV', env); print('PATH0', sys.path[0])"
    )
    env = dict(os.environ, UV_OFFLINE="1", UV_CACHE_DIR=str(tmp_path / "uv-cache"), FLWR_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-c", code, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    site = Path(next(line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("PATH0")))
    assert site.name == "site-packages" and str(tmp_path / "home") in str(site)
    installed = [p.name for p in site.iterdir() if not p.name.startswith("_virtualenv")]
    assert installed == [], installed


def test_requires_python_admits_no_python_a_dependency_refuses() -> None:
    ours = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for requirement in _requirements():
        try:
            theirs = metadata.metadata(requirement.name).get("Requires-Python")
        except metadata.PackageNotFoundError:
            continue
        for minor in range(8, 16):
            version = f"3.{minor}"
            if theirs and version in ours:
                assert version in SpecifierSet(theirs), f"{requirement.name} requires Python {theirs}; we admit {version}"
    assert "3.10" not in ours  # mlxtend 0.25 and ray 2.55 (flwr[simulation]) need 3.11


def test_outside_a_checkout_the_flower_app_is_generated_from_the_package(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate

    folder = app_folder(tmp_path / "not-a-checkout", tmp_path / "work")
    config, warnings = load_and_validate(folder / "pyproject.toml")
    assert config is not None and not warnings
    assert config["tool"]["flwr"]["app"]["config"] == app_run_config()
    assert config["tool"]["flwr"]["app"]["components"]["serverapp"] == "flwr_ppcdl.app.server_app:app"
    assert config["project"]["dependencies"] == []  # everything is installed: nothing for Flower to install
    assert build_fab_from_disk(folder)
    assert app_folder(ROOT, tmp_path / "work2") == ROOT  # a checkout is its own App


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PPCDL_RESULTS")}


def _venv_with_the_wheel(tmp_path: Path) -> Path:
    """A new environment holding the wheel, with this environment's dependencies (torch, flwr, ...)
    visible through a path file (offline: no download), and Flower's commands as pip would write them."""
    env = _clean_env()  # no PYTHONPATH: a checkout on it would look installed to pip already
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                   check=True, timeout=300, cwd=tmp_path, env=env)
    wheel = next(dist.glob("flwr_ppcdl-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300, env=env)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, env=env).stdout.strip())
    ours = Path(metadata.distribution("flwr").locate_file(""))  # this environment's site-packages
    (site / "dependencies.pth").write_text(f"{ours}\n")  # a plain path: the editable checkout's finder stays out
    for entry in metadata.distribution("flwr").entry_points.select(group="console_scripts"):
        module, func = entry.value.split(":")
        script = venv / "bin" / entry.name
        script.write_text(f"#!{python}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        script.chmod(0o755)
    return venv


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_default_job_from_another_folder(tmp_path: Path) -> None:
    venv = _venv_with_the_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    done = subprocess.run([str(venv / "bin" / "ppcdl-run")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    result = json.loads((elsewhere / "results" / "latest" / "result.json").read_text())
    assert Path(result["versions"]["flwr-ppcdl_from"]).is_relative_to(venv)  # the wheel's code ran, not the checkout's
    assert result["settings"]["num_partitions"] == 10 and len(result["rounds"]) == 30  # the default job
    assert result["final_metrics"]["r2"] > 0.0 and "r2" in result["reference"]
    assert len(output.splitlines()) <= 60, output  # without --verbose
