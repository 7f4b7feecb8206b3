"""`FeatureCache`: a per-record disk cache of a frozen, data-independent feature map's outputs.

A participant runs its frozen body over its own records once per federated run; the server runs it
over its own test split every round. When the body is expensive (the ScatterNet body costs about
10 CPU-seconds per 6,000 images), the cache makes a process pay the transform once per record:

* **what is stored:** for each record seen by *this* process, a 16-byte BLAKE2b digest of the
  record's bytes and the body's output for it. The output is a public function of a record the
  process already holds (a participant's own partition, the server's own test split), so the cache
  holds nothing the process could not recompute; it is still derived from private records, so the
  folder is created ``0o700`` and every file ``0o600``;
* **the key:** one folder per body definition (``key``: the body's parameters, the checksum of its
  filters and projection, and the code versions that compute it). A changed definition is a new
  folder, so stale features are never served;
* **where:** ``$FLWR_PPCDL_CACHE_DIR`` if set (``off`` disables the disk cache), else
  ``$XDG_CACHE_HOME/flwr_ppcdl``, else ``~/.cache/flwr_ppcdl`` -- on each participant's own
  machine in a deployment;
* **concurrency:** new features are written as one immutable chunk file per call (written to a
  temporary name, then renamed), so processes sharing a folder (a simulation) never clobber each
  other; a chunk that cannot be read is skipped with a warning and its records are recomputed.

The cache never changes what the body computes: a hit returns the bytes a miss stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "FLWR_PPCDL_CACHE_DIR"
"""Environment variable naming the cache root (``off``: no disk cache, memory only)."""

_DIGEST_BYTES = 16


def default_cache_root() -> Path | None:
    """The cache root this process uses (``None`` when ``$FLWR_PPCDL_CACHE_DIR`` is ``off``)."""
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flwr_ppcdl"


def record_digests(records: np.ndarray) -> list[bytes]:
    """One 16-byte BLAKE2b digest per row of ``records`` (its dtype and bytes)."""
    rows = np.ascontiguousarray(records.reshape(len(records), -1))
    tag = str(rows.dtype).encode()
    return [hashlib.blake2b(tag + row.tobytes(), digest_size=_DIGEST_BYTES).digest() for row in rows]


class FeatureCache:
    """Features of records already seen, in memory and (unless ``root`` is ``None``) on disk.

    Parameters
    ----------
    key : str
        The feature map's definition (parameters, checksums, code versions); one folder per key.
    width : int
        Number of features per record.
    root : Path or None
        Cache root (see :func:`default_cache_root`); ``None`` keeps the features in memory only.
    description : dict, optional
        Public, human-readable definition written once as ``definition.json`` in the folder.
    """

    def __init__(
        self, key: str, width: int, root: Path | None, description: dict[str, object] | None = None
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.key = key
        self.width = int(width)
        self.folder: Path | None = None
        self._index: dict[bytes, tuple[int, int]] = {}
        self._chunks: list[np.ndarray] = []
        self._loaded: set[str] = set()
        self.hits = 0
        self.misses = 0
        if root is not None:
            self.folder = self._prepare(Path(root) / hashlib.sha256(key.encode()).hexdigest()[:24], description)

    def _prepare(self, folder: Path, description: dict[str, object] | None) -> Path | None:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
            info = folder / "definition.json"
            if not info.exists():
                info.write_text(json.dumps({"key": self.key, **(description or {})}, indent=1))
                info.chmod(0o600)
        except OSError as err:  # a read-only home must not stop a run: memory only
            log.warning("[ppcdl] feature cache disabled: cannot use %s (%s)", folder, err)
            return None
        return folder

    def __len__(self) -> int:
        return len(self._index)

    def features(
        self, records: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """``compute(records)`` row by row, reading cached rows and computing (and storing) the rest.

        ``compute`` receives the records not cached yet, in their order, and must return
        ``(len, width)`` features; the result is ``(len(records), width)`` float32.
        """
        digests = record_digests(records)
        missing = [i for i, d in enumerate(digests) if d not in self._index]
        if missing:
            self._refresh()  # another process (or an earlier run) may have written them
            missing = [i for i, d in enumerate(digests) if d not in self._index]
        if missing:
            unique: dict[bytes, int] = {}
            for i in missing:
                unique.setdefault(digests[i], i)
            rows = list(unique.values())
            computed = np.asarray(compute(records[rows]), dtype=np.float32)
            if computed.shape != (len(rows), self.width):
                raise ValueError(
                    f"the feature map returned shape {computed.shape}, expected {(len(rows), self.width)}"
                )
            self._add([digests[i] for i in rows], computed)
            self._write([digests[i] for i in rows], computed)
        self.misses += len(missing)
        self.hits += len(digests) - len(missing)
        out = np.empty((len(digests), self.width), dtype=np.float32)
        for i, digest in enumerate(digests):
            chunk, row = self._index[digest]
            out[i] = self._chunks[chunk][row]
        return out

    # -- storage -----------------------------------------------------------------------------------

    def _add(self, digests: list[bytes], features: np.ndarray) -> None:
        chunk = len(self._chunks)
        self._chunks.append(features)
        for row, digest in enumerate(digests):
            self._index.setdefault(digest, (chunk, row))

    def _refresh(self) -> None:
        if self.folder is None:
            return
        try:
            names = sorted(p.name for p in self.folder.glob("*.npz"))
        except OSError:
            return
        for name in names:
            if name in self._loaded:
                continue
            self._loaded.add(name)
            try:
                with np.load(self.folder / name, allow_pickle=False) as data:
                    digests, features = data["digests"], data["features"]
            except (OSError, ValueError, KeyError) as err:
                log.warning("[ppcdl] feature cache: skipping unreadable %s (%s)", name, err)
                continue
            n = len(digests)
            if (
                digests.shape != (n, _DIGEST_BYTES)
                or digests.dtype != np.uint8
                or features.shape != (n, self.width)
                or features.dtype != np.float32
                or not np.all(np.isfinite(features))
            ):
                log.warning("[ppcdl] feature cache: skipping malformed %s", name)
                continue
            self._add([bytes(d) for d in digests], features)

    def _write(self, digests: list[bytes], features: np.ndarray) -> None:
        if self.folder is None:
            return
        packed = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), _DIGEST_BYTES)
        name = hashlib.sha256(packed.tobytes()).hexdigest()[:32] + ".npz"
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.savez(handle, digests=packed, features=features)
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.folder / name)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as err:
            log.warning("[ppcdl] feature cache: could not write %s (%s); continuing", name, err)
            return
        self._loaded.add(name)
