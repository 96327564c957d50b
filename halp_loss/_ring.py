"""Ring-buffer writes shared by the key queue and the prototype bank's window."""

from __future__ import annotations

import torch
from torch import Tensor


def write_ring(buffer: Tensor, rows: Tensor, start: int) -> None:
    """Write ``rows`` (at most ``len(buffer)``) into ``buffer`` from row ``start``, wrapping around its end, in
    place, with zeros in place of NaN (the rows of keys without a direction)."""
    head = min(rows.shape[0], buffer.shape[0] - start)
    parts = ((rows, start),) if head == rows.shape[0] else ((rows[:head], start), (rows[head:], 0))
    for part, at in parts:
        torch.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0, out=buffer[at : at + part.shape[0]])
