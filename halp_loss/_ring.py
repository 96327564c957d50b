"""Ring buffers shared by the key queue and the prototype bank's window: their allocation and their writes."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

DeviceLike = Optional[Union[str, torch.device]]


def write_ring(buffer: Tensor, rows: Tensor, start: int) -> None:
    """Write ``rows`` (at most ``len(buffer)``) into ``buffer`` from row ``start``, wrapping around its end, in
    place, with zeros in place of NaN (the rows of keys without a direction)."""
    head = min(rows.shape[0], buffer.shape[0] - start)
    parts = ((rows, start),) if head == rows.shape[0] else ((rows[:head], start), (rows[head:], 0))
    for part, at in parts:
        torch.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0, out=buffer[at : at + part.shape[0]])


def zero_buffer(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32, device: DeviceLike = None) -> Tensor:
    """A buffer of zeros that is a normal tensor even when made under ``torch.inference_mode()``: a queue or bank
    first used there (an evaluation before training, such as a framework's sanity check) must still be writable in
    place after it, which an inference tensor is not."""
    with torch.inference_mode(False):
        return torch.zeros(shape, dtype=dtype, device=device)
