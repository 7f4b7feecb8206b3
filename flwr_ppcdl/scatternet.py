"""`ScatterNetBody`: kymatio's ScatterNet as a frozen, data-independent body (``body = "scatternet"``).

Built on :mod:`flwr_ppcdl.models` (its bounding modules and seeded projection); registered there in
:data:`~flwr_ppcdl.models.SCATTERNET_BODIES`. Its outputs are cached per record
(:mod:`flwr_ppcdl.data.feature_cache`); docs/results-scatternet.md explains the design and the numbers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flwr_ppcdl.data.feature_cache import FeatureCache, default_cache_root
from flwr_ppcdl.models import _DEFAULT_PROJECTION_SEED, L2Normalize, _FrozenBody, random_projection

__all__ = ["ScatterNetBody"]

_log = logging.getLogger(__name__)
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


def _channels(J: int, L: int) -> int:
    """Scattering channels of ``Scattering2D(J, L)`` (order 0, 1 and 2): 81 for ``J=2, L=8``."""
    return 1 + J * L + L * L * J * (J - 1) // 2


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
    projection = random_projection(_channels(J, L) * side * side, out_dim, seed)
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
        channels = _channels(J, L)
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
