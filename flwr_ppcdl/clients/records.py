"""The two functions that read a participant's records. Nothing else in the package does.

* :func:`release_from_records` - runs the frozen body once over the local records (``eval()`` mode,
  no gradients), hands the features to :meth:`FunctionalMechanism.release` and keeps only the noisy
  release. This is the *only* training-time reader of records; it runs once per participant for the
  whole federated run (and again only when the body changes and the configuration says to re-release,
  which is charged to the ledger).
* :func:`noisy_local_evaluation` - optional, off by default; a separate, charged query (Laplace-noised
  counts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from flwr_ppcdl.clients.config import TrainerConfig
from flwr_ppcdl.privacy import FunctionalMechanism, PrivacyLedger, Release


def _as_batches(data: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(data, tuple) and len(data) == 2:
        return [data]
    return data


@torch.no_grad()
def release_from_records(
    body: nn.Module,
    data: Any,
    mechanism: FunctionalMechanism,
    device: str | torch.device = "cpu",
) -> Release:
    """Read the local records once and release the functional mechanism's noisy statistics.

    The body runs in ``eval()`` mode without gradients (no BatchNorm batch statistics, no dropout:
    each record's features depend on that record alone). The features and labels exist only inside
    this function; what leaves it is the :class:`Release` (noisy statistics; the mechanism charges
    its ledger before drawing noise).

    Parameters
    ----------
    body
        The frozen feature extractor (independent of the private data).
    data
        ``(features_or_inputs, labels)`` arrays/tensors, or an iterable of such batches
        (e.g. a ``DataLoader``); iterated exactly once.
    mechanism
        The configured :class:`FunctionalMechanism`.
    """
    was_training = body.training
    body.eval()
    try:
        feature_parts: list[np.ndarray] = []
        label_parts: list[np.ndarray] = []
        for batch in _as_batches(data):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    "each batch of the local data must be a pair (inputs, labels); "
                    f"got {type(batch).__name__}"
                )
            inputs, labels = batch
            inputs_t = torch.as_tensor(inputs).to(device)
            feats = body(inputs_t.float() if not inputs_t.is_floating_point() else inputs_t)
            feature_parts.append(feats.detach().cpu().to(torch.float64).reshape(len(feats), -1).numpy())
            label_parts.append(torch.as_tensor(labels).cpu().numpy())
        if not feature_parts:
            raise ValueError("the local data is empty: nothing to release")
        features = np.concatenate(feature_parts)
        labels_all = np.concatenate(label_parts)
        del feature_parts, label_parts
        release = mechanism.release(features, labels_all)
        del features, labels_all
        return release
    finally:
        body.train(was_training)


@torch.no_grad()
def noisy_local_evaluation(
    model: nn.Module,
    data: Any,
    config: TrainerConfig,
    ledger: PrivacyLedger,
    rng: np.random.Generator,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Evaluate the model on local records - a new query on private data, charged to the ledger.

    Classification releases the number of correct predictions plus ``Lap(1/eps)`` (replacing one
    record changes the count by at most 1). Regression releases the sum of squared errors with each
    record's error clipped to ``(2B)^2`` plus ``Lap((2B)^2/eps)``. ``n`` is public (replace-one).
    The Laplace draw here is numpy's (not hardened); it protects a scalar already rounded to the
    released precision.
    """
    eps = config.eval_epsilon
    ledger.charge(
        eps,
        mechanism="laplace",
        released="local evaluation (noisy count)" if config.task == "classification" else "local evaluation (noisy clipped SSE)",
        neighbouring=config.neighbouring,
    )
    model.eval()
    n = 0
    total = 0.0
    cap = (2 * config.target_bound) ** 2
    for inputs, labels in _as_batches(data):
        inputs_t = torch.as_tensor(inputs).to(device)
        out = model(inputs_t.float() if not inputs_t.is_floating_point() else inputs_t)
        labels_t = torch.as_tensor(labels).to(device)
        n += len(labels_t)
        if config.task == "classification":
            total += float((out.argmax(dim=1) == labels_t).sum())
        else:
            err = (out.reshape(-1).double() - labels_t.double().clamp(-config.target_bound, config.target_bound)) ** 2
            total += float(err.clamp(max=cap).sum())
    sensitivity = 1.0 if config.task == "classification" else cap
    noisy = total + float(rng.laplace(0.0, sensitivity / eps))
    if config.task == "classification":
        return {"noisy-accuracy": noisy / max(n, 1), "eval-epsilon": eps}
    return {"noisy-mse": noisy / max(n, 1), "eval-epsilon": eps}
