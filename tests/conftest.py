"""Test-wide hygiene: Flower and Ray never touch the user's home, never phone home, never install;
torch uses one thread (the suite shares a 2-core machine: more threads only contend)."""

from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="ppcdl-tests-")
for _key, _value in {
    "FLWR_HOME": os.path.join(_TMP, "flwr"),
    "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp"),
    "HF_HOME": os.path.join(_TMP, "hf"),
    "FLWR_PPCDL_CACHE_DIR": os.path.join(_TMP, "features"),  # the ScatterNet body's feature cache
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PPCDL_RESULTS": os.path.join(_TMP, "results"),  # a relative result-dir lands here, never in the checkout
    "OMP_NUM_THREADS": "1",  # subprocesses too
}.items():
    os.environ[_key] = _value

import torch  # noqa: E402 - after the environment above

torch.set_num_threads(1)
