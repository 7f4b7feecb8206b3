"""What travels between participants and the server: every key, and the encoding of a release.

Both sides import these names; no message key is spelt anywhere else. Pure Python (the privacy core
for :class:`~flwr_ppcdl.privacy.Release`); the Flower adapters wrap the values in records.
"""

from __future__ import annotations

import json
from typing import Any

from flwr_ppcdl.privacy import Release

# re-exported: the strategies' signatures name the run's expectation next to the release's encoding
from flwr_ppcdl.privacy.release_checks import ReleaseExpectation as ReleaseExpectation

# -- records of a reply (Message API) / fields of FitRes.metrics (legacy) ----------------------------
ARRAYS = "arrays"
"""The ArrayRecord holding the model (Flower's default ``arrayrecord_key``)."""
METRICS = "metrics"
"""The MetricRecord of a reply."""
NUM_EXAMPLES = "num-examples"
"""Claimed number of local records (Flower's default ``weighted_by_key``)."""
FM_EPSILON = "fm-epsilon"
"""ε this participant has spent so far (its ledger's total)."""
FM_DELTA = "fm-delta"
"""δ of that total: 0 while every release is pure ε-DP (Laplace), else the (ε, δ)-DP δ (Gaussian)."""
FM_OBJECTIVE = "fm-objective"
"""Value of the participant's noisy objective at its reply (post-processing)."""
PARTITION_ID = "partition-id"
"""Which partition a participant holds (simulations and bookkeeping only; never trusted)."""
FM_RELEASE = "fm-release"
"""ConfigRecord (Message API) or metrics string (legacy) carrying the shared release as JSON."""
RELEASE_JSON = "json"
"""Field of the ``fm-release`` ConfigRecord holding the JSON text."""

# -- node config (``flower-supernode --node-config``; set by the simulation runtime) -----------------
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_STATE_PATH = "state-path"
"""The participant's state file (its release and privacy ledger, :mod:`flwr_ppcdl.clients.state_file`)."""
NODE_STATE_KEY = "state-key"
"""Where the node creates, on first use, the key of its state file's integrity check (default:
``<state-path>.key``); a key that exists without a state file means the state was lost."""
# the participant's privacy policy (:class:`flwr_ppcdl.clients.policy.PrivacyPolicy`)
NODE_MAX_EPSILON = "max-epsilon"
"""Total ε this participant agrees to spend on the run (every release and evaluation composed)."""
NODE_MAX_DELTA = "max-delta"
"""Largest δ it agrees to (Gaussian noise; also below ``1/n``)."""
NODE_ALLOWED_NOISE = "allowed-noise"
"""Noise laws it accepts, comma-separated (``"gaussian,laplace"``)."""
NODE_ALLOWED_SAMPLERS = "allowed-samplers"
"""Samplers it accepts, comma-separated (default: the hardened ``"discrete,opendp"``)."""


def encode_release(release: Release) -> str:
    """The release as JSON text (noisy statistics and public metadata only)."""
    return json.dumps(release.to_dict())


def decode_release(text: Any) -> Release:
    """Parse a shared release (untrusted input) -- the encoding only, no plausibility check.

    Raises ``ValueError`` naming the field and value for anything malformed (never another
    exception type): JSON that is not a release object, fields of the wrong type or shape. A server
    checks what it parsed with :func:`flwr_ppcdl.privacy.release_checks.check_release` before using it.
    """
    try:
        data = json.loads(text if isinstance(text, (str, bytes, bytearray)) else str(text))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"the release is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"a release must be a JSON object; got {type(data).__name__}: {str(data)[:40]!r}")
    if not isinstance(data.get("statistics"), dict):
        raise ValueError(f"release field 'statistics' must be an object; got {str(data.get('statistics'))[:40]!r}")
    try:
        return Release.from_dict(data)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - KeyError, TypeError, ... from untrusted fields
        raise ValueError(f"malformed release ({type(err).__name__}: {err})") from None
