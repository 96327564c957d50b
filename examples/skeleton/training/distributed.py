"""torch.distributed helpers: start from torchrun's environment, rank queries, gathers without gradient."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# The library's helpers serve the example too: rank order and uneven batches are handled the same way.
from halp_loss.distributed import broadcast_, gather_rows, rank, world_size

__all__ = [
    "any_rank",
    "broadcast_",
    "gather_objects",
    "gather_rows",
    "init_from_environment",
    "is_distributed",
    "is_main",
    "mean_over_ranks",
    "rank",
    "shutdown",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0, the one that logs, evaluates and writes checkpoints."""
    return rank() == 0


def init_from_environment(device: str) -> torch.device:
    """Join the process group torchrun describes in the environment, if any, and pick this rank's device.

    Uses NCCL for CUDA devices and gloo otherwise. Without torchrun's ``WORLD_SIZE`` (or with one process)
    nothing is initialized and ``device`` is returned as is.

    Args:
        device: ``"cuda"``, ``"cpu"`` or a specific device; under torchrun ``"cuda"`` becomes ``cuda:LOCAL_RANK``.
    """
    resolved = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return resolved


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank tears it down under another one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop at the same step)."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def mean_over_ranks(values: Tensor) -> Tensor:
    """Average a tensor of statistics over ranks."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values
