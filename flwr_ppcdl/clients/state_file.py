"""The participant's state file (``state-path``): its release and privacy ledger, kept so that ε
reported is never less than ε spent.

A SuperNode keeps the release and ledger in ``Context.state`` (its memory); with ``state-path`` in
its node config they also go to this file after every round, and a restarted SuperNode reloads them
instead of releasing (and spending) again. :class:`StateFile` makes that file hard to under-report:

* **integrity** -- the file holds the state (JSON text) and an HMAC-SHA256 of it under a key that
  never leaves the node: ``state-key`` in the node config, else ``<state-path>.key``, created on
  first use (32 bytes from the OS CSPRNG, mode 0600, never overwritten). An edited file (e.g.
  ``"ledger": null``) or a file without its key is refused. What it does not protect against:
  whoever can read the key can forge a file, and whoever can delete both the file and the key
  starts the node afresh (keep the key out of reach of what may edit the state, e.g. ``state-key``
  on another mount);
* **the ledger only grows** -- a state holding a release but no ledger entry, or fewer ledger
  entries than record reads, is refused (:meth:`TrainerState.check`); a save whose ledger does not
  extend the file's is refused, and so is a key without its state file (this node released before;
  the file was lost or removed);
* **no link is followed** -- the file and the key are opened with ``O_NOFOLLOW``; a save writes a
  private ``mkstemp`` file (``O_EXCL``, random name, 0600) in the same directory, fsyncs it and
  ``os.replace``-s it over the state (atomic: a node killed mid-write keeps the previous file);
* **a private directory** -- created 0700; an existing directory that another user may read or
  write (mode & 077, or another owner) is refused.

Every refusal is a :class:`StateFileError` whose message names no path or file content (it may
cross the wire as an error reply); the details go to the participant's own log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr_ppcdl import wire
from flwr_ppcdl.clients.errors import PublicError
from flwr_ppcdl.clients.state import StateError, TrainerState, ledger_entries

log = logging.getLogger("flwr.ppcdl.participant")  # the participant's own log (clients/errors.py)

STATE_FORMAT = "flwr_ppcdl.state/2"
"""``{"format", "state": <TrainerState JSON text>, "mac": <hex HMAC-SHA256 of format and state>}``."""
KEY_BYTES = 32


class StateFileError(PublicError):
    """The state file cannot be trusted or written: the participant refuses to go on."""


class StateFile:
    """The integrity-checked, grow-only file behind ``state-path`` (module docstring).

    Parameters
    ----------
    path
        The state file.
    key_path
        The key of its HMAC (default ``<path>.key``, next to it).
    """

    def __init__(self, path: str | os.PathLike[str], key_path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.key_path = Path(key_path).expanduser().absolute() if key_path else self.path.with_name(self.path.name + ".key")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> StateFile | None:
        """The node config's ``state-path`` (and ``state-key``), or ``None`` without one."""
        path = node_config.get(wire.NODE_STATE_PATH)
        if not path:
            return None
        key = node_config.get(wire.NODE_STATE_KEY)
        return cls(str(path), str(key) if key else None)

    # -- reading --------------------------------------------------------------------------------------

    def load(self) -> TrainerState | None:
        """The verified state, or ``None`` for a node that never saved one (neither file nor key).

        Raises :class:`StateFileError` for a key without its state file, a state without its key, a
        link, a file of another owner or mode, corrupt JSON, a wrong MAC or an inconsistent state.
        """
        self._check_directory(create=False)
        state_text = _read_private(self.path, "state file")
        if state_text is None:
            if self.key_path.exists() or self.key_path.is_symlink():
                raise self._refuse(
                    "a state key exists but the state file is missing: this node has released before and "
                    "its ledger is gone (restore the file; only to start this participant afresh, remove "
                    "the key too)", f"key {self.key_path} without {self.path}")
            return None
        key = self._read_key()
        if key is None:
            raise self._refuse("the state file has no key to verify it with", f"{self.key_path} missing")
        try:
            envelope = json.loads(state_text)
            if not isinstance(envelope, dict) or envelope.get("format") != STATE_FORMAT:
                found = envelope.get("format") if isinstance(envelope, dict) else type(envelope).__name__
                raise ValueError(f"format {found!r}, expected {STATE_FORMAT!r}")
            text = envelope["state"]
            if not isinstance(text, str) or not hmac.compare_digest(str(envelope.get("mac")), _mac(key, text)):
                raise ValueError("the HMAC does not match (the file was edited or written with another key)")
            state = TrainerState.from_json(text)
            state.check()
        except StateError as err:
            raise self._refuse(f"the state file is inconsistent ({err})", str(err)) from None
        except Exception as err:  # noqa: BLE001 - JSONDecodeError, KeyError, TypeError, ...
            raise self._refuse("the state file is corrupt or was tampered with (integrity check failed)",
                               f"{type(err).__name__}: {err}") from None
        return state

    # -- writing --------------------------------------------------------------------------------------

    def save(self, state: TrainerState) -> None:
        """Write ``state`` atomically, if its ledger extends the one already in the file.

        Raises :class:`StateFileError` (nothing written) for an inconsistent state, a ledger that does
        not grow from the file's, or any problem :meth:`load` refuses.
        """
        try:
            state.check()
        except StateError as err:
            raise self._refuse(f"refusing to save an inconsistent state ({err})", str(err)) from None
        self._check_directory(create=True)
        previous = self.load()
        if previous is not None:
            old, new = ledger_entries(previous), ledger_entries(state)
            if new[: len(old)] != old or state.records_read < previous.records_read:
                raise self._refuse(
                    "the state to save does not extend the ledger already in the state file (the ledger only grows)",
                    f"{len(old)} entries / {previous.records_read} reads on file, {len(new)} / {state.records_read} to save")
        key = self._read_key() or self._create_key()
        text = state.to_json()
        body = json.dumps({"format": STATE_FORMAT, "state": text, "mac": _mac(key, text)}).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)  # O_EXCL, 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)  # renames the link itself, never writes through one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)

    # -- helpers --------------------------------------------------------------------------------------

    def _check_directory(self, *, create: bool) -> None:
        folder = self.path.parent
        if create and not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # only the folder created here; umask could not add bits anyway
        if not folder.exists():
            return
        info = os.stat(folder)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise self._refuse(
                "the state directory is not private to this participant (it must be owned by it, mode 0700)",
                f"{folder} has owner {info.st_uid} and mode {stat.S_IMODE(info.st_mode):o}; chmod 700 it")

    def _read_key(self) -> bytes | None:
        text = _read_private(self.key_path, "state key")
        if text is None:
            return None
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise self._refuse("the state key is malformed", f"{self.key_path} does not hold {KEY_BYTES} hex bytes")
        return key

    def _create_key(self) -> bytes:
        key = secrets.token_bytes(KEY_BYTES)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(self.key_path, flags, 0o600)
        except OSError as err:
            raise self._refuse("the state key cannot be created", f"{self.key_path}: {err}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.info("[ppcdl] created the state file's key %s (keep it with the state; it never leaves this node)", self.key_path)
        return key

    def _refuse(self, public: str, detail: str) -> StateFileError:
        log.error("[ppcdl] state file %s refused: %s (%s)", self.path, public, detail)
        return StateFileError(f"{public}; nothing was read or released (details in the participant's log)")


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, f"{STATE_FORMAT}\n{text}".encode(), hashlib.sha256).hexdigest()


def _read_private(path: Path, what: str) -> str | None:
    """The text of ``path`` (``None`` if absent), opened without following a link; it must be a regular
    file of this user that nobody else may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:  # ELOOP: a symbolic link
        raise StateFileError(f"the {what} cannot be opened safely (a symbolic link, or not readable); nothing was "
                             "read or released (details in the participant's log)") from _logged(path, err)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            _logged(path, OSError(f"owner {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}"))
            raise StateFileError(f"the {what} is not a private regular file of this participant (mode 0600); "
                                 "nothing was read or released (details in the participant's log)")
        return handle.read().decode("utf-8", errors="replace")


def _logged(path: Path, err: OSError) -> OSError:
    log.error("[ppcdl] %s refused: %s", path, err)
    return err


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
