"""The model contract: a frozen body (independent of the private data) and a linear head.

A participant's model is an ``nn.Sequential`` ending with ``nn.Linear`` or a module with ``body``
and ``head`` attributes. The body is public: its fingerprint (hash and values) is kept with the
release so a changed body is detected before stale statistics are reused.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch
from torch import nn


class BodyChangedError(RuntimeError):
    """The server sent a body that differs from the one the release was computed with."""


def split_model(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Split a model into (frozen body, linear head).

    Accepted shapes: an ``nn.Sequential`` whose last module is an ``nn.Linear``, or a module with a
    ``body`` attribute and an ``nn.Linear`` ``head`` attribute (applied as ``head(body(x))``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(model, nn.Sequential):
        if len(model) == 0 or not isinstance(model[-1], nn.Linear):
            last = type(model[-1]).__name__ if len(model) else "nothing"
            raise TypeError(
                "model must end with an nn.Linear head (everything before it is the frozen body); "
                f"its last module is {last}"
            )
        body: nn.Module = model[:-1] if len(model) > 1 else nn.Identity()
        return body, model[-1]
    head = getattr(model, "head", None)
    body_attr = getattr(model, "body", None)
    if isinstance(head, nn.Linear) and isinstance(body_attr, nn.Module):
        return body_attr, head
    raise TypeError(
        "model must be an nn.Sequential ending with nn.Linear, or have `body` (nn.Module) and "
        f"`head` (nn.Linear) attributes; got {type(model).__name__} "
        f"with head={type(head).__name__}"
    )


def _body_arrays(body: nn.Module) -> list[tuple[str, np.ndarray]]:
    """The body's parameters and buffers, by name, as flat float64 arrays."""
    return [
        (name, tensor.detach().cpu().to(torch.float64).numpy().ravel())
        for name, tensor in sorted(body.state_dict().items())
    ]


def body_fingerprint(body: nn.Module) -> tuple[str, list[list[float]]]:
    """A hash of the body's parameters and buffers, and the values themselves (public)."""
    digest = hashlib.sha256()
    values: list[list[float]] = []
    for name, array in _body_arrays(body):
        digest.update(name.encode())
        digest.update(array.tobytes())
        values.append(array.tolist())
    return digest.hexdigest(), values


def body_matches(body: nn.Module, reference: list[list[float]] | None) -> bool:
    """Whether the body equals the reference up to aggregation round-off (float32 averaging)."""
    if reference is None:
        return False
    current = [array for _, array in _body_arrays(body)]
    if len(current) != len(reference):
        return False
    for now, ref in zip(current, reference, strict=True):
        ref_array = np.asarray(ref, dtype=np.float64)
        if now.shape != ref_array.shape or not np.allclose(now, ref_array, rtol=1e-5, atol=1e-7):
            return False
    return True


def check_head(head: nn.Linear, task: str, num_classes: int | None) -> None:
    """The head must have 1 output (regression) or K (classification)."""
    expected = 1 if task == "regression" else num_classes
    if head.out_features != expected:
        raise ValueError(
            f"the head (last nn.Linear) must have {expected} outputs for this {task} task; got {head.out_features}"
        )


def warn_if_body_unbounded(body: nn.Module) -> None:
    """Warn when the body's own forward pass does not bound its output like the release does."""
    modules = list(body.modules())
    last = modules[-1] if modules else None
    if last is not None and type(last).__name__ not in ("L2Clip", "L2Normalize", "Identity"):
        warnings.warn(
            "the body does not end with flwr_ppcdl.models.L2Clip/L2Normalize: the functional "
            "mechanism still clips features when it releases (the guarantee holds), but the "
            "model's own forward pass does not, so inference can differ from training",
            UserWarning,
            stacklevel=4,
        )
