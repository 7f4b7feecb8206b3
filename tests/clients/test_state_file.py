"""The participant's state file cannot under-report epsilon (issue #23, item 4), on real files.

The reproductions of the issue: the ledger set to null next to the release, the release and ledger
removed, corrupt JSON, a symbolic link planted at the temporary path, a group-readable directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, RecordDict

import flwr_ppcdl.app.client_app as client_app
from flwr_ppcdl import wire
from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.clients import StateError, StateFile, StateFileError, TrainerState, load_state
from flwr_ppcdl.clients.state_file import STATE_FORMAT, _mac
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLedger

from .test_policy import BASE, _as_supernode


def _spent_state(charges: int = 1) -> TrainerState:
    """A participant's state after ``charges`` releases (each charged to its ledger)."""
    ledger = PrivacyLedger(max_epsilon=10.0)
    rng = np.random.default_rng(0)
    release = None
    for _ in range(charges):
        fm = FunctionalMechanism(task="regression", epsilon=1.0, ledger=ledger)
        release = fm.release(rng.normal(size=(40, 3)), rng.uniform(-1, 1, size=40))
    assert release is not None
    return TrainerState(release=release.to_dict(), ledger=ledger.to_dict(), records_read=charges)


@pytest.fixture
def store(tmp_path: Path) -> StateFile:
    return StateFile(tmp_path / "node" / "state.json")


def _edit(store: StateFile, change: Any, *, with_key: bool) -> None:
    """Edit the state inside the file; ``with_key``: recompute the MAC (someone who can read the key)."""
    envelope = json.loads(store.path.read_text())
    state = json.loads(envelope["state"])
    change(state)
    envelope["state"] = json.dumps(state)
    if with_key:
        envelope["mac"] = _mac(bytes.fromhex(store.key_path.read_text().strip()), envelope["state"])
    store.path.write_text(json.dumps(envelope))


def test_a_saved_state_is_read_back_private_and_keyed(store: StateFile) -> None:
    state = _spent_state()
    store.save(state)
    assert store.load() == state
    assert json.loads(store.path.read_text())["format"] == STATE_FORMAT
    assert store.path.parent.stat().st_mode & 0o777 == 0o700
    for path in (store.path, store.key_path):
        assert path.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(store.key_path.read_text().strip())) == 32
    assert StateFile(store.path.parent / "other.json").load() is None  # a node that never saved


@pytest.mark.parametrize("with_key", [False, True])
def test_a_ledger_set_to_null_is_refused_not_read_as_zero(store: StateFile, with_key: bool) -> None:
    store.save(_spent_state())
    _edit(store, lambda s: s.update(ledger=None), with_key=with_key)
    why = "release but its ledger has no entry" if with_key else "integrity check failed"
    with pytest.raises(StateFileError, match=why):
        store.load()


def test_release_and_ledger_removed_are_refused(store: StateFile) -> None:
    store.save(_spent_state())
    _edit(store, lambda s: s.update(release=None, ledger=None), with_key=True)  # records_read stays 1
    with pytest.raises(StateFileError, match="read 1 time.*ledger has 0 entries"):
        store.load()
    store.path.unlink()  # the whole file removed: the key says this node has released before
    with pytest.raises(StateFileError, match="a state key exists but the state file is missing"):
        store.load()


def test_the_ledger_only_grows(store: StateFile) -> None:
    store.save(_spent_state(1))
    store.save(_spent_state(2))  # a second charge extends the ledger: saved
    before = store.path.read_bytes()
    with pytest.raises(StateFileError, match="ledger only grows"):
        store.save(_spent_state(1))
    assert store.path.read_bytes() == before
    with pytest.raises(StateError, match="release but its ledger has no entry"):
        TrainerState(release={"epsilon": 1.0}, ledger=None, records_read=1).check()
    with pytest.raises(StateError, match="less than its release"):
        TrainerState(release={"epsilon": 1.0}, ledger={"entries": [{"epsilon": 0.5}]}, records_read=1).check()


def test_corrupt_json_is_refused_with_a_sanitised_error(store: StateFile, caplog: pytest.LogCaptureFixture) -> None:
    store.save(_spent_state())
    store.path.write_text('{"format": "flwr_ppcdl.state/2", "state": "{not json SECRET-CONTENT')
    with caplog.at_level(logging.ERROR, logger="flwr"), pytest.raises(StateFileError) as refused:
        store.load()
    text = str(refused.value)
    assert "corrupt or was tampered with" in text
    assert "JSONDecodeError" not in text and "SECRET" not in text and str(store.path) not in text
    assert "JSONDecodeError" in caplog.text and str(store.path) in caplog.text  # the details stay local


def test_an_older_unkeyed_state_file_is_refused(store: StateFile) -> None:
    store.path.parent.mkdir(mode=0o700)
    store.path.write_text(_spent_state().to_json())
    store.path.chmod(0o600)
    with pytest.raises(StateFileError, match="no key"):
        store.load()


def test_links_planted_at_the_temporary_and_state_paths_are_not_followed(store: StateFile, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o644)
    store.path.parent.mkdir(mode=0o700)
    for name in ("state.json.tmp", "state.tmp", ".state.json.tmp"):  # predictable names of the former code
        (store.path.parent / name).symlink_to(victim)
    state = _spent_state()
    store.save(state)
    store.save(state)
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o644
    assert store.load() == state
    store.path.unlink()
    store.path.symlink_to(victim)  # the state path itself
    with pytest.raises(StateFileError, match="cannot be opened safely"):
        store.load()
    with pytest.raises(StateFileError):
        store.save(state)
    assert victim.read_text() == "precious"


def test_a_directory_others_may_read_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    with pytest.raises(StateFileError, match="not private"):
        StateFile(folder / "state.json").save(_spent_state())
    assert not (folder / "state.json").exists() and not (folder / "state.json.key").exists()


def test_a_key_elsewhere_from_the_node_config(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    store = StateFile.from_node_config({wire.NODE_STATE_PATH: str(tmp_path / "s" / "state.json"),
                                        wire.NODE_STATE_KEY: str(keys / "node.key")})
    assert store is not None
    store.save(_spent_state())
    assert (keys / "node.key").exists() and not (tmp_path / "s" / "state.json.key").exists()
    assert StateFile.from_node_config({wire.NODE_PARTITION_ID: 0}) is None


# -- through the App, as a SuperNode runs it ------------------------------------------------------------


def _train(context_state: RecordDict, tmp_path: Path) -> tuple[Message, Any]:
    """One train message to partition 0's ClientApp (run from a SuperNode frame) with ``context_state``."""
    from flwr.app import Context

    from flwr_ppcdl.app.experiment import make_model
    from flwr_ppcdl.app.settings import RunSettings

    run_config = {**BASE, "result-dir": str(tmp_path / "r")}
    node_config = {wire.NODE_PARTITION_ID: 0, wire.NODE_NUM_PARTITIONS: 2,
                   wire.NODE_STATE_PATH: str(tmp_path / "node" / "state.json")}
    context = Context(run_id=1, node_id=7, node_config=node_config, state=context_state, run_config=run_config)
    InProcessGrid(lambda m, c: m, node_ids=[7])  # Flower's task identity for the message
    request = Message(RecordDict({"arrays": ArrayRecord(make_model(RunSettings.from_config(run_config)).state_dict())}), 7, "train")
    return _as_supernode(client_app.app)(request, context), context


def test_a_restarted_node_whose_state_file_was_removed_does_not_release_again(tmp_path: Path) -> None:
    reply, context = _train(RecordDict(), tmp_path)
    assert not reply.has_error() and load_state(context).records_read == 1
    (tmp_path / "node" / "state.json").unlink()
    again, fresh = _train(RecordDict(), tmp_path)  # a restarted SuperNode: empty Context.state
    assert again.has_error() and "StateFileError" in again.error.reason
    assert "a state key exists but the state file is missing" in again.error.reason
    assert load_state(fresh).records_read == 0 and load_state(fresh).release is None  # nothing read again


def test_a_corrupt_state_file_becomes_a_sanitised_error_reply(tmp_path: Path) -> None:
    reply, _ = _train(RecordDict(), tmp_path)
    assert not reply.has_error()
    path = tmp_path / "node" / "state.json"
    path.write_text("{{{ not json")
    os.chmod(path, 0o600)
    again, fresh = _train(RecordDict(), tmp_path)
    assert again.has_error() and "integrity check failed" in again.error.reason
    assert "JSONDecodeError" not in again.error.reason and str(path) not in again.error.reason
    assert load_state(fresh).records_read == 0
