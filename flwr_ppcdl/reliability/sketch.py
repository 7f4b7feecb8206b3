"""What is scored: a random sample of coordinates of every upload, as float64 blocks (pure numpy).

A *block* is one view of every participant: its parameters (or deltas to the global model), or a
release's known-law view (:class:`~flwr_ppcdl.reliability.ScoredView`). Each block holds one
:class:`Layer` per array: the sampled coordinates of every participant (``K x m``), the reference
(the global model) on them, the known privacy-noise variance where there is one, and, for a head
(a 2-D array of 3-64 rows scored in full), its number of rows. Scoring costs ``O(K m)``: no
``K x P`` copy is made and nothing is computed over pairs of participants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from flwr_ppcdl.reliability import constants as const

FloatArray = NDArray[np.float64]

_BLAS_CONTROLLER: Any = None


def single_thread_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while scoring (small products; spinning BLAS threads cost more on shared
    cores). A no-op without ``threadpoolctl``."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except Exception:  # noqa: BLE001 - optional speed-up only
            _BLAS_CONTROLLER = False
    try:
        limit = None if _BLAS_CONTROLLER is False else _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001
        limit = None
    return contextlib.nullcontext() if limit is None else cast(contextlib.AbstractContextManager[Any], limit)


@dataclass
class Layer:
    """One array's scored coordinates of every participant (float64)."""

    stack: FloatArray  # (K, m): uploads minus the reference
    reference: FloatArray  # (m,): the reference on the same coordinates (zeros without one)
    noise: FloatArray | None  # (K, m): known privacy-noise variance, or None
    rows: int = 0  # > 0: a head scored in full, with this many rows
    bounded: bool = True  # whether its energy bounds the participant's influence


def sample_blocks(size: int, m: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """About ``m`` coordinates of ``range(size)`` as random circular blocks of contiguous coordinates: starts
    uniform (with replacement), blocks wrapping around (equal inclusion probabilities, contiguous reads)."""
    blen = min(const.SAMPLE_BLOCK, size)
    starts = np.sort(rng.integers(0, size, size=max(1, -(-m // blen))))
    return ((starts[:, None] + np.arange(blen)) % size).reshape(-1)


def sample_layers(arrays: Sequence[Sequence[Any]], idx: Sequence[int] | NDArray[np.intp], reference: Sequence[Any] | None,
                  max_coordinates: int | None, rng: np.random.Generator, noise_variance: Sequence[Sequence[Any]] | None = None,
                  bounded: bool | Sequence[bool] = True) -> list[Layer]:
    """The scored coordinates of the uploads ``idx``, layer by layer: about ``max_coordinates`` in all (at
    most ``SCORED_ENTRIES / K``, at least ``MIN_COORDINATES``, proportionally per layer), drawn afresh as
    random contiguous blocks so an uploader cannot know where it is looked at; a head (``HEAD_ROWS``) whole
    with a known law, within ``SCORED_ENTRIES`` or ``HEAD_COST``. Coordinates nobody moved are dropped
    elsewhere. ``bounded`` (one flag or one per array): whether an array's energy bounds influence."""
    k = len(idx)
    if max_coordinates is not None:
        max_coordinates = min(max_coordinates, max(const.MIN_COORDINATES, const.SCORED_ENTRIES // max(k, 1)))
    shapes = [tuple(np.shape(a)) for a in arrays[idx[0]]]
    sizes = [int(np.prod(sh)) if sh else 1 for sh in shapes]
    total = sum(sizes)
    layers: list[Layer] = []
    for pos, (shape, size) in enumerate(zip(shapes, sizes, strict=True)):
        head = len(shape) == 2 and const.HEAD_ROWS[0] <= shape[0] <= const.HEAD_ROWS[1]
        in_full = head and (noise_variance is not None or k * size <= const.SCORED_ENTRIES or size * shape[0] <= const.HEAD_COST * total)
        take: NDArray[np.intp] | None = None
        if max_coordinates is not None and total > max_coordinates and size > 0 and not in_full:
            m = max(1, int(round(max_coordinates * size / total)))
            if m < size:
                take = np.sort(sample_blocks(size, m, rng))
        stack = np.empty((k, size if take is None else len(take)), dtype=np.float64)
        for j, i in enumerate(idx):
            row = np.asarray(arrays[i][pos]).reshape(-1)
            stack[j] = row if take is None else row[take]
        ref = np.zeros(stack.shape[1])
        if reference is not None:
            r = np.asarray(reference[pos], dtype=np.float64).reshape(-1)
            ref = r if take is None else r[take]
            stack -= ref
        live = np.ptp(stack, axis=0) > 0
        if not np.any(live):
            continue
        if head and take is None:  # a head keeps its rows whole (a column nobody moved is harmless)
            live[:] = True
        noise = None
        if noise_variance is not None:
            noise = np.empty_like(stack)
            for j, i in enumerate(idx):
                v = np.broadcast_to(np.asarray(noise_variance[i][pos], dtype=np.float64), shape).reshape(-1)
                noise[j] = v if take is None else v[take]
            noise = noise[:, live]
        full_head = head and take is None
        flag = bool(bounded) if isinstance(bounded, (bool, np.bool_)) else bool(bounded[pos])
        layers.append(Layer(stack[:, live], ref[live], noise, int(shape[0]) if full_head else 0, flag))
    return layers


def voices(blocks: Sequence[Sequence[Layer]], k: int) -> NDArray[np.intp]:
    """For every participant, the first whose scored values are identical to its own: identical uploads
    are one piece of evidence (two independent honest uploads coincide with probability zero), so they
    speak with one voice when the honest majority is found. ``O(K m)`` by hashing, no pairs compared."""
    first: dict[bytes, int] = {}
    out = np.arange(k, dtype=np.intp)
    for i in range(k):
        key = b"".join(np.ascontiguousarray(lay.stack[i]).tobytes() for block in blocks for lay in block)
        out[i] = first.setdefault(key, i)
    return out
