"""Input validation shared by the public functions: messages say what was expected and what arrived."""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Optional, Union

import torch
from torch import Tensor

Lam = Union[float, Tensor]


def check_matrix(x: Tensor, name: str, dim: Optional[int] = None, *, nonempty: bool = False) -> None:
    """Raise ``ValueError`` unless ``x`` is a 2-D floating tensor with at least one column, ``dim`` columns when
    given, and at least one row when ``nonempty``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns to match the embedding dim, got shape {tuple(x.shape)}")
    if nonempty and x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row (a mean over none is undefined), got {tuple(x.shape)}")


def check_device(x: Tensor, name: str, reference: Tensor, reference_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is on the device of ``reference``."""
    if x.device != reference.device:
        raise ValueError(f"{name} is on {x.device} but {reference_name} is on {reference.device}")


def check_pair(x: Tensor, x_name: str, y: Tensor, y_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, D) floating tensor with B >= 1 and ``y`` one of the same shape on
    the same device (a query and its key, or the two views of a batch)."""
    check_matrix(x, x_name, nonempty=True)
    check_matrix(y, y_name, x.shape[1])
    if y.shape != x.shape:
        raise ValueError(f"{y_name} must have the shape of {x_name} {tuple(x.shape)}, got {tuple(y.shape)}")
    check_device(y, y_name, x, x_name)


def check_negatives(negatives: Tensor, query: Tensor) -> None:
    """Raise ``ValueError`` unless ``negatives`` holds (K, D) rows matching ``query`` (B, D), on its device. A MoCo
    (D, K) queue buffer passed as is gets a message saying to pass ``queue.T``."""
    check_matrix(negatives, "negatives")
    dim = query.shape[1]
    if negatives.shape[0] == dim and negatives.shape[1] != dim:
        raise ValueError(
            f"negatives has shape {tuple(negatives.shape)}: it looks like a MoCo (D, K) queue buffer. "
            f"Pass its rows as negatives, i.e. queue.T of shape ({negatives.shape[1]}, {dim})"
        )
    check_matrix(negatives, "negatives", dim)
    check_device(negatives, "negatives", query, "query")


def check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds a NaN or an infinity (reads a value back from the device)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} has non-finite values (first in row {bad})")


def check_values(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds a non-finite value or a row of zeros.

    This reads values back from the device, so it is used by the inspection-level functions, not by the
    per-step loss. A row is tested by its largest magnitude rather than its norm, which underflows to 0 for
    tiny rows that still have a direction.
    """
    check_finite(x, name)
    nonzero = x.abs().amax(dim=1) > 0
    if not bool(nonzero.all()):
        bad = int((~nonzero).nonzero()[0])
        raise ValueError(f"{name} has a row of zero norm (row {bad}); it has no direction on the sphere")


def check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a ``bool``) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(value: float, name: str, *, minimum: float, inclusive: bool = True) -> float:
    """Return ``value`` as a float if it is a finite real number ``>= minimum`` (``> minimum`` when not
    ``inclusive``); raise ``ValueError`` otherwise."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


MIN_TEMPERATURE = 1e-6
"""Smallest temperature accepted: 0 divides by zero, a negative one flips the loss, and logits of 1 / T must stay
far from overflow after being summed over a batch of positives (T = 1e-308 gives an infinite loss)."""


def check_temperature(temperature: float) -> float:
    """Return the temperature of every logit as a float if it is a finite number >= ``MIN_TEMPERATURE``."""
    return check_number(temperature, "temperature", minimum=MIN_TEMPERATURE)


def check_lam(lam: Lam, batch: int, num_positives: int, meaning: str = "(batch, num_positives)") -> None:
    """Raise ``ValueError`` unless ``lam`` is a float in [0, 1] or a tensor of such values that broadcasts to
    ``(batch, num_positives)`` without adding dimensions (a (1, B, M) tensor would silently add a dimension to
    every output); ``meaning`` names that shape in the message."""
    if isinstance(lam, Tensor):
        target = (batch, num_positives)
        try:
            broadcast = torch.broadcast_shapes(lam.shape, target)
        except RuntimeError:
            broadcast = None
        if broadcast != target:
            raise ValueError(f"lam of shape {tuple(lam.shape)} must broadcast to {target}, {meaning}")
        if lam.numel() and not bool(((lam >= 0) & (lam <= 1)).all()):
            raise ValueError(f"lam values must lie in [0, 1], got min {float(lam.min())} and max {float(lam.max())}")
    elif isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be a float in [0, 1] or a tensor of such values, got {lam!r}")


def compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32: half-precision inputs are upcast. ``None`` is skipped."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


_INTERNAL = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))


def caller_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` in the calling function that points at the first frame outside this
    package and torch: the user's line, however many frames the call went through (``nn.Module.__call__``,
    ``torch.compiler.disable``)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def check_term_tensors(query: Tensor, anchor: Tensor, prototypes: Tensor, negatives_lse: Optional[Tensor]) -> None:
    """Validate the tensors of a public HaLP term: shapes, dtypes, devices and values.

    This reads values back from the device (finiteness, zero rows), so [`halp_loss.HaLPInfoNCE`][halp_loss.HaLPInfoNCE],
    whose own checks are free of host reads, calls the unchecked terms instead.
    """
    check_pair(query, "query", anchor, "anchor")
    check_matrix(prototypes, "prototypes", query.shape[1])
    check_device(prototypes, "prototypes", query, "query")
    if negatives_lse is not None:
        check_negatives_lse(negatives_lse, query)
    check_finite(query, "query")
    check_values(anchor, "anchor")
    check_values(prototypes, "prototypes")


def check_negatives_lse(negatives_lse: Tensor, query: Tensor) -> None:
    """``negatives_lse`` is (R,) floating on the query's device, without NaN or +inf (-inf is a row without
    negatives, which the InfoNCE objective handles)."""
    rows = query.shape[0]
    if not isinstance(negatives_lse, Tensor):
        raise ValueError(f"negatives_lse must be a torch.Tensor, got {type(negatives_lse).__name__}")
    if not negatives_lse.is_floating_point():
        raise ValueError(f"negatives_lse must be a floating-point tensor, got dtype {negatives_lse.dtype}")
    if negatives_lse.shape != (rows,):
        shape = tuple(negatives_lse.shape)
        raise ValueError(f"negatives_lse must have shape ({rows},), one value per query row, got {shape}")
    check_device(negatives_lse, "negatives_lse", query, "query")
    if bool((torch.isnan(negatives_lse) | torch.isposinf(negatives_lse)).any()):
        raise ValueError("negatives_lse has NaN or +inf values (-inf, a row without negatives, is allowed)")
