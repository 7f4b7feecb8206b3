"""`Dataset`: features, targets and what they are, plus a seeded train/test split.

Every loader reads data that is already on the machine (a PyPI wheel, a Debian package, a folder the
user names); nothing is downloaded at run time. Pre-processing uses **public constants only**; no
statistic is ever computed from the loaded records, so the features of one record are a function of
that record alone, which is what the functional mechanism's bounding assumption
(docs/functional-mechanism.md §4.2, A2/A3) needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Dataset:
    """An in-memory data set: features, targets and what they mean.

    Attributes
    ----------
    features : np.ndarray
        ``(n, ...)`` array, one record per row (images keep their ``(n, 28, 28)`` layout).
    targets : np.ndarray
        ``(n,)`` int64 class labels (classification) or float64 targets (regression).
    task : str
        ``"classification"`` or ``"regression"``.
    num_classes : int or None
        Number of classes (classification); ``None`` for regression.
    feature_names : tuple of str
        One name per feature column (empty for images).
    description : str
        Where the data comes from and how it was pre-processed.
    groups : np.ndarray or None
        Optional natural group of each record (census: the state name), e.g. for natural-id
        partitioning.
    """

    features: np.ndarray
    targets: np.ndarray
    task: str
    num_classes: int | None
    feature_names: tuple[str, ...] = ()
    description: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.features) != len(self.targets):
            raise ValueError(
                f"features and targets differ in length: {len(self.features)} != {len(self.targets)}"
            )
        if self.groups is not None and len(self.groups) != len(self.targets):
            raise ValueError(
                f"groups and targets differ in length: {len(self.groups)} != {len(self.targets)}"
            )
        if self.task == "classification" and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(f"classification needs num_classes >= 2, got {self.num_classes!r}")
        if self.task == "regression" and self.num_classes is not None:
            raise ValueError(f"regression takes num_classes=None, got {self.num_classes!r}")

    def __len__(self) -> int:
        return int(len(self.targets))

    def subset(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        """Return the records at ``indices`` (copies), with the same metadata."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            features=self.features[idx],
            targets=self.targets[idx],
            task=self.task,
            num_classes=self.num_classes,
            feature_names=self.feature_names,
            description=self.description,
            groups=None if self.groups is None else self.groups[idx],
        )


def train_test_split(
    dataset: Dataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split ``dataset`` into train and test parts with a fixed seeded permutation.

    The test part is meant to be the server's own evaluation set; it is never partitioned among
    participants.

    Parameters
    ----------
    dataset : Dataset
        The data to split.
    test_fraction : float
        Fraction of records in the test part, in ``(0, 1)``; the test size is
        ``round(test_fraction * n)`` (at least 1, at most ``n - 1``).
    seed : int
        Seed of ``np.random.default_rng``: the same seed always gives the same split.

    Returns
    -------
    (train, test) : tuple of Dataset
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n = len(dataset)
    if n < 2:
        raise ValueError(f"need at least 2 records to split, got {n}")
    num_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return dataset.subset(np.sort(order[num_test:])), dataset.subset(np.sort(order[:num_test]))
