"""torch.distributed helpers: every function is the identity when no process group of size > 1 exists."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["world_size", "rank", "row_counts", "gather_rows", "gather_rows_with_grad", "broadcast_"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def row_counts(x: Tensor) -> list[int]:
    """The number of rows of ``x`` on every rank, in rank order (one small all-gather and a host read)."""
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate the rows of ``x`` from all ranks in rank order, without gradient.

    Ranks may hold different numbers of rows (the last batch of an epoch without ``drop_last``).
    """
    if world_size() == 1:
        return x
    x = x.detach().contiguous()
    counts = row_counts(x)
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    chunks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[:count] for chunk, count in zip(chunks, counts)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each rank the summed gradient of its own rows over all ranks' losses."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        chunks = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(chunks, x)
        ctx.rows = x.shape[0]
        return torch.cat(chunks)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_rows_with_grad(x: Tensor) -> Tensor:
    """Concatenate equal-sized ``x`` from all ranks in rank order; gradients flow back to each rank's rows.

    Raises:
        ValueError: on every rank, naming the sizes, if the ranks hold different numbers of rows (checked with one
            small all-gather first, so that no rank is left waiting in the gather of the rows).
    """
    if world_size() == 1:
        return x
    counts = row_counts(x)
    if len(set(counts)) > 1:
        raise ValueError(
            f"gathering with gradient needs the same number of rows on every rank, got {counts} in rank order "
            "(SimCLR mode gathers both views, 2 rows per sample): SimCLR mode with gather_distributed=True needs "
            "equal per-rank batch sizes; drop the last incomplete batch (DataLoader(drop_last=True))"
        )
    return _GatherWithGrad.apply(x.contiguous())


def broadcast_(x: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``x`` in place with rank ``src``'s copy."""
    if world_size() > 1:
        dist.broadcast(x, src)
    return x
