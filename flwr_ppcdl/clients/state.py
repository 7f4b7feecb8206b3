"""What a participant keeps between rounds, and where: `TrainerState` in Flower's ``Context.state``.

Nothing here is a raw statistic or a record: the release (noisy), the ledger, the body's
fingerprint. It round-trips through JSON so it can live in ``Context.state`` (a ``RecordDict``) or,
outside Flower, in a plain dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from flwr_ppcdl.clients.errors import PublicError


class StateError(PublicError):
    """A persisted state that would under-report ε (a release without its ledger, ...): refused."""


@dataclass
class TrainerState:
    """What a participant keeps between rounds: the release, its repair, the ledger, the body's fingerprint.

    Nothing here is a raw statistic or a record; it round-trips through JSON so it can live in
    Flower's ``Context.state``. Arrays are stored compactly (base64 float64,
    :func:`flwr_ppcdl.privacy.release.encode_array`). ``repaired`` caches the release's
    eigen-repair (post-processing) so that the trainer object Flower builds each round does not
    redo the eigendecomposition; it names the release it belongs to and is ignored otherwise.
    """

    release: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None
    body_fingerprint: str | None = None
    body_reference: list[list[float]] | None = None
    records_read: int = 0
    repaired: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The state as compact JSON text."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        """Inverse of :meth:`to_json` (states written before ``repaired`` existed load too)."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"trainer state must be a JSON object; got {type(raw).__name__}")
        return cls(**raw)

    def check(self) -> None:
        """Refuse (:class:`StateError`) a state whose ledger does not account for what it holds.

        A release needs at least one ledger entry whose ε covers it, and every time the records were
        read (a release) is a ledger entry: a missing or shrunk ledger is never read as "nothing spent".
        """
        if not isinstance(self.records_read, int) or isinstance(self.records_read, bool) or self.records_read < 0:
            raise StateError(f"records_read={self.records_read!r} is not a count")
        entries = ledger_entries(self)
        if self.release is not None and not entries:
            raise StateError("it holds a release but its ledger has no entry")
        if self.records_read > len(entries):
            raise StateError(f"the records were read {self.records_read} time(s) but the ledger has {len(entries)} entries")
        if self.release is not None:
            spent = math.fsum(float(e.get("epsilon", 0.0)) for e in entries)
            released = float(self.release.get("epsilon", math.inf))
            if not spent >= released * (1.0 - 1e-12):
                raise StateError(f"its ledger totals epsilon={spent!r}, less than its release's {released!r}")


def ledger_entries(state: TrainerState) -> list[dict[str, Any]]:
    """The ledger entries a state holds (``[]`` without a ledger); :class:`StateError` if malformed."""
    if state.ledger is None:
        return []
    entries = state.ledger.get("entries") if isinstance(state.ledger, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise StateError("its ledger has no list of entries")
    return entries


STATE_KEY = "flwr-ppcdl"


def load_state(store: Any) -> TrainerState:
    """Read the trainer state from a Flower ``Context`` (its ``state``) or a plain mutable mapping."""
    mapping = _state_mapping(store)
    record = mapping.get(STATE_KEY)
    if record is None:
        return TrainerState()
    text = record["json"] if isinstance(record, Mapping) else record
    return TrainerState.from_json(str(text))


def save_state(store: Any, state: TrainerState) -> None:
    """Persist the trainer state into a Flower ``Context`` or a plain mutable mapping."""
    mapping = _state_mapping(store)
    text = state.to_json()
    if _is_flower_recorddict(mapping):
        from flwr.app import ConfigRecord

        mapping[STATE_KEY] = ConfigRecord({"json": text})
    else:
        mapping[STATE_KEY] = text


def _state_mapping(store: Any) -> MutableMapping[str, Any]:
    state = getattr(store, "state", store)
    if not isinstance(state, MutableMapping):
        raise TypeError(
            "state store must be a flwr.app.Context or a mutable mapping (dict); "
            f"got {type(store).__name__}"
        )
    return state


def _is_flower_recorddict(mapping: Any) -> bool:
    from flwr.app import RecordDict

    return isinstance(mapping, RecordDict)
