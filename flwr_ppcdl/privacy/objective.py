"""The repaired noisy FM objective as a differentiable PyTorch function (float64).

Pure post-processing: the callable closes over released, repaired statistics only (never records),
so it can be minimised for any number of epochs, rounds and restarts at no privacy cost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray

TorchObjective = Callable[..., torch.Tensor]


def make_torch_objective(
    *,
    task: str,
    gram: NDArray[np.float64],
    cross: NDArray[np.float64],
    num_examples: int,
    prox_mu: float = 0.0,
    ridge: float = 0.0,
) -> TorchObjective:
    """Build ``objective(W, anchor=None) -> scalar`` from repaired statistics.

    ``objective(W) = [F(W) + ridge/2 ||W||^2 + prox_mu/2 ||W - anchor||^2] / n`` where

    * classification (``W`` of shape ``(K, D)``): ``F(W) = -<W, C̄> + ½ tr(Wᵀ H W Ĝ)``,
      ``H = (I - 11ᵀ/K)/K`` (the constant ``n log K`` is omitted);
    * regression (``w`` of shape ``(D,)``): ``F(w) = wᵀ Ĝ w - 2 b̄ᵀ w`` (the constant ``Σy²`` is
      omitted, it is never released).

    ``gram`` is the repaired ``Ĝ`` (PSD), ``cross`` the re-centred, projected ``C̄`` or ``b̄``. ``W`` may
    have any floating dtype; it is promoted to float64 and gradients flow back to it.
    """
    gram_t = torch.as_tensor(np.array(gram, dtype=np.float64))
    cross_t = torch.as_tensor(np.array(cross, dtype=np.float64))
    inv_n = 1.0 / float(num_examples)
    classification = task == "classification"
    if classification:
        num_classes = cross_t.shape[0]
    prox = float(prox_mu)
    ridge_ = float(ridge)

    def objective(weights: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        w = weights.to(torch.float64)
        if w.shape != cross_t.shape:
            raise ValueError(
                f"weights must have shape {tuple(cross_t.shape)}; got {tuple(w.shape)}"
            )
        if classification:
            hw = (w - w.mean(dim=0, keepdim=True)) / num_classes  # H W without forming H
            value = -(w * cross_t).sum() + 0.5 * (w * (hw @ gram_t)).sum()
        else:
            value = w @ (gram_t @ w) - 2.0 * (cross_t @ w)
        if ridge_ > 0.0:
            value = value + 0.5 * ridge_ * (w * w).sum()
        if prox > 0.0:
            if anchor is None:
                raise ValueError(f"prox_mu={prox} needs an anchor (e.g. the current global model)")
            diff = w - anchor.to(torch.float64)
            value = value + 0.5 * prox * (diff * diff).sum()
        return value * inv_n

    return objective
