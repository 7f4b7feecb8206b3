"""Model, data and the train/test loops (the quickstart's ``task.py``, with synthetic data)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 3
SIZES = (40, 60, 90, 130, 180)  # unequal partitions: FedAvg weighs them 8 % ... 36 %


class Net(nn.Module):
    """A small CNN (conv - pool - linear), as in the quickstart but for 1x12x12 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 5 * 5, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def _images(n: int, seed: int) -> TensorDataset:
    """Class prototypes (fixed) plus per-image noise: every partition is drawn the same way (IID)."""
    prototypes = np.random.default_rng(1234).normal(size=(NUM_CLASSES, 1, 12, 12))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=n)
    x = prototypes[y] + 1.5 * rng.normal(size=(n, 1, 12, 12))
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))


def load_data(partition_id: int, num_partitions: int) -> tuple[DataLoader, DataLoader]:
    """This partition's train and test loaders."""
    size = SIZES[partition_id % len(SIZES)]
    train = DataLoader(_images(size, seed=partition_id), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(partition_id))
    test = DataLoader(_images(50, seed=1000 + partition_id), batch_size=50)
    return train, test


def load_centralized_test() -> TensorDataset:
    return _images(300, seed=99)


def train(net: Net, loader: DataLoader, epochs: int, lr: float) -> float:
    """Plain SGD; the mean training loss."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    net.train()
    total = 0.0
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss)
    return total / (epochs * len(loader))


def test(net: Net, loader: DataLoader) -> tuple[float, float]:
    """(loss, accuracy)."""
    criterion = nn.CrossEntropyLoss()
    net.eval()
    loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = net(x)
            loss += float(criterion(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    return loss / seen, correct / seen
