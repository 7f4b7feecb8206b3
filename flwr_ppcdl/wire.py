"""What travels between participants and the server: every key, and the encoding of a release.

Both sides import these names; no message key is spelt anywhere else. Pure Python (the privacy core
for :class:`~flwr_ppcdl.privacy.Release`); the Flower adapters wrap the values in records.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from flwr_ppcdl.privacy import Release

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


def encode_release(release: Release) -> str:
    """The release as JSON text (noisy statistics and public metadata only)."""
    return json.dumps(release.to_dict())


def decode_release(text: Any) -> Release:
    """Parse a shared release; raise ``ValueError``/``TypeError``/``KeyError`` with a reason if malformed."""
    data = json.loads(str(text))
    if not isinstance(data, dict):
        raise ValueError(f"a release must be a JSON object; got {type(data).__name__}")
    release = Release.from_dict(data)
    for key, value in release.statistics.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"statistics {key!r} contain NaN/Inf")
    return release
