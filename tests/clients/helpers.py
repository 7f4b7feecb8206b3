"""Small shared fixtures for the client tests: a real dataset, a bounded body, a counting data source."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from flwr_ppcdl.models import L2Normalize

UnitNorm = L2Normalize  # per-record unit normalisation: data-independent, batch-independent

class CountingLoader:
    """An iterable of (inputs, labels) batches that counts how often it is iterated and read."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> None:
        self.inputs = inputs
        self.labels = labels
        self.batch_size = batch_size
        self.iterations = 0
        self.batches_read = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.iterations += 1
        for start in range(0, len(self.labels), self.batch_size):
            self.batches_read += 1
            yield self.inputs[start : start + self.batch_size], self.labels[start : start + self.batch_size]


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits (1797 x 64, pixels 0-16) as float tensors, shuffled and split 1400 / 397."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = torch.tensor(data.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target[order], dtype=torch.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def digits_model(seed: int = 0) -> nn.Sequential:
    """Fixed body (2x2 average pooling to 16 features + unit norm, no parameters) and a
    10-class linear head: low dimension is what the functional mechanism needs at small n*eps."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.AvgPool2d(2), nn.Flatten(), UnitNorm())
    return nn.Sequential(*body, nn.Linear(16, 10))


def regression_data(n: int = 600, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic bounded regression: ||x|| <= 1 and |y| <= 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x /= np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))
    w = rng.normal(size=d) / np.sqrt(d)
    y = np.clip(x @ w + 0.1 * rng.normal(size=n), -1, 1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())
