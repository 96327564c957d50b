"""Input validation shared by the public functions: messages say what was expected and what arrived."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

Lam = Union[float, Tensor]


def check_matrix(x: Tensor, name: str, dim: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a 2-D floating tensor with ``dim`` columns (when given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns to match the embedding dim, got shape {tuple(x.shape)}")


def check_values(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds a non-finite value or a row of zero norm.

    This reads values back from the device, so it is used by the inspection-level functions, not by the
    per-step loss.
    """
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} has non-finite values (first in row {bad})")
    norms = x.norm(dim=1)
    if not bool((norms > 0).all()):
        bad = int((norms == 0).nonzero()[0])
        raise ValueError(f"{name} has a row of zero norm (row {bad}); it has no direction on the sphere")


def check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_lam(lam: Lam, batch: int, num_positives: int) -> None:
    """``lam`` is a float in [0, 1] or a tensor of such values broadcastable to (batch, num_positives)."""
    if isinstance(lam, Tensor):
        try:
            torch.broadcast_shapes(lam.shape, (batch, num_positives))
        except RuntimeError:
            raise ValueError(
                f"lam of shape {tuple(lam.shape)} does not broadcast to (batch, num_positives) = "
                f"({batch}, {num_positives})"
            ) from None
        if lam.numel() and not bool(((lam >= 0) & (lam <= 1)).all()):
            raise ValueError(f"lam values must lie in [0, 1], got min {float(lam.min())} and max {float(lam.max())}")
    elif isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be a float in [0, 1] or a tensor of such values, got {lam!r}")


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: half-precision inputs are upcast for the geometry."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
