"""Split a data set among simulated participants with flwr-datasets partitioners, offline.

The partitioners (``IidPartitioner``, ``DirichletPartitioner``) run on a local
``datasets.Dataset.from_dict`` holding only the record positions and a label column, so nothing is
downloaded. Records are first put in a seeded random order: ``IidPartitioner`` cuts contiguous
shards and ``DirichletPartitioner`` splits each class in stored order, so without this step the
partitions would depend on how the file happens to be sorted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["PARTITIONINGS", "label_histograms", "partition_indices"]

PARTITIONINGS = ("iid", "dirichlet")


def _partition_labels(
    targets: np.ndarray, bin_edges: Sequence[float] | None, partitioning: str
) -> np.ndarray:
    """Labels to partition by: class labels as they are; regression targets by public bins."""
    if np.issubdtype(targets.dtype, np.integer) or targets.dtype == np.bool_:
        if bin_edges is not None:
            raise ValueError("bin_edges is only for real-valued (regression) targets")
        return targets.astype(np.int64)
    if not np.issubdtype(targets.dtype, np.floating):
        raise TypeError(f"targets must be integer labels or real values, got dtype {targets.dtype}")
    if partitioning == "iid":
        return np.zeros(len(targets), dtype=np.int64)  # labels are not used by IID
    if bin_edges is None:
        raise ValueError(
            "Dirichlet partitioning of real-valued targets needs public bin_edges (e.g. "
            "CENSUS_TARGET_BIN_EDGES): the target is partitioned by the band it falls into. "
            "Pass partitioning='iid' for an IID split instead."
        )
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) == 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin_edges must be a non-empty increasing sequence, got {bin_edges!r}")
    return np.digitize(targets, edges).astype(np.int64)


def partition_indices(
    targets: np.ndarray | Sequence[float],
    num_partitions: int,
    partitioning: str = "iid",
    alpha: float = 0.3,
    seed: int = 0,
    min_partition_size: int = 10,
    bin_edges: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Assign record positions ``0..n-1`` to ``num_partitions`` participants.

    Parameters
    ----------
    targets : array-like, shape (n,)
        Integer class labels, or real regression targets.
    num_partitions : int
        Number of participants, ``1 <= num_partitions <= n``.
    partitioning : {"iid", "dirichlet"}
        ``"iid"``: ``IidPartitioner`` on a seeded random order (sizes differ by at most one).
        ``"dirichlet"``: ``DirichletPartitioner`` with concentration ``alpha`` over the labels
        (label-skewed; smaller ``alpha`` = more skew). Real-valued targets are partitioned by the
        public band ``np.digitize(target, bin_edges)``; without ``bin_edges`` this raises (we do
        not silently fall back to IID, and we do not compute quantiles of the data).
    alpha : float
        Dirichlet concentration, ``> 0`` (ignored for IID).
    seed : int
        Seed of the record order and of the Dirichlet draws: same inputs and seed, same output.
    min_partition_size : int
        Dirichlet only: redraw (up to 10 times, flwr-datasets' rule) until every partition holds at
        least this many records; raises ``ValueError`` if that fails.
    bin_edges : sequence of float, optional
        Public, increasing band edges for real-valued targets (Dirichlet only).

    Returns
    -------
    list of np.ndarray
        ``num_partitions`` sorted int64 arrays; disjoint, and together exactly ``0..n-1``.
    """
    labels_in = np.asarray(targets)
    if labels_in.ndim != 1:
        raise ValueError(f"targets must be 1-D, got shape {labels_in.shape}")
    n = len(labels_in)
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
        raise TypeError(f"num_partitions must be an int, got {num_partitions!r}")
    if not 1 <= num_partitions <= n:
        raise ValueError(f"num_partitions must be in [1, n={n}], got {num_partitions}")
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"partitioning must be one of {PARTITIONINGS}, got {partitioning!r}")
    if partitioning == "dirichlet":
        if not alpha > 0 or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
        if min_partition_size < 0 or min_partition_size * num_partitions > n:
            raise ValueError(
                f"min_partition_size={min_partition_size} is impossible for n={n} records "
                f"and num_partitions={num_partitions}"
            )
    labels = _partition_labels(labels_in, bin_edges, partitioning)

    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

    order = np.random.default_rng(seed).permutation(n)
    table = HFDataset.from_dict({"position": order, "label": labels[order]})
    partitioner: Partitioner
    if partitioning == "iid":
        partitioner = IidPartitioner(num_partitions=int(num_partitions))
    else:
        partitioner = DirichletPartitioner(
            num_partitions=int(num_partitions),
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=int(min_partition_size),
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    partitioner.dataset = table
    parts: list[np.ndarray] = []
    with warnings.catch_warnings():
        # flwr-datasets warns on every redraw; a final failure still raises ValueError.
        warnings.filterwarnings("ignore", message=".*min_partition_size.*", category=UserWarning)
        for pid in range(num_partitions):
            part = partitioner.load_partition(pid).with_format("numpy")[:]["position"]
            parts.append(np.sort(np.asarray(part, dtype=np.int64)))
    return parts


def label_histograms(
    targets: np.ndarray, partitions: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Count labels per partition: ``(num_partitions, num_classes)`` int64 array."""
    labels = np.asarray(targets, dtype=np.int64)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in partitions])
