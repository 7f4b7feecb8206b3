"""Errors that come early and carry the fix, and a result-dir that stays where it belongs (#24, #23.5).

* the ServerApp confines ``result-dir`` (a run config comes from whoever submits the run) to the
  results base: ``../x``, an absolute path elsewhere or a link out of the base are refused before
  anything is created, written or removed, also when the rest of the config is invalid;
* misspelt keys and values get a "did you mean"; the unreliable kind follows the data set;
* ``scripts/run.sh`` (``local_run``) checks everything before it starts a process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from flwr_ppcdl.app import local_run
from flwr_ppcdl.app.checks import check_data_available, result_path
from flwr_ppcdl.app.client_app import app as client_app
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.app.server_app import app as server_app
from flwr_ppcdl.app.settings import RunSettings

ROOT = Path(__file__).resolve().parents[2]


def _serve(run_config: dict[str, object]) -> None:
    """The ServerApp, as Flower's runtimes call it."""
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)  # type: ignore[arg-type]
    server_app(InProcessGrid(client_app, num_nodes=2, run_config=run_config), context)


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    monkeypatch.setenv("PPCDL_RESULTS", str(folder))
    return folder


@pytest.mark.parametrize("valid", [True, False], ids=["valid-config", "invalid-config"])
@pytest.mark.parametrize("where", ["../outside", "absolute", "link", "a/../../outside"])
def test_the_server_app_refuses_a_result_dir_outside_the_base_and_touches_nothing(
    base: Path, tmp_path: Path, where: str, valid: bool
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = outside / "result.json"  # an older file there must survive (#23.5: it was unlinked)
    planted.write_text("someone else's")
    (base / "link").symlink_to(outside, target_is_directory=True)
    value = {"absolute": str(outside), "link": "link"}.get(where, where)
    config: dict[str, object] = {"result-dir": value, "num-partitions": 2, "num-rounds": 1, "plot": False}
    if not valid:
        config["epsilon"] = -1.0
    with pytest.raises(ValueError, match="result-dir") as err:
        _serve(config)
    assert str(base) in str(err.value) and repr(value) in str(err.value)
    assert sorted(p.name for p in outside.iterdir()) == ["result.json"] and planted.read_text() == "someone else's"
    assert sorted(p.name for p in base.iterdir()) == ["link"]  # nothing created in the base either


def test_a_relative_result_dir_lands_under_the_base_with_the_reason_of_a_bad_config(base: Path) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        _serve({"result-dir": "runs/bad", "epsilon": -1.0})
    assert (base / "runs" / "bad" / "error.txt").read_text().startswith("ValueError: ")


def test_the_callers_own_python_may_name_any_folder(tmp_path: Path, base: Path) -> None:
    """The in-process runner and tests are the operator's own code: an absolute path is taken as given."""
    assert result_path(str(tmp_path / "x"), confine=False) == tmp_path / "x"
    assert result_path("latest", confine=False) == base / "latest"
    with pytest.raises(ValueError, match="result-dir"):
        result_path(str(tmp_path / "x"))


@pytest.mark.parametrize(
    ("config", "hint"),
    [
        ({"datset": "digits"}, "did you mean 'dataset'"),
        ({"num_rouns": 3}, "did you mean 'num-rounds'"),
        ({"strategy": "relability"}, "did you mean 'reliability'"),
        ({"dataset": "fashion_mnist"}, "did you mean 'fashion-mnist'"),
        ({"dataset": "digits", "unreliable-kind": "random-targets"}, "add unreliable-kind='flipped-labels'"),
        ({"unreliable-kind": "flipped-labels"}, "add unreliable-kind='random-targets'"),  # census: regression
    ],
)
def test_a_bad_key_or_value_comes_with_the_fix(config: dict[str, object], hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        RunSettings.from_config(config)


def test_the_unreliable_kind_follows_the_data_set_when_not_given() -> None:
    assert RunSettings(dataset="digits").unreliable_kind == "flipped-labels"
    assert RunSettings(dataset="fashion-mnist").unreliable_kind == "flipped-labels"
    assert RunSettings().unreliable_kind == "random-targets"  # census2000, regression


def test_a_missing_fashion_mnist_folder_names_the_key_and_the_fix(tmp_path: Path) -> None:
    settings = RunSettings(dataset="fashion-mnist", dataset_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="dataset-dir") as err:
        check_data_available(settings)
    assert "nowhere" in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--run-config", "datset='digits'"], "did you mean 'dataset'"),
        (["--run-config", "dataset='fashion-mnist' dataset-dir='/nowhere/at/all'"], "dataset-dir"),
        (["--run-config", "num-partitions=500"], "do not fit in this machine's available memory"),
    ],
)
def test_the_runner_checks_everything_before_it_starts_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: str
) -> None:
    monkeypatch.setattr(local_run, "max_supernodes", lambda: 100)  # this "machine" holds 100 SuperNodes
    started: list[object] = []
    monkeypatch.setattr(local_run.LocalSuperLink, "start", lambda self: started.append(self))
    assert local_run.run(ROOT, overrides, workdir=tmp_path) == 2
    assert expected in capsys.readouterr().err and not started


def test_the_supernode_cap_follows_the_available_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flwr_ppcdl.app import checks

    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 1 kB\nMemAvailable: {int((checks.SIMULATION_BASE_MIB + 100 * checks.SUPERNODE_MEMORY_MIB) * 1024)} kB\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(meminfo) if str(self) == "/proc/meminfo" else real(self, *a, **k))
    assert checks.max_supernodes() == 100
