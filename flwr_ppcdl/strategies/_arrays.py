"""Zero-copy views of serialised arrays (Flower ``Array`` / legacy ``Parameters`` tensors).

Flower stores each array as ``.npy`` bytes and ``Array.numpy()`` / ``parameters_to_ndarrays``
deserialise with ``np.load(BytesIO(...))``, which copies every byte. The server only reads
uploads, so :func:`npy_view` parses the ``.npy`` header and returns a *read-only* view on the
bytes instead (``np.frombuffer``): no K x P copy before aggregation. Object dtypes (pickles)
are refused, as ``np.load(allow_pickle=False)`` refuses them.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from numpy.typing import NDArray

__all__ = ["array_view", "as_sent_dtype", "npy_view"]


def npy_view(data: bytes | bytearray | memoryview) -> NDArray[Any]:
    """Read-only array viewing ``.npy`` bytes ``data`` without copying them.

    Raises ``ValueError`` on a malformed header, an object dtype or too few bytes; callers
    fall back to ``np.load`` (which raises its own error) when they prefer a copy.
    """
    stream = BytesIO(data)
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted (pickle)")
    count = 1
    for dim in shape:
        count *= int(dim)
    offset = stream.tell()
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"{len(data) - offset} bytes of data for {count} x {dtype} values")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def array_view(array: Any) -> NDArray[Any]:
    """Read-only view of a Flower ``Array``'s values without parsing its ``.npy`` header.

    The shape and dtype come from the ``Array``'s own fields; the header is only checked (its magic, its
    dtype descriptor, C order) with byte comparisons, so the per-array cost does not grow with the
    number of replies' Python-level parsing. Anything unusual (another serialisation, Fortran order, a
    header that disagrees with the fields, too few bytes) takes :func:`npy_view` or ``Array.numpy()``.
    """
    if getattr(array, "stype", None) != "numpy.ndarray":
        return np.asarray(array.numpy())
    data = array.data
    try:
        dtype = np.dtype(array.dtype)
        shape = tuple(int(d) for d in array.shape)
    except (TypeError, ValueError):
        return npy_view(data)
    count = 1
    for dim in shape:
        count *= dim
    offset = len(data) - count * dtype.itemsize
    header = bytes(data[:offset]) if offset > 0 else b""
    if (dtype.hasobject or offset < 10 or not header.startswith(b"\x93NUMPY") or b"True" in header
            or f"'{dtype.str}'".encode() not in header):
        return npy_view(data)
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def as_sent_dtype(array: NDArray[Any], dtype: Any) -> NDArray[Any]:
    """``array`` in the dtype the server sent (a copy only when it differs).

    A float16 (or otherwise different) reply must not change the global model's dtype, nor make
    the aggregate accumulate in its precision. Non-numeric and complex uploads are refused
    (``ValueError``); a value the sent dtype cannot hold becomes ``inf`` and is excluded as non-finite.
    """
    want = np.dtype(dtype)
    if array.dtype == want:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"an upload of dtype {array.dtype} cannot stand for a {want} array")
    if np.issubdtype(want, np.integer) and np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)  # an averaged counter (num_batches_tracked) rounds, not truncates
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(array.astype(want))  # an array also for 0-d input (np.rint returns a scalar)
