"""Pieces every training loop here shares: mixed precision, the learning-rate steps, a resumable epoch
sampler, a graceful stop on Ctrl-C or SIGTERM (DataLoader workers left out of it), and the log line of an epoch."""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import FrameType
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and, for float16, gradient scaling.

    Args:
        mode: ``"none"`` (float32), ``"bf16"`` or ``"fp16"``.
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in ("none", *AMP_DTYPES):
            raise ValueError(f"amp must be one of ('none', 'bf16', 'fp16'), got {mode!r}")
        self.mode = mode
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        if self.mode == "none":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.mode])

    def backward_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``optimizer.step()``, through the gradient scaler for float16."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


LR_SCHEDULES = ("step", "cosine")


def lr_at(base_lr: float, milestones: Sequence[int], epoch: int, schedule: str = "step", epochs: int = 1) -> float:
    """The learning rate of an epoch (epochs count from 0).

    ``"step"``: ``base_lr`` times 0.1 for every milestone ``<= epoch``. ``"cosine"``: ``base_lr`` times
    ``(1 + cos(pi * epoch / epochs)) / 2``, from ``base_lr`` at epoch 0 toward 0 at ``epochs``. A pure function of
    the epoch, so resuming, or continuing a run from another's checkpoint with a new schedule, needs no
    scheduler state.

    Raises:
        ValueError: for an unknown schedule.
    """
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule != "step":
        raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    return base_lr * 0.1 ** sum(epoch >= milestone for milestone in milestones)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EpochSampler(Sampler[int]):
    """Shuffled indices for one rank, a fixed permutation per (seed, epoch), whole batches only.

    Global batch ``b`` of an epoch is ``permutation[b * G:(b + 1) * G]`` (G = batch size x world size), and
    each rank takes its contiguous share of it. Because the order is a function of the seed and the epoch,
    a run resumed in the middle of an epoch skips the batches already done and sees the same data as an
    uninterrupted run.

    Args:
        size: dataset length.
        batch_size: per-rank batch size.
        seed: base seed of the permutations.
        rank: this rank.
        world_size: number of ranks.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip_batches = 0
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"a dataset of {size} samples has no full batch of {batch_size} x {world_size} ranks; "
                "lower the batch size"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's permutation and start after ``skip_batches`` batches of it."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        permutation = torch.randperm(self.size, generator=generator)
        global_batch = self.batch_size * self.world_size
        batches = permutation[: self.batches_per_epoch * global_batch].view(self.batches_per_epoch, self.world_size, -1)
        return iter(batches[self.skip_batches :, self.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


class GracefulStop(AbstractContextManager["GracefulStop"]):
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a request to stop after the current step.

    The loop checks ``requested`` between steps, writes a checkpoint and returns, so an interrupted run
    can be resumed. A second Ctrl-C interrupts at once. Outside the main thread (no signal handlers can be
    installed) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint", flush=True)

    def __enter__(self) -> GracefulStop:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader here: workers ignore Ctrl-C and SIGTERM.

    A scheduler's SIGTERM or a Ctrl-C reaches the whole process group. A worker that dies of it makes the main
    process's next batch raise "DataLoader worker is killed by signal" before ``GracefulStop`` can save a
    checkpoint, and a worker that inherited the main process's handler prints its message once more. The main process
    alone decides to stop; it then shuts its workers down.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def format_row(row: dict[str, Any]) -> str:
    """One log line of an epoch's history row: ``key=value`` pairs, floats to 4 significant digits, ``None`` left
    out."""
    shown = {key: (f"{value:.4g}" if isinstance(value, float) else value) for key, value in row.items()}
    return " ".join(f"{key}={value}" for key, value in shown.items() if value is not None)
