"""Fashion-MNIST through the ScatterNet body once, for every benchmark cell (issue 26).

Writes under ``--cache`` (default ``/work/cache/i26``):

* ``fashion_gn.npy``: the 70,000 x 3,969 ScatterNet + GroupNorm features (float32; train 0-59,999,
  then the official test set), the input of DP-SGD on the full scattering features;
* ``fashion_h128.npy``: the same records through the whole ``scatternet`` body (projection and
  bound), identical to what the body returns;
* ``features/``: the body's own per-record cache (:class:`flwr_ppcdl.data.feature_cache.FeatureCache`)
  filled with those features, so App runs with ``FLWR_PPCDL_CACHE_DIR=<cache>/features`` skip the
  transform.

Run: ``OMP_NUM_THREADS=1 nice -n 10 PYTHONPATH=. python benchmarks/scatternet_features.py``
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from flwr_ppcdl.data import DEFAULT_FASHION_DIR, load_fashion_mnist
from flwr_ppcdl.data.feature_cache import CACHE_DIR_ENV, record_digests
from flwr_ppcdl.models import make_body
from flwr_ppcdl.scatternet import ScatterNetBody

log = logging.getLogger("scatternet")
DEFAULT_CACHE = Path("/work/cache/i26")


def fashion_images(folder: str = DEFAULT_FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(70,000 x 784 float32 pixels 0-255, labels): the official train split, then the test split."""
    train, test = load_fashion_mnist(folder, "train"), load_fashion_mnist(folder, "test")
    images = np.concatenate([train.features, test.features]).reshape(-1, 784).astype(np.float32)
    return images, np.concatenate([train.targets, test.targets])


def compute(cache: Path, folder: str = DEFAULT_FASHION_DIR, batch: int = 1000) -> tuple[Path, Path]:
    """Compute (or reuse) ``fashion_gn.npy`` and ``fashion_h128.npy`` under ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    gn_path, h_path = cache / "fashion_gn.npy", cache / "fashion_h128.npy"
    images, _ = fashion_images(folder)
    body = make_body("scatternet")
    assert isinstance(body, ScatterNetBody)
    if not gn_path.exists():
        partial = cache / "fashion_gn.partial.npy"
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(images), body.gn_features))
        started, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, len(images), batch):
            out[start:start + batch] = body.scattering_features(torch.from_numpy(images[start:start + batch])).numpy()
            if (start // batch) % 10 == 9:
                log.info("%d/%d images, %.0f s wall, %.0f CPU-s", start + batch, len(images),
                         time.perf_counter() - started, time.process_time() - cpu0)
        out.flush()
        del out
        partial.replace(gn_path)
        log.info("ScatterNet+GN of %d images: %.0f CPU-s (1 torch thread)", len(images), time.process_time() - cpu0)
    if not h_path.exists():
        gn = np.load(gn_path, mmap_mode="r")
        h = np.concatenate([body.project(torch.from_numpy(np.array(gn[s:s + batch]))).numpy()
                            for s in range(0, len(gn), batch)])
        np.save(h_path, h)
    return gn_path, h_path


def fill_body_cache(h_path: Path, root: Path, folder: str = DEFAULT_FASHION_DIR) -> int:
    """Put the body's outputs of every Fashion-MNIST record into its feature cache at ``root``."""
    os.environ[CACHE_DIR_ENV] = str(root)
    images, _ = fashion_images(folder)
    h = np.load(h_path)
    row = {d: i for i, d in enumerate(record_digests(images))}
    body = make_body("scatternet")
    assert isinstance(body, ScatterNetBody)
    cache = body.feature_cache()
    assert cache is not None
    cache.features(images, lambda records: h[[row[d] for d in record_digests(records)]])
    return len(cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--dataset-dir", default=DEFAULT_FASHION_DIR)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    _, h_path = compute(a.cache, a.dataset_dir)
    count = fill_body_cache(h_path, a.cache / "features", a.dataset_dir)
    log.info("body cache at %s holds %d records", a.cache / "features", count)


if __name__ == "__main__":
    main()
